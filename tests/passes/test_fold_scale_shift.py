"""FoldScaleShift: golden IR, rewrite counts, guards, numerics."""

import numpy as np
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from accelc.passes.fold_scale_shift import FoldScaleShift

RNG = np.random.default_rng(0)
W = RNG.standard_normal((4, 3, 1, 1)).astype("float32")
B1 = RNG.standard_normal((1, 4, 1, 1)).astype("float32")
B2 = RNG.standard_normal((1, 4, 1, 1)).astype("float32")
S = RNG.standard_normal((1, 4, 1, 1)).astype("float32")


def run(mod):
    p = FoldScaleShift()
    out = p(mod)
    relax.analysis.well_formed(out)
    return out, p.num_rewrites


def _numeric_equal(a, b, shape):
    x = np.random.default_rng(1).standard_normal(shape).astype("float32")
    outs = []
    for mod in (a, b):
        vm = relax.VirtualMachine(tvm.compile(mod, "llvm"), tvm.cpu())
        outs.append(vm["main"](tvm.runtime.tensor(x)).numpy())
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)


def test_bias_scale_shift_chain_golden():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 3, 4, 4), "float32")) -> R.Tensor((1, 4, 4, 4), "float32"):
            with R.dataflow():
                c = R.nn.conv2d(x, R.const(W))
                y = R.add(c, R.const(B1))
                z = R.multiply(y, R.const(S))  # (P + b1) * s
                out = R.add(z, R.const(B2))  # ... + b2
                R.output(out)
            return out

    w2 = (W.astype(np.float64) * S.reshape(-1, 1, 1, 1)).astype("float32")
    # two rule firings, each rounding to float32: b1 * s, then + b2
    b1s = (B1.astype(np.float64) * S).reshape(-1).astype("float32")
    b = (b1s.astype(np.float64) + B2.reshape(-1)).astype("float32")

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 3, 4, 4), "float32")) -> R.Tensor((1, 4, 4, 4), "float32"):
            with R.dataflow():
                c = R.nn.conv2d(x, R.const(w2))
                out = R.add(c, R.const(b.reshape(1, 4, 1, 1)))
                R.output(out)
            return out

    out, count = run(Before)
    assert count == 2  # the scale, then the shift chain
    tvm.ir.assert_structural_equal(out, Expected)
    _numeric_equal(Before, out, (1, 3, 4, 4))


def test_matmul_times_scalar_golden():
    wm = RNG.standard_normal((6, 4)).astype("float32")

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 6), "float32")) -> R.Tensor((2, 4), "float32"):
            with R.dataflow():
                y = R.matmul(x, R.const(wm))
                out = R.multiply(y, R.const(np.float32(0.5)))
                R.output(out)
            return out

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 6), "float32")) -> R.Tensor((2, 4), "float32"):
            with R.dataflow():
                out = R.matmul(x, R.const((wm.astype(np.float64) * 0.5).astype("float32")))
                R.output(out)
            return out

    out, count = run(Before)
    assert count == 1
    tvm.ir.assert_structural_equal(out, Expected)


def test_spatially_varying_scale_is_a_noop():
    s = RNG.standard_normal((1, 4, 4, 4)).astype("float32")

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 3, 4, 4), "float32")) -> R.Tensor((1, 4, 4, 4), "float32"):
            with R.dataflow():
                c = R.nn.conv2d(x, R.const(W))
                out = R.multiply(c, R.const(s))
                R.output(out)
            return out

    out, count = run(Before)
    assert count == 0
    tvm.ir.assert_structural_equal(out, Before)


def test_non_constant_scale_is_a_noop():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 3, 4, 4), "float32"), s: R.Tensor((1, 4, 1, 1), "float32")) -> R.Tensor((1, 4, 4, 4), "float32"):
            with R.dataflow():
                c = R.nn.conv2d(x, R.const(W))
                out = R.multiply(c, s)
                R.output(out)
            return out

    out, count = run(Before)
    assert count == 0
    tvm.ir.assert_structural_equal(out, Before)
