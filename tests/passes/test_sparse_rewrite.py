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
from accelc.passes.sparse_kernels import bsr_matmul_primfunc, choose_block, to_bsr
from accelc.passes.sparse_rewrite import SparseRewrite

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


def _bsr_matmul(x, weight, block):
    data, indices, indptr = to_bsr(np.ascontiguousarray(weight.T), block)
    m, k = x.shape
    n = weight.shape[1]
    key = (m, k, n, block, data.shape[0])
    if key not in _KERNELS:
        func = bsr_matmul_primfunc(m, k, n, block, data.shape[0]).with_attr("global_symbol", "main")
        _KERNELS[key] = tvm.compile(tvm.IRModule({"main": func}), "llvm")
    y = tvm.runtime.tensor(np.full((m, n), np.nan, "float32"))
    args = [tvm.runtime.tensor(a) for a in (x, data, indices, indptr)]
    _KERNELS[key]["main"](*args, y)
    return y.numpy()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    m=st.integers(1, 6), k=st.integers(1, 20), n=st.integers(1, 20),
    block=st.sampled_from([(1, 1), (4, 1), (16, 1), (2, 3)]),
    density=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
    empty_rows=st.booleans(), seed=st.integers(0, 2**16),
)
def test_bsr_kernel_equals_dense(m, k, n, block, density, empty_rows, seed):
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((k, n)).astype("float32")
    weight[rng.random((k, n)) >= density] = 0  # density 1.0: fully dense blocks; 0.0: all empty
    if empty_rows:
        weight[:, : n // 2] = 0  # whole output row-blocks with no stored block
    x = rng.standard_normal((m, k)).astype("float32")
    np.testing.assert_allclose(_bsr_matmul(x, weight, block), x @ weight, rtol=1e-5, atol=1e-5)
