"""SparseRewrite: matmuls and 1x1 conv2ds with a sparse constant weight become BSR kernels.

    matmul(x, W)        ->  reshape(call_tir(bsr_matmul, [reshape(x, (M, K)), data, indices, indptr]))
    conv2d(x, W[O,I,1,1]) ->  reshape(call_tir(bsr_conv1x1, [reshape(x, (B, I, H*W)), data, indices, indptr]))

when ``W`` is a float constant with sparsity ``1 - nnz / size >= threshold`` (default
``"auto"``: the measured break-even sparsity of the block the weight gets; the conv must
be NCHW/OIHW, stride 1, no padding, dilation 1, one group). The BSR arrays are constants of
the module (the kernel always runs on the real sparsity pattern); the kernels are
``sparse_kernels.bsr_workload`` (static loops, one block tagged for the tuner) and carry
``accelc.bsr`` (their ``BsrSpec``) and ``accelc.bsr_pattern`` (a hash of the sparsity
structure, so tuning records are per pattern) so a target's schedule rule can re-tile them (``targets/llvm_cpu/sparse.py``). The block is the one given,
or the largest of 16x1, 4x1, 1x1 (output channels x input channels) that stores at most 25%
explicit zeros.

Position: phase 2 (graph passes), after ``FoldConstant`` and ``FoldScaleShift`` so weights
are final constants. Invariant: outputs equal the dense computation up to fp32 summation
order; a non-constant weight, a batched (3-D) matmul weight, a non-float dtype, a conv this
pass does not cover or a weight below the threshold is left unchanged. ``num_rewrites``
counts rewritten ops; ``rewritten`` lists a ``Rewrite`` for each.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from accelc.errors import AccelcError

from .sparse_kernels import PATTERN_ATTR, BsrSpec, bsr_workload, choose_block, pattern_key, to_bsr

AUTO = "auto"
DEFAULT_THRESHOLD = AUTO
# Break-even sparsity by block size (elements per block), measured with
# benchmarks/sparse_bert.py (128x768 @ 768x3072 and a BERT-base layer, 2 threads): below
# these the BSR kernel is slower than accelc's dense matmul. See /work/notes/sparse.md.
BREAK_EVEN = ((16, 0.8), (4, 0.85), (1, 0.9))


def auto_threshold(block: tuple[int, int]) -> float:
    """The least sparsity at which ``block`` pays (``BREAK_EVEN``)."""
    size = block[0] * block[1]
    return next(t for min_size, t in BREAK_EVEN if size >= min_size)


def check_options(threshold, block) -> tuple[float | str, tuple[int, int] | None]:
    """Validate user options; a bad value is an ``AccelcError`` (one line, exit 2 in the CLI).
    ``threshold`` is a number in [0, 1] or ``"auto"`` (the break-even of the chosen block)."""
    if isinstance(threshold, str) and threshold.strip().lower() == AUTO:
        threshold = AUTO
    else:
        try:
            threshold = float(threshold)
        except (TypeError, ValueError):
            raise AccelcError(f"sparsity threshold must be a number in [0, 1] or auto, got {threshold!r}") from None
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


@dataclasses.dataclass(frozen=True)
class Rewrite:
    """One rewritten op: ``kind`` (matmul / conv2d_1x1), the weight's shape, its sparsity,
    the BSR block and the kernel's name in the module."""

    kind: str
    weight_shape: tuple
    sparsity: float
    block: tuple[int, int]
    kernel: str


def _static_shape(expr) -> list[int] | None:
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        return [int(d) for d in ty.shape.values]
    except TypeError:
        return None  # symbolic dimension


def _sparsity(weight: np.ndarray) -> float:
    return 1.0 - np.count_nonzero(weight) / weight.size


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod, threshold, block):
        super().__init__(mod)
        self.threshold, self.block = threshold, block
        self.rewritten: list[Rewrite] = []
        self.skipped: list[tuple[tuple, str]] = []  # (weight shape, why) of sparse weights left dense
        self.matmul = tvm.ir.Op.get("relax.matmul")
        self.conv2d = tvm.ir.Op.get("relax.nn.conv2d")

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if call.op.same_as(self.matmul):
            return self._matmul(call)
        if call.op.same_as(self.conv2d):
            return self._conv1x1(call)
        return call

    def _weight(self, call, out_dtype):
        """The constant float weight of ``call`` if it is sparse enough, else None."""
        if not isinstance(call.args[1], tvm.ir.expr.Constant):
            return None
        weight = call.args[1].value.numpy()
        x_ty = call.args[0].ty
        if weight.dtype.kind != "f" or not isinstance(x_ty, relax.TensorType) or str(x_ty.dtype) != str(weight.dtype):
            return None
        if out_dtype and str(out_dtype) not in ("", "void", str(weight.dtype)):
            return None
        sparsity = _sparsity(weight)
        least = min(t for _, t in BREAK_EVEN) if self.threshold == AUTO else self.threshold
        if sparsity < least or sparsity == 0.0:
            return None
        return weight

    def _block(self, weight_t):
        """The BSR block for ``weight_t`` (N x K), or None when a given block does not divide
        it or (threshold auto) the weight is below the block's break-even sparsity."""
        n, k = weight_t.shape
        if self.block is None:
            block = choose_block(weight_t)
        elif n % self.block[0] or k % self.block[1]:
            self.skipped.append((weight_t.shape, f"block {self.block[0]}x{self.block[1]} does not divide {n}x{k}"))
            return None
        else:
            block = self.block
        if self.threshold == AUTO:
            sparsity, least = _sparsity(weight_t), auto_threshold(block)
            if sparsity < least:
                self.skipped.append((weight_t.shape, f"{sparsity:.1%} sparse: below the {least:.0%} break-even of "
                                                     f"{block[0]}x{block[1]} blocks"))
                return None
        return block

    def _emit_kernel(self, spec, name, indices, indptr):
        # The pattern hash makes the structure part of the kernel's workload (tuning records
        # are keyed by it); the static-loop workload is what MetaSchedule can search.
        func = bsr_workload(spec, int(np.diff(indptr).max())).with_attrs({
            "accelc.bsr": spec.to_attr(), PATTERN_ATTR: pattern_key(indices, indptr), "op_pattern": OPAQUE_PATTERN})
        return self.builder_.add_func(func, name)

    def _matmul(self, call):
        weight = self._weight(call, call.attrs.out_dtype)
        x_shape = _static_shape(call.args[0])
        if weight is None or weight.ndim != 2 or x_shape is None or len(x_shape) < 2:
            return call
        k, n = weight.shape
        m = int(np.prod(x_shape[:-1]))
        weight_t = np.ascontiguousarray(weight.T)
        block = self._block(weight_t)
        if block is None:
            return call
        data, indices, indptr = to_bsr(weight_t, block)
        dtype = str(weight.dtype)
        spec = BsrSpec(1, m, k, n, *block, data.shape[0], dtype, "matmul")
        gvar = self._emit_kernel(spec, "bsr_matmul", indices, indptr)
        x = call.args[0]
        if len(x_shape) != 2:
            x = self.builder_.emit(relax.op.reshape(x, (m, k)))
        out = relax.call_tir(
            gvar, [x, relax.const(data), relax.const(indices), relax.const(indptr)],
            relax.TensorType((m, n), dtype),
        )
        if len(x_shape) != 2:
            out = relax.op.reshape(self.builder_.emit(out), (*x_shape[:-1], n))
        self.rewritten.append(Rewrite("matmul", (k, n), round(_sparsity(weight), 4), block, gvar.name_hint))
        return out

    def _conv1x1(self, call):
        attrs = call.attrs
        plain = (
            [int(s) for s in attrs.strides] == [1, 1] and [int(p) for p in attrs.padding] == [0, 0, 0, 0]
            and [int(d) for d in attrs.dilation] == [1, 1] and int(attrs.groups) == 1
            and attrs.data_layout == "NCHW" and attrs.kernel_layout == "OIHW"
            and attrs.out_layout in ("NCHW", "")
        )
        if not plain:
            return call
        weight = self._weight(call, attrs.out_dtype)
        x_shape = _static_shape(call.args[0])
        if weight is None or weight.shape[2:] != (1, 1) or x_shape is None or len(x_shape) != 4:
            return call
        batch, k, h, w = x_shape
        n = weight.shape[0]
        weight_t = np.ascontiguousarray(weight[:, :, 0, 0])  # (O, I): already W^T of the product
        block = self._block(weight_t)
        if block is None:
            return call
        data, indices, indptr = to_bsr(weight_t, block)
        dtype = str(weight.dtype)
        spec = BsrSpec(batch, h * w, k, n, *block, data.shape[0], dtype, "nchw")
        gvar = self._emit_kernel(spec, "bsr_conv1x1", indices, indptr)
        x = self.builder_.emit(relax.op.reshape(call.args[0], (batch, k, h * w)))
        out = self.builder_.emit(relax.call_tir(
            gvar, [x, relax.const(data), relax.const(indices), relax.const(indptr)],
            relax.TensorType((batch, n, h * w), dtype),
        ))
        self.rewritten.append(Rewrite("conv2d_1x1", tuple(weight.shape), round(_sparsity(weight), 4), block, gvar.name_hint))
        return relax.op.reshape(out, (batch, n, h, w))


OPAQUE_PATTERN = 8  # relax OpPatternKind.kOpaque: FuseOps never fuses the data-dependent kernel


@tvm.transform.module_pass(opt_level=0, name="SparseRewrite")
class SparseRewrite:
    """Rewrite sparse constant-weight matmuls and 1x1 conv2ds to BSR kernels.

    ``threshold``: least sparsity in [0, 1], or ``"auto"`` (default): the break-even sparsity
    of the block chosen for the weight (``BREAK_EVEN``). ``block``: e.g. ``"16x1"`` (output
    channels x input channels); default: chosen per weight from its structure."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, block=None):
        self.threshold, self.block = check_options(threshold, block)
        self.num_rewrites = 0
        self.rewritten: list[Rewrite] = []
        self.skipped: list[tuple[tuple, str]] = []

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        target = tvm.target.Target.current(allow_none=True)
        if target is not None and target.kind.name != "llvm":
            # The kernels are CPU loop nests (parallel, vector lanes): other targets stay dense.
            self.num_rewrites, self.rewritten = 0, []
            self.skipped = [((), f"no BSR kernels for target {target.kind.name}")]
            return mod
        rewriter = _Rewriter(mod, self.threshold, self.block)
        for gvar, func in list(mod.functions.items()):
            if isinstance(func, relax.Function) and "Codegen" not in (func.attrs or {}):
                new_func = rewriter.visit_expr(func)
                rewriter.builder_.update_func(gvar, new_func)
        self.rewritten, self.skipped = rewriter.rewritten, rewriter.skipped
        self.num_rewrites = len(self.rewritten)
        return rewriter.builder_.get() if self.num_rewrites else mod
