"""SimplifyStackSum: ``sum(stack([x1, ..., xn], axis=k), axis=[k])`` -> ``x1 + ... + xn``.

TVM's ONNX importer lowers the variadic ``Sum`` (ResNet's and ShuffleNet's residual joins in
the ONNX model zoo) to ``broadcast_to`` every input to the common shape, ``stack`` them on a
new axis and ``sum`` that axis away. The result is the elementwise sum, but the form costs a
copy of every input, and relax's ``ConvertLayout`` cannot carry a packed layout (NCHW16c)
through ``stack`` (it fails on the whole graph: "Invalid SLayout"), which dropped every
convolution of ResNet-50 back to NCHW with layout transforms around it.

Rule (``S`` the shape of the sum, ``k`` the stacked axis, ``n >= 1``):

    sum(stack([b1, ..., bn], axis=k), axis=[k], keepdims=False)  ->  x1 + ... + xn

where ``bi`` is ``broadcast_to(xi, S)`` or a tensor of shape ``S``, and ``xi`` is used without
its ``broadcast_to`` when it already has shape ``S`` (otherwise the ``broadcast_to`` stays).
Guards: static shapes, one dtype for every input and the output, ``sum`` over exactly the
stacked axis without keepdims. Left unchanged otherwise. Exact for integers; for floats the
adds run left to right, the order ``sum`` reduces in.
"""

from __future__ import annotations

import collections

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .quantize_common import rewrite_functions, static_shape as _static_shape

_SUM, _STACK, _BROADCAST = (tvm.ir.Op.get(f"relax.{n}") for n in ("sum", "stack", "broadcast_to"))


@mutator
class _Rewriter(PyExprMutator):  # pylint: disable=abstract-method
    def __init__(self, mod):
        super().__init__(mod)
        self.rewrites: collections.Counter = collections.Counter()

    def _bound(self, expr):
        if isinstance(expr, relax.Var):
            value = self.lookup_binding(expr)
            return value if value is not None else expr
        return expr

    def visit_call_(self, call):  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        if call.op != _SUM or call.attrs.keepdims or call.attrs.axis is None or len(call.attrs.axis) != 1:
            return call
        stack = self._bound(call.args[0])
        if not isinstance(stack, relax.Call) or stack.op != _STACK:
            return call
        items = stack.args[0]
        items = self._bound(items) if isinstance(items, relax.Var) else items
        if not isinstance(items, relax.Tuple) or not items.fields:
            return call
        ndim = len(_static_shape(stack) or ())
        if ndim == 0 or stack.attrs.axis is None:
            return call
        k = int(stack.attrs.axis) % ndim
        if int(call.attrs.axis[0]) % ndim != k:
            return call
        shape, dtype = _static_shape(call), call.ty.dtype
        if shape is None:
            return call
        terms = []
        for item in items.fields:
            if item.ty.dtype != dtype or _static_shape(item) != shape:
                return call
            source = self._bound(item)
            if isinstance(source, relax.Call) and source.op == _BROADCAST and _static_shape(source.args[0]) == shape:
                item = source.args[0]  # broadcast_to(x, S) with x already of shape S
            terms.append(item)
        self.rewrites["stack_sum"] += 1
        if len(terms) == 1:
            self.rewrites["single_term"] += 1
            return terms[0]
        result = terms[0]
        for term in terms[1:-1]:
            result = self.builder_.emit(relax.op.add(result, term))
        return relax.op.add(result, terms[-1])  # bound to the sum's own variable


@tvm.transform.module_pass(opt_level=0, name="SimplifyStackSum")
class SimplifyStackSum:
    """Rewrite the importer's ``sum(stack(...))`` (ONNX ``Sum``) into a chain of adds.

    ``rewrites["stack_sum"]`` counts the rewritten sums (``single_term``: those of one input,
    which become the input itself); ``num_rewrites`` is the total of rewritten sums.
    """

    def __init__(self):
        self.rewrites: collections.Counter = collections.Counter()
        self.num_rewrites = 0

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        rewriter = _Rewriter(mod)
        out = rewrite_functions(mod, rewriter)
        self.rewrites = rewriter.rewrites
        self.num_rewrites = rewriter.rewrites["stack_sum"]
        return out
