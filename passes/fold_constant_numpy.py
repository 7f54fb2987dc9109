"""FoldConstantNumpy: fold cheap data-movement and fp32 elementwise ops on constants with numpy."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import IRModule, relax, tirx
from tvm.relax.expr_functor import PyExprMutator, mutator


class _Unsupported(Exception):
    pass


def _eval_index(expr, env):
    """A layout IndexMap's output coordinate (``o // 16``, ``i % 8``, ``h``...) on numpy grids."""
    if isinstance(expr, tirx.Var):
        return env[expr.name]
    if isinstance(expr, tirx.IntImm):
        return int(expr.value)
    binary = {
        tirx.Add: np.add, tirx.Sub: np.subtract, tirx.Mul: np.multiply,
        tirx.FloorDiv: np.floor_divide, tirx.FloorMod: np.mod,
    }
    for node, fn in binary.items():
        if isinstance(expr, node):
            return fn(_eval_index(expr.a, env), _eval_index(expr.b, env))
    raise _Unsupported(type(expr).__name__)


def layout_transform_numpy(data: np.ndarray, index_map, pad_value=None) -> np.ndarray:
    """``out[f(idx)] = data[idx]`` for an affine floordiv/floormod index map; padding (the
    output points no input maps to) is ``pad_value`` or 0."""
    out_shape = [int(d) for d in index_map.map_shape(list(data.shape))]
    grids = np.ogrid[tuple(slice(0, d) for d in data.shape)]
    env = {v.name: g for v, g in zip(index_map.initial_indices, grids)}
    coords = [_eval_index(e, env) for e in index_map.final_indices]
    coords = [np.broadcast_to(np.asarray(c, dtype=np.int64), data.shape) for c in coords]
    fill = 0.0 if pad_value is None else float(pad_value.value)
    out = np.full(out_shape, fill, dtype=data.dtype)
    out[tuple(coords)] = data
    return out


def _ints(shape) -> list[int]:
    return [int(d) for d in shape]


def _layout_transform(call, x):
    attrs = call.attrs
    return layout_transform_numpy(x, attrs.index_map, attrs.pad_value)


def _float_only(fn):
    def wrapped(call, *xs):
        if any(x.dtype != np.float32 for x in xs):  # integer division etc. differ from numpy
            raise _Unsupported("dtype")
        return fn(call, *xs)
    return wrapped


# op -> numpy evaluation; each one exactly what the relax op computes (fp32 IEEE ops round
# identically in numpy and LLVM).
_RULES = {
    "relax.broadcast_to": lambda c, x: np.broadcast_to(x, _ints(c.args[1].values)),
    "relax.reshape": lambda c, x: x.reshape(_ints(c.args[1].values)),
    "relax.expand_dims": lambda c, x: np.expand_dims(x, tuple(int(a) for a in c.attrs.axis)),
    "relax.permute_dims": lambda c, x: np.transpose(
        x, None if c.attrs.axes is None else [int(a) for a in c.attrs.axes]),
    "relax.layout_transform": _layout_transform,
    "relax.add": _float_only(lambda c, a, b: a + b),
    "relax.subtract": _float_only(lambda c, a, b: a - b),
    "relax.multiply": _float_only(lambda c, a, b: a * b),
    "relax.divide": _float_only(lambda c, a, b: a / b),
    "relax.sqrt": _float_only(lambda c, x: np.sqrt(x)),
    "relax.negative": _float_only(lambda c, x: -x),
}


@mutator
class _Folder(PyExprMutator):  # pylint: disable=abstract-method
    def __init__(self, mod):
        super().__init__(mod)
        self.folded = 0

    def _constant(self, arg):
        if isinstance(arg, relax.Var):
            bound = self.lookup_binding(arg)
            arg = bound if bound is not None else arg
        return arg if isinstance(arg, tvm.ir.expr.Constant) else None

    # var bound to a constant -> the constant (as relax FoldConstant: weight matchers such as
    # FoldBatchNorm expect constant operands inline)
    def visit_var_(self, var):  # pylint: disable=arguments-renamed
        const = self._constant(var)
        return var if const is None else const

    def visit_dataflow_var_(self, var):  # pylint: disable=arguments-renamed
        return self.visit_var_(var)

    def visit_call_(self, call):  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or call.op.name not in _RULES:
            return call
        tensors = [a for a in call.args if not isinstance(a, relax.ShapeExpr)]
        consts = [self._constant(a) for a in tensors]
        if not consts or any(c is None for c in consts):
            return call
        try:
            value = _RULES[call.op.name](call, *[c.value.numpy() for c in consts])
        except _Unsupported:
            return call
        self.folded += 1
        return relax.const(np.ascontiguousarray(value), str(value.dtype))


@tvm.transform.module_pass(opt_level=0, name="FoldConstantNumpy")
class FoldConstantNumpy:  # pylint: disable=too-few-public-methods
    """Fold ``broadcast_to``/``reshape``/``expand_dims``/``permute_dims``/``layout_transform``
    and fp32 ``add``/``subtract``/``multiply``/``divide``/``sqrt``/``negative`` whose tensor
    operands are all constants, evaluating them with numpy.

    Same result as relax ``FoldConstant`` on these ops, without compiling one LLVM kernel per
    distinct shape (~30 ms each: most of the compile time of a CNN whose weights are
    ``ConstantOfShape`` fills, and of pre-packing every conv weight into its own block layout).
    Run it right before ``FoldConstant``, which then only sees what this pass does not know.
    Anywhere in the Relax pipeline; dead bindings are removed. ``self.folded``: calls folded.
    """

    def __init__(self):
        self.folded = 0

    def transform_module(self, mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        folder = _Folder(mod)
        for g_var, func in mod.functions_items():
            if isinstance(func, relax.Function):
                folder.builder_.update_func(g_var, folder.visit_expr(func))
        self.folded = folder.folded
        if not self.folded:
            return mod
        return relax.transform.DeadCodeElimination()(folder.builder_.get())
