"""SparseRewrite: matmuls with a sparse constant weight become block-sparse (BSR) kernels.

    matmul(x, W)  ->  reshape(call_tir(bsr_matmul, [reshape(x, (M, K)), data, indices, indptr]))

when ``W`` (K x N) is a float constant with sparsity ``1 - nnz / size >= threshold``. The BSR
arrays are constants of the module; the kernel is ``sparse_kernels.bsr_matmul_primfunc``.
The block is the one given, or the largest of 16x1, 4x1, 1x1 (output channels x input
channels) that stores at most 25% explicit zeros.

Position: phase 2 (graph passes), after ``FoldConstant`` and ``FoldScaleShift`` so weights
are final constants. Invariant: outputs equal the dense matmul up to fp32 summation order;
a non-constant weight, a batched (3-D) weight, a non-float dtype or a dense weight is left
unchanged. ``num_rewrites`` counts rewritten matmuls; ``rewritten`` lists (shape, sparsity,
block) of each.
Not covered yet: 1x1 conv2d (the issue asks for it) -- it is left dense.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from accelc.errors import AccelcError

from .sparse_kernels import bsr_matmul_primfunc, choose_block, to_bsr

DEFAULT_THRESHOLD = 0.8


def check_options(threshold: float, block) -> tuple[float, tuple[int, int] | None]:
    """Validate user options; a bad value is an ``AccelcError`` (one line, exit 2 in the CLI)."""
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise AccelcError(f"sparsity threshold must be a number in [0, 1], got {threshold!r}") from None
    if not 0.0 <= threshold <= 1.0 or threshold != threshold:
        raise AccelcError(f"sparsity threshold must be in [0, 1], got {threshold}")
    if block is not None:
        block = parse_block(block)
    return threshold, block


def parse_block(block) -> tuple[int, int]:
    """``"16x1"`` or ``(16, 1)`` -> (16, 1); positive integers only."""
    if isinstance(block, str):
        parts = block.lower().split("x")
        try:
            block = tuple(int(p) for p in parts)
        except ValueError:
            raise AccelcError(f"block shape must look like 16x1, got {block!r}") from None
    block = tuple(block)
    if len(block) != 2 or any(int(b) < 1 for b in block):
        raise AccelcError(f"block shape must be two positive integers (rows x cols), got {block}")
    return int(block[0]), int(block[1])


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod, threshold, block):
        super().__init__(mod)
        self.threshold, self.block = threshold, block
        self.rewritten: list[tuple] = []
        self.matmul = tvm.ir.Op.get("relax.matmul")

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not call.op.same_as(self.matmul) or not isinstance(call.args[1], tvm.ir.expr.Constant):
            return call
        weight = call.args[1].value.numpy()
        x_ty = call.args[0].ty
        if weight.ndim != 2 or weight.dtype.kind != "f" or x_ty.shape is None:
            return call
        if str(x_ty.dtype) != str(weight.dtype) or (call.attrs.out_dtype and str(call.attrs.out_dtype) not in ("", str(weight.dtype))):
            return call
        try:
            x_shape = [int(d) for d in x_ty.shape.values]
        except TypeError:
            return call  # symbolic shape
        if len(x_shape) < 2:
            return call
        sparsity = 1.0 - np.count_nonzero(weight) / weight.size
        if sparsity < self.threshold or sparsity == 0.0:
            return call
        k, n = weight.shape
        m = int(np.prod(x_shape[:-1]))
        weight_t = np.ascontiguousarray(weight.T)
        block = self.block or choose_block(weight_t)
        data, indices, indptr = to_bsr(weight_t, block)
        kernel = bsr_matmul_primfunc(m, k, n, block, data.shape[0], str(weight.dtype))
        gvar = self.builder_.add_func(kernel, "bsr_matmul")
        x = call.args[0]
        if len(x_shape) != 2:
            x = self.builder_.emit(relax.op.reshape(x, (m, k)))
        out = relax.call_tir(
            gvar, [x, relax.const(data), relax.const(indices), relax.const(indptr)],
            relax.TensorType((m, n), str(weight.dtype)),
        )
        if len(x_shape) != 2:
            out = relax.op.reshape(self.builder_.emit(out), (*x_shape[:-1], n))
        self.rewritten.append(((k, n), round(float(sparsity), 4), block))
        return out


@tvm.transform.module_pass(opt_level=0, name="SparseRewrite")
class SparseRewrite:
    """Rewrite sparse constant-weight matmuls to BSR kernels (threshold in [0, 1])."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, block=None):
        self.threshold, self.block = check_options(threshold, block)
        self.num_rewrites = 0
        self.rewritten: list[tuple] = []

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        rewriter = _Rewriter(mod, self.threshold, self.block)
        for gvar, func in list(mod.functions.items()):
            if isinstance(func, relax.Function) and "Codegen" not in (func.attrs or {}):
                new_func = rewriter.visit_expr(func)
                rewriter.builder_.update_func(gvar, new_func)
        self.rewritten = rewriter.rewritten
        self.num_rewrites = len(self.rewritten)
        return rewriter.builder_.get() if self.num_rewrites else mod
