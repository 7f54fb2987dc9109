"""ReLU6 / Clip in QuantizeRealize: q(clip(x, a, b)) == clip(q(x), q(a), q(b)) (quantize is
monotone), so a clamp by constants becomes the requantize's saturation bounds. Golden IR,
rewrite counts, bit-exactness against numpy, and the importer's call_tir clamp kernels."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import te
from tvm.script import ir as I
from tvm.script import relax as R

from accelc.passes.quantize_annotate import QuantizeAnnotate
from accelc.passes.quantize_calibrate import QuantizeCalibrate
from accelc.passes.quantize_common import scalar_clamp_kind
from accelc.passes.quantize_realize import QuantizeRealize
from accelc.quantize import QuantizeConfig
from accelc.quantize.fixed_point import requantize_reference, rounding_half

from test_quantize_passes import B, S_X, W, W2, _bound, _channel, _conv_int, _reference_constants, _run

S_F = 0.1  # 6 / S_F = 60: the ReLU6 bound is inside the int8 range, so it shows in the IR
Q6 = 60


@I.ir_module
class ClipBefore:
    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"), w: R.Tensor((4, 3, 3, 3), "float32"),
             b: R.Tensor((1, 4, 1, 1), "float32"), w2: R.Tensor((256, 10), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
            a = R.add(c, b)
            r = R.clip(a, 0, 6)
            f = R.reshape(r, R.shape([1, 256]))
            y = R.matmul(f, w2)
            R.output(y)
        return y


@I.ir_module
class MaxMinBefore:
    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"), w: R.Tensor((4, 3, 3, 3), "float32"),
             b: R.Tensor((1, 4, 1, 1), "float32"), w2: R.Tensor((256, 10), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
            a = R.add(c, b)
            r = R.minimum(R.maximum(a, R.const(0.0, "float32")), R.const(6.0, "float32"))
            f = R.reshape(r, R.shape([1, 256]))
            y = R.matmul(f, w2)
            R.output(y)
        return y


@I.ir_module
class ClipRealized:
    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"), wq: R.Tensor((4, 3, 3, 3), "int8"),
             bq: R.Tensor((1, 4, 1, 1), "int32"), m0: R.Tensor((1, 4, 1, 1), "int64"),
             half: R.Tensor((), "int64"), shift: R.Tensor((), "int64"),
             w2q: R.Tensor((256, 10), "int8"), s_out: R.Tensor((1, 10), "float32"), s_x: R.Tensor((), "float32")):
        with R.dataflow():
            x_int8 = R.quantize(x, s_x, R.const(0, "int8"), out_dtype="int8")
            acc = R.nn.conv2d(x_int8, wq, padding=[1, 1, 1, 1], out_dtype="int32")
            acc1 = R.add(acc, bq)
            acc_i64 = R.astype(acc1, "int64")
            requant = R.astype(R.clip(R.right_shift(R.add(R.multiply(acc_i64, m0), half), shift), 0, 60), "int8")
            f = R.reshape(requant, R.shape([1, 256]))
            acc3 = R.matmul(f, w2q, out_dtype="int32")
            acc_f32 = R.astype(acc3, "float32")
            y = R.multiply(acc_f32, s_out)
            R.output(y)
        return y


def _realized(before):
    annotated = QuantizeAnnotate(QuantizeConfig())(_bound(before, w=W, b=B, w2=W2))
    realize = QuantizeRealize("fixedpoint")
    return realize(QuantizeCalibrate(scales=[S_X, S_F])(annotated)), realize


def _constants():
    from accelc.quantize.fixed_point import fixed_point_multiplier

    k = _reference_constants()  # scales for S_F of test_quantize_passes; redo the requantize for ours
    s_x = np.float64(np.float32(S_X))
    acc_scale = s_x * k["ws"].astype(np.float64)
    k["m0"], k["shift"] = fixed_point_multiplier(acc_scale / np.float64(np.float32(S_F)))
    k["s_out"] = (np.float64(np.float32(S_F)) * k["w2s"].astype(np.float64)).astype(np.float32)
    return k


@pytest.mark.parametrize("before, clamps", [(ClipBefore, 1), (MaxMinBefore, 2)], ids=["clip", "max_min"])
def test_clip_golden_ir_and_counts(before, clamps):
    mod, realize = _realized(before)
    k = _constants()
    expected = _bound(
        ClipRealized, wq=k["wq"], bq=k["bq"].reshape(1, 4, 1, 1), m0=_channel(k["m0"]),
        half=_channel(rounding_half(k["shift"])), shift=_channel(k["shift"]),
        w2q=k["w2q"], s_out=k["s_out"].reshape(1, 10), s_x=np.array(S_X, np.float32),
    )
    tvm.ir.assert_structural_equal(mod, expected)
    # no float clamp, no float quantize left: ReLU6 is the requantize's [0, 60] saturation
    assert dict(realize.rewrites) == {
        "quantize": 1, "conv2d": 1, "bias": 1, "clamp": clamps, "requantize": 1, "matmul": 1,
    }


@pytest.mark.parametrize("seed", [1, 2])
def test_clip_bit_exact_against_numpy(seed):
    mod, _ = _realized(ClipBefore)
    k = _constants()
    x = np.random.default_rng(seed).uniform(-2.0, 2.0, (1, 3, 8, 8)).astype(np.float32)
    x_int8 = np.clip(np.round(x / np.float32(S_X)), -128, 127).astype(np.int8)
    acc = _conv_int(x_int8, k["wq"]) + k["bq"].reshape(1, 4, 1, 1)
    requant = requantize_reference(acc, k["m0"].reshape(1, 4, 1, 1), k["shift"].reshape(1, 4, 1, 1))
    requant = np.clip(requant, 0, Q6)
    assert requant.max() == Q6 and requant.min() == 0  # both bounds are exercised
    acc3 = requant.reshape(1, 256).astype(np.int64) @ k["w2q"].astype(np.int64)
    expected = acc3.astype(np.int32).astype(np.float32) * k["s_out"].reshape(1, 10)
    np.testing.assert_array_equal(_run(mod, x), expected)


def test_scalar_clamp_kind_matches_the_importer_kernels():
    a = te.placeholder((1, 4, 2, 2), "float32", name="a")
    c = te.placeholder((), "float32", name="c")
    for kind, fn in (("max", te.max), ("min", te.min)):
        out = te.compute(a.shape, lambda *i: fn(a(*i), c()), name="out")
        assert scalar_clamp_kind(te.create_prim_func([a, c, out])) == kind
    add = te.compute(a.shape, lambda *i: a(*i) + c(), name="out")
    assert scalar_clamp_kind(te.create_prim_func([a, c, add])) is None
