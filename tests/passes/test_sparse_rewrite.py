"""SparseRewrite and the BSR kernel: rewrite counts, numerics vs dense, bad input, properties."""

import numpy as np
import pytest
import tvm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from accelc.errors import AccelcError
from accelc.passes.sparse_kernels import BsrPlan, BsrSpec, bsr_plan, bsr_primfunc, choose_block, to_bsr
from accelc.passes.sparse_rewrite import SparseRewrite
from accelc.targets.llvm_cpu.config import host_target

RNG = np.random.default_rng(0)
W_SPARSE = RNG.standard_normal((24, 40)).astype("float32")
W_SPARSE[RNG.random(W_SPARSE.shape) < 0.9] = 0
W_DENSE = RNG.standard_normal((24, 40)).astype("float32")


def _module(weight):
    @I.ir_module
    class Mod:
        @R.function
        def main(x: R.Tensor((2, 3, 24), "float32")) -> R.Tensor((2, 3, 40), "float32"):
            with R.dataflow():
                y = R.matmul(x, R.const(weight))
                z = R.nn.relu(y)
                R.output(z)
            return z

    return Mod


def _run(mod, x):
    vm = relax.VirtualMachine(tvm.compile(mod, "llvm"), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def test_sparse_matmul_is_rewritten_and_equals_dense():
    mod = _module(W_SPARSE)
    p = SparseRewrite(0.8)
    out = p(mod)
    relax.analysis.well_formed(out)
    assert p.num_rewrites == 1
    calls = [b.value for b in out["main"].body.blocks[0].bindings if isinstance(b.value, relax.Call)]
    assert any(c.op.same_as(tvm.ir.Op.get("relax.call_tir")) for c in calls)
    assert not any(c.op.same_as(tvm.ir.Op.get("relax.matmul")) for c in calls)
    x = RNG.standard_normal((2, 3, 24)).astype("float32")
    np.testing.assert_allclose(_run(out, x), np.maximum(x @ W_SPARSE, 0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("threshold", [0.95, 1.0])
def test_below_threshold_is_a_noop(threshold):
    mod = _module(W_SPARSE)  # ~90% sparse
    p = SparseRewrite(threshold)
    tvm.ir.assert_structural_equal(p(mod), mod)
    assert p.num_rewrites == 0


def test_dense_weight_is_a_noop_even_at_threshold_zero():
    mod = _module(W_DENSE)
    p = SparseRewrite(0.0)
    tvm.ir.assert_structural_equal(p(mod), mod)
    assert p.num_rewrites == 0


def test_non_constant_weight_is_a_noop():
    @I.ir_module
    class Mod:
        @R.function
        def main(x: R.Tensor((2, 24), "float32"), w: R.Tensor((24, 40), "float32")) -> R.Tensor((2, 40), "float32"):
            with R.dataflow():
                y = R.matmul(x, w)
                R.output(y)
            return y

    p = SparseRewrite(0.0)
    tvm.ir.assert_structural_equal(p(Mod), Mod)
    assert p.num_rewrites == 0


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan"), "high"])
def test_bad_threshold_is_a_clear_error(threshold):
    with pytest.raises(AccelcError, match="threshold"):
        SparseRewrite(threshold)


@pytest.mark.parametrize("block", ["16", "0x1", "ax1", (4, -1), "4x1x1"])
def test_bad_block_is_a_clear_error(block):
    with pytest.raises(AccelcError, match="block shape"):
        SparseRewrite(0.8, block)


def test_block_choice_follows_structure():
    w = np.zeros((64, 32), "float32")
    w[16:32, 3] = 1.0  # one 16x1 block
    w[0:4, 7] = 2.0  # one 4x1 block (fills a quarter of a 16x1 block)
    assert choose_block(w) == (4, 1)
    w[0:16, 7] = 2.0
    assert choose_block(w) == (16, 1)
    assert choose_block(np.eye(8, dtype="float32")) == (1, 1)


_KERNELS: dict = {}


def _run_kernel(spec, plan, x, data, indices, indptr):
    key = (spec, plan)
    if key not in _KERNELS:
        func = bsr_primfunc(spec, plan).with_attr("global_symbol", "main")
        _KERNELS[key] = tvm.compile(tvm.IRModule({"main": func}), host_target(1))
    y_shape = (spec.m, spec.n) if spec.layout == "matmul" else (spec.batch, spec.n, spec.m)
    y = tvm.runtime.tensor(np.full(y_shape, np.nan, spec.dtype))  # unwritten output shows as nan
    args = [tvm.runtime.tensor(a) for a in (x, data, indices, indptr)]
    _KERNELS[key]["main"](*args, y)
    return y.numpy()


_KERNEL_CASES = dict(
    layout=st.sampled_from(["matmul", "nchw"]), batch=st.integers(1, 2),
    m=st.integers(1, 40), k=st.integers(1, 20), n=st.integers(1, 36),
    block=st.sampled_from([(1, 1), (4, 1), (16, 1), (2, 3), (8, 2)]),
    density=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
    empty_rows=st.booleans(), seed=st.integers(0, 2**16),
    tile=st.sampled_from(["default", "nvec", "mvec"]), lanes=st.sampled_from([4, 8, 16]),
    rows=st.integers(1, 40),
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**_KERNEL_CASES)
def test_bsr_kernel_equals_dense(layout, batch, m, k, n, block, density, empty_rows, seed, tile, lanes, rows):
    """Any tile, vector width and row count: the kernel equals the dense product, including
    empty row-blocks, all-empty and fully dense blocks, and shapes the block does not divide."""
    _check_kernel(layout, batch, m, k, n, block, density, empty_rows, seed, tile, lanes, rows)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**_KERNEL_CASES)
def test_bsr_kernel_equals_dense_many(layout, batch, m, k, n, block, density, empty_rows, seed, tile, lanes, rows):
    _check_kernel(layout, batch, m, k, n, block, density, empty_rows, seed, tile, lanes, rows)


def _check_kernel(layout, batch, m, k, n, block, density, empty_rows, seed, tile, lanes, rows):
    rng = np.random.default_rng(seed)
    weight_t = rng.standard_normal((n, k)).astype("float32")  # (out, in)
    weight_t[rng.random((n, k)) >= density] = 0
    if empty_rows:
        weight_t[: n // 2] = 0  # whole output row-blocks with no stored block
    data, indices, indptr = to_bsr(weight_t, block)
    batch = batch if layout == "nchw" else 1
    spec = BsrSpec(batch, m, k, n, *block, data.shape[0], "float32", layout)
    if tile == "default" or (tile == "nvec" and layout != "matmul"):
        plan = bsr_plan(spec, lanes, 2 * lanes)
    else:
        plan = BsrPlan(tile, rows, lanes)
    if layout == "matmul":
        x = rng.standard_normal((m, k)).astype("float32")
        want = x @ weight_t.T
    else:
        x = rng.standard_normal((batch, k, m)).astype("float32")
        want = np.einsum("nk,bkm->bnm", weight_t, x)
    got = _run_kernel(spec, plan, x, data, indices, indptr)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_default_tile_follows_vector_width():
    spec = BsrSpec(1, 128, 768, 3072, 16, 1, 100)
    assert bsr_plan(spec, 16, 32).tile == "nvec"  # AVX-512: one zmm per block row
    assert bsr_plan(spec, 8, 16) == BsrPlan("nvec", 6, 8)  # AVX2: 2 ymm x 6 rows = 12 accumulators
    unstructured = BsrSpec(1, 128, 768, 3072, 1, 1, 100)
    assert bsr_plan(unstructured, 16, 32) == BsrPlan("mvec", 128, 16)  # rows in lanes
    conv = BsrSpec(1, 49, 64, 64, 16, 1, 100, layout="nchw")
    assert bsr_plan(conv, 16, 32).tile == "mvec"  # pixels in lanes, output stays NCHW


def test_auto_threshold_is_the_break_even_of_the_chosen_block():
    rng = np.random.default_rng(3)
    structured = np.zeros((32, 64), "float32")  # K x N; 16x1 blocks = 16 output channels of one input
    keep = rng.random((32, 4)) < 0.15  # ~85% of the 16x1 blocks are zero
    structured[:, :] = np.repeat(keep, 16, axis=1) * rng.standard_normal((32, 64)).astype("float32")
    unstructured = rng.standard_normal((32, 64)).astype("float32")
    unstructured[rng.random((32, 64)) < 0.85] = 0  # 85%, scattered: 1x1 blocks, break-even 90%

    def module(weight):
        @I.ir_module
        class Mod:
            @R.function
            def main(x: R.Tensor((4, 32), "float32")):
                with R.dataflow():
                    y = R.matmul(x, R.const(weight))
                    R.output(y)
                return y

        return Mod

    p = SparseRewrite()  # auto
    p(module(structured))
    assert [r.block for r in p.rewritten] == [(16, 1)]
    p = SparseRewrite("auto")
    mod = module(unstructured)
    tvm.ir.assert_structural_equal(p(mod), mod)
    assert p.num_rewrites == 0 and "break-even of 1x1" in p.skipped[0][1]
    p = SparseRewrite(0.8)  # an explicit threshold overrides the break-even
    p(mod)
    assert p.num_rewrites == 1
