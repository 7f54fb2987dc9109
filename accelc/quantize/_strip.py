"""A mutator that replaces each activation QDQ pair by the tensor it quantized."""

from __future__ import annotations

from tvm import relax
from tvm.ir.expr import Constant
from tvm.relax.expr_functor import PyExprMutator, mutator

from accelc.passes.quantize_common import DEQUANTIZE, QUANTIZE, is_op


@mutator
class StripActivationQDQ(PyExprMutator):
    def strip(self, func: relax.Function) -> relax.Function:
        return self.visit_expr(func)

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if is_op(call, DEQUANTIZE) and isinstance(call.args[0], relax.Var):
            q = self.lookup_binding(call.args[0])
            if is_op(q, QUANTIZE) and not isinstance(q.args[0], Constant):
                return q.args[0]
        return call
