"""FoldBatchNorm: golden IR, rewrite counts, no-op guards, numerics against onnxruntime."""

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from accelc.passes.fold_batch_norm import FoldBatchNorm

RNG = np.random.default_rng(0)
W = RNG.standard_normal((4, 3, 3, 3)).astype("float32")
B = RNG.standard_normal(4).astype("float32")
GAMMA, BETA, MEAN = (RNG.standard_normal(4).astype("float32") for _ in range(3))
VAR = RNG.random(4).astype("float32") + 0.5
EPS = 1e-5


def folded(w, b, axis_shape):
    """The reference fold, written out independently of the pass."""
    s = GAMMA.astype(np.float64) / np.sqrt(VAR.astype(np.float64) + np.float32(EPS).astype(np.float64))
    w2 = (w.astype(np.float64) * s.reshape(axis_shape)).astype("float32")
    b2 = ((b.astype(np.float64) - MEAN) * s + BETA).astype("float32")
    return w2, b2


def run(mod):
    p = FoldBatchNorm()
    out = p(mod)
    relax.analysis.well_formed(out)
    return out, p.num_rewrites


def test_conv_bias_bn_golden():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 3, 8, 8), "float32")) -> R.Tensor((1, 4, 8, 8), "float32"):
            with R.dataflow():
                c = R.nn.conv2d(x, R.const(W), padding=[1, 1, 1, 1])
                b = R.reshape(R.const(B), R.shape([1, 4, 1, 1]))
                y = R.add(c, b)
                bn = R.nn.batch_norm(y, R.const(GAMMA), R.const(BETA), R.const(MEAN), R.const(VAR), axis=1, epsilon=EPS, training=False)
                out = R.nn.relu(bn[0])
                R.output(out)
            return out

    w2, b2 = folded(W, B, (-1, 1, 1, 1))

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 3, 8, 8), "float32")) -> R.Tensor((1, 4, 8, 8), "float32"):
            with R.dataflow():
                c = R.nn.conv2d(x, R.const(w2), padding=[1, 1, 1, 1])
                y = R.add(c, R.const(b2.reshape(1, 4, 1, 1)))
                out = R.nn.relu(y)
                R.output(out)
            return out

    out, count = run(Before)
    assert count == 1
    tvm.ir.assert_structural_equal(out, Expected)


def test_matmul_bn_without_bias_golden():
    wm = RNG.standard_normal((6, 4)).astype("float32")

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 6), "float32")) -> R.Tensor((2, 4), "float32"):
            with R.dataflow():
                y = R.matmul(x, R.const(wm))
                bn = R.nn.batch_norm(y, R.const(GAMMA), R.const(BETA), R.const(MEAN), R.const(VAR), axis=1, epsilon=EPS, training=False)
                out = bn[0]
                R.output(out)
            return out

    w2, b2 = folded(wm, np.zeros(4, "float32"), (1, -1))

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 6), "float32")) -> R.Tensor((2, 4), "float32"):
            with R.dataflow():
                y = R.matmul(x, R.const(w2))
                out = R.add(y, R.const(b2))
                R.output(out)
            return out

    out, count = run(Before)
    assert count == 1
    tvm.ir.assert_structural_equal(out, Expected)


def test_non_constant_weight_is_a_noop():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 3, 8, 8), "float32"), w: R.Tensor((4, 3, 3, 3), "float32")) -> R.Tensor((1, 4, 8, 8), "float32"):
            with R.dataflow():
                c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
                bn = R.nn.batch_norm(c, R.const(GAMMA), R.const(BETA), R.const(MEAN), R.const(VAR), axis=1, epsilon=EPS, training=False)
                out = bn[0]
                R.output(out)
            return out

    out, count = run(Before)
    assert count == 0
    tvm.ir.assert_structural_equal(out, Before)


def test_bn_on_a_non_channel_axis_is_a_noop():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 3, 4, 4), "float32")) -> R.Tensor((1, 4, 4, 4), "float32"):
            with R.dataflow():
                c = R.nn.conv2d(x, R.const(W), padding=[1, 1, 1, 1])
                bn = R.nn.batch_norm(c, R.const(GAMMA), R.const(BETA), R.const(MEAN), R.const(VAR), axis=2, epsilon=EPS, training=False)
                out = bn[0]
                R.output(out)
            return out

    out, count = run(Before)
    assert count == 0
    tvm.ir.assert_structural_equal(out, Before)


def test_digits_model_matches_onnxruntime():
    import onnxruntime as ort

    from accelc.frontend import import_onnx
    from accelc.models import default_model_path
    from accelc.pipeline import PipelineOptions

    imported = import_onnx(str(default_model_path()), {"input": [1, 1, 8, 8]})
    p = FoldBatchNorm()
    mod = p(imported.mod)
    assert p.num_rewrites == 2  # the digits CNN has two conv -> BatchNormalization pairs
    ops = [str(b.value.op.name) for b in mod["main"].body.blocks[0].bindings if isinstance(b.value, relax.Call) and hasattr(b.value.op, "name")]
    assert "relax.nn.batch_norm" not in ops
    x = np.random.default_rng(1).random((1, 1, 8, 8), dtype=np.float32)
    ex = tvm.compile(mod, "llvm")
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    ref = ort.InferenceSession(str(default_model_path()), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
