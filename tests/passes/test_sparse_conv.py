"""SparseRewrite on 1x1 conv2d: golden IR, rewrite counts, what stays dense, numerics, and the
CPU schedule rule that re-tiles the BSR kernels."""

import numpy as np
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from accelc.passes.sparse_kernels import PATTERN_ATTR, BsrSpec, bsr_workload, pattern_key, to_bsr
from accelc.passes.sparse_rewrite import OPAQUE_PATTERN, SparseRewrite
from accelc.targets.llvm_cpu import ApplyCpuSchedules, schedule_rules
from accelc.targets.llvm_cpu.config import host_target

RNG = np.random.default_rng(0)
W_CONV = RNG.standard_normal((32, 16, 1, 1)).astype("float32")  # O x I x 1 x 1
W_CONV[RNG.random(W_CONV.shape) < 0.9] = 0


def _conv_module(weight, strides=(1, 1), padding=(0, 0, 0, 0), groups=1):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 16, 5, 7), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(weight), strides=strides, padding=padding, groups=groups))
            z = bb.emit_output(relax.op.nn.relu(y))
        bb.emit_func_output(z)
    return bb.get()


def _expected(weight, block):
    """The rewrite written out: reshape -> BSR kernel -> reshape, then the untouched relu."""
    weight_t = weight[:, :, 0, 0]
    data, indices, indptr = to_bsr(weight_t, block)
    spec = BsrSpec(2, 35, 16, 32, *block, data.shape[0], "float32", "nchw")
    kernel = bsr_workload(spec, int(np.diff(indptr).max())).with_attrs({
        "accelc.bsr": spec.to_attr(), PATTERN_ATTR: pattern_key(indices, indptr), "op_pattern": OPAQUE_PATTERN})
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 16, 5, 7), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            gvar = bb.add_func(kernel, "bsr_conv1x1")
            flat = bb.emit(relax.op.reshape(x, (2, 16, 35)))
            out = bb.emit(relax.call_tir(
                gvar, [flat, relax.const(data), relax.const(indices), relax.const(indptr)],
                relax.TensorType((2, 32, 35), "float32")))
            y = bb.emit(relax.op.reshape(out, (2, 32, 5, 7)))
            z = bb.emit_output(relax.op.nn.relu(y))
        bb.emit_func_output(z)
    return bb.get()


def test_conv1x1_golden_ir_and_count():
    p = SparseRewrite(0.8, "4x1")
    out = p(_conv_module(W_CONV))
    assert p.num_rewrites == 1
    assert [(r.kind, r.weight_shape, r.block) for r in p.rewritten] == [("conv2d_1x1", (32, 16, 1, 1), (4, 1))]
    tvm.ir.assert_structural_equal(out, _expected(W_CONV, (4, 1)), map_free_vars=True)


def test_conv1x1_equals_dense_conv_through_cpu_schedules():
    mod = _conv_module(W_CONV)
    rewrite = SparseRewrite(0.8)
    sparse_mod = rewrite(mod)
    assert rewrite.num_rewrites == 1
    target = host_target(2)
    with target:
        lowered = relax.transform.LegalizeOps()(sparse_mod)
        apply = ApplyCpuSchedules(schedule_rules(target), target=target)
        scheduled = apply(lowered)
    assert apply.fired.get("BsrKernel") == 1
    kernel = scheduled["bsr_conv1x1"]
    assert kernel.attrs["accelc.schedule_rule"] == "BsrKernel" and "accelc.bsr_tile" in kernel.attrs
    x = RNG.standard_normal((2, 16, 5, 7)).astype("float32")
    vm = relax.VirtualMachine(tvm.compile(scheduled, target), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    want = np.maximum(np.einsum("oi,bihw->bohw", W_CONV[:, :, 0, 0], x), 0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_convs_not_covered_stay_dense():
    for mod in (
        _conv_module(W_CONV, strides=(2, 2)),  # strided
        _conv_module(W_CONV, padding=(1, 1, 1, 1)),  # padded
        _conv_module(W_CONV[:, :8], groups=2),  # grouped
    ):
        p = SparseRewrite(0.0)
        tvm.ir.assert_structural_equal(p(mod), mod)
        assert p.num_rewrites == 0
    w3 = RNG.standard_normal((32, 16, 3, 3)).astype("float32")
    w3[RNG.random(w3.shape) < 0.95] = 0

    @I.ir_module
    class Conv3x3:
        @R.function
        def main(x: R.Tensor((1, 16, 8, 8), "float32")):
            with R.dataflow():
                y = R.nn.conv2d(x, R.const(w3))
                R.output(y)
            return y

    p = SparseRewrite(0.0)
    tvm.ir.assert_structural_equal(p(Conv3x3), Conv3x3)
    assert p.num_rewrites == 0


def test_given_block_that_does_not_divide_leaves_the_weight_dense():
    p = SparseRewrite(0.8, "16x3")  # 32 x 16: 16 does not divide by 3
    mod = _conv_module(W_CONV)
    tvm.ir.assert_structural_equal(p(mod), mod)
    assert p.num_rewrites == 0
    assert p.skipped and "does not divide" in p.skipped[0][1]


def test_non_cpu_target_is_a_clean_noop():
    mod = _conv_module(W_CONV)
    p = SparseRewrite(0.0)
    with tvm.target.Target({"kind": "cuda", "arch": "sm_90"}):
        out = p(mod)
    tvm.ir.assert_structural_equal(out, mod)
    assert p.num_rewrites == 0 and "cuda" in p.skipped[0][1]
