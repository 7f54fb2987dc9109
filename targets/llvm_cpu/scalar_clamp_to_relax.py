"""ScalarClampToRelax: ``call_tir`` of an imported scalar max/min kernel -> ``R.maximum``/``R.minimum``."""

from __future__ import annotations

import tvm
from tvm import IRModule, relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from accelc.passes.quantize_common import scalar_clamp_kind

_CALL_TIR = "relax.call_tir"


@tvm.transform.module_pass(opt_level=0, name="ScalarClampToRelax")
class ScalarClampToRelax:  # pylint: disable=too-few-public-methods
    """Rewrite ``call_tir(f, (x, c))`` where ``f`` is an elementwise ``max``/``min`` of ``x``
    with the 0-d constant ``c`` into ``R.maximum(x, c)`` / ``R.minimum(x, c)``.

    Why: the ONNX importer lowers ``Clip(x, min, max)`` (bounds as inputs: ReLU6 in MobileNet)
    to ``call_tir`` of TE kernels, which relax.ConvertLayout cannot see through: every ReLU6
    then cost NCHW{c}c -> NCHW -> NCHW{c}c layout_transforms and two unfused kernels. As Relax
    ops they propagate the packed layout and FuseOps fuses them into the conv epilogue.
    Runs before ConvertConv2dLayout; the result is the same function (max/min are exact).
    ``self.rewrites`` counts the calls rewritten in the last run.
    """

    def __init__(self):
        self.rewrites = 0

    def transform_module(self, mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        rewriter = _Rewriter(mod)
        for g_var, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(g_var, rewriter.visit_expr(func))
        self.rewrites = rewriter.rewrites
        return relax.transform.DeadCodeElimination()(rewriter.builder_.get())


@mutator
class _Rewriter(PyExprMutator):  # pylint: disable=abstract-method
    def __init__(self, mod: IRModule):
        super().__init__(mod)
        self.mod = mod
        self.rewrites = 0

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != _CALL_TIR:
            return call
        g_var, args = call.args[0], call.args[1]
        if not isinstance(args, relax.Tuple) or len(args.fields) != 2 or len(call.args) != 2:
            return call
        x, bound = args.fields
        if isinstance(bound, relax.Var) and self.lookup_binding(bound) is not None:
            bound = self.lookup_binding(bound)  # the importer binds Clip's bounds to vars
        if not isinstance(bound, tvm.ir.expr.Constant) or len(bound.ty.shape) != 0:
            return call
        x_ty = x.ty
        if not isinstance(x_ty, relax.TensorType) or str(x_ty.dtype) != str(bound.ty.dtype):
            return call
        kind = scalar_clamp_kind(self.mod[g_var]) if isinstance(g_var, tvm.ir.GlobalVar) else None
        if kind is None:
            return call
        self.rewrites += 1
        return (relax.op.maximum if kind == "max" else relax.op.minimum)(x, bound)
