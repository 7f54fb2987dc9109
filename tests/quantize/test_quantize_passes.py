"""Golden IR for QuantizeAnnotate and QuantizeRealize, and bit-exactness of the realized
integer kernels against a numpy model of the same integer arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from accelc.passes.quantize_annotate import QuantizeAnnotate
from accelc.passes.quantize_calibrate import QuantizeCalibrate
from accelc.passes.quantize_realize import QuantizeRealize
from accelc.quantize import QuantizeConfig
from accelc.quantize.fixed_point import fixed_point_multiplier, requantize_reference, rounding_half

RNG = np.random.default_rng(0)
W = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
B = RNG.standard_normal((1, 4, 1, 1)).astype(np.float32)
W2 = (RNG.standard_normal((256, 10)) * 0.1).astype(np.float32)
S_X, S_F = 0.02, 0.05  # activation scales given to QuantizeCalibrate


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"), w: R.Tensor((4, 3, 3, 3), "float32"),
             b: R.Tensor((1, 4, 1, 1), "float32"), w2: R.Tensor((256, 10), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
            a = R.add(c, b)
            r = R.nn.relu(a)
            f = R.reshape(r, R.shape([1, 256]))
            y = R.matmul(f, w2)
            R.output(y)
        return y


@I.ir_module
class ExpectedAnnotated:
    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"), wq: R.Tensor((4, 3, 3, 3), "int8"), ws: R.Tensor((4,), "float32"),
             b: R.Tensor((1, 4, 1, 1), "float32"), w2q: R.Tensor((256, 10), "int8"), w2s: R.Tensor((10,), "float32")):
        with R.dataflow():
            w_dq = R.dequantize(wq, ws, R.const(0, "int8"), axis=0)
            x_q = R.quantize(x, R.const(1.0, "float32"), R.const(0, "int8"), out_dtype="int8")
            x_dq = R.dequantize(x_q, R.const(1.0, "float32"), R.const(0, "int8"))
            c = R.nn.conv2d(x_dq, w_dq, padding=[1, 1, 1, 1])
            a = R.add(c, b)
            r = R.nn.relu(a)
            f = R.reshape(r, R.shape([1, 256]))
            w2_dq = R.dequantize(w2q, w2s, R.const(0, "int8"), axis=1)
            f_q = R.quantize(f, R.const(1.0, "float32"), R.const(0, "int8"), out_dtype="int8")
            f_dq = R.dequantize(f_q, R.const(1.0, "float32"), R.const(0, "int8"))
            y = R.matmul(f_dq, w2_dq)
            R.output(y)
        return y


@I.ir_module
class ExpectedRealized:
    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"), wq: R.Tensor((4, 3, 3, 3), "int8"),
             bq: R.Tensor((1, 4, 1, 1), "int32"), m0: R.Tensor((1, 4, 1, 1), "int64"),
             half: R.Tensor((), "int64"), shift: R.Tensor((), "int64"),
             w2q: R.Tensor((256, 10), "int8"), s_out: R.Tensor((1, 10), "float32"), s_x: R.Tensor((), "float32")):
        with R.dataflow():
            x_int8 = R.quantize(x, s_x, R.const(0, "int8"), out_dtype="int8")
            acc = R.nn.conv2d(x_int8, wq, padding=[1, 1, 1, 1], out_dtype="int32")
            acc1 = R.add(acc, bq)
            acc2 = R.nn.relu(acc1)
            acc_i64 = R.astype(acc2, "int64")
            requant = R.astype(R.clip(R.right_shift(R.add(R.multiply(acc_i64, m0), half), shift), -128, 127), "int8")
            f = R.reshape(requant, R.shape([1, 256]))
            acc3 = R.matmul(f, w2q, out_dtype="int32")
            acc_f32 = R.astype(acc3, "float32")
            y = R.multiply(acc_f32, s_out)
            R.output(y)
        return y


def _channel(v):
    """A per-channel constant as the pass writes it: a scalar when all channels agree."""
    v = np.asarray(v)
    return v.reshape(-1)[0].copy() if np.all(v == v.reshape(-1)[0]) else v.reshape(1, 4, 1, 1)


def _bound(mod, **params):
    return relax.transform.BindParams("main", {k: tvm.runtime.tensor(v) for k, v in params.items()})(mod)


def _weights_int8(w, axis):
    other = tuple(i for i in range(w.ndim) if i != axis)
    scale = (np.abs(w).max(axis=other) / 127.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    return np.clip(np.round(w / scale.astype(np.float64).reshape(shape)), -127, 127).astype(np.int8), scale


def _annotated():
    return QuantizeAnnotate(QuantizeConfig())(_bound(Before, w=W, b=B, w2=W2))


def _realized():
    realize = QuantizeRealize("fixedpoint")
    mod = realize(QuantizeCalibrate(scales=[S_X, S_F])(_annotated()))
    return mod, realize


def _reference_constants():
    """The integer constants of the realized graph, computed from the float weights here."""
    wq, ws = _weights_int8(W, 0)
    w2q, w2s = _weights_int8(W2, 1)
    s_x = np.float64(np.float32(S_X))
    acc_scale = s_x * ws.astype(np.float64)
    bq = np.round(B.reshape(4) / acc_scale).astype(np.int32)
    m0, shift = fixed_point_multiplier(acc_scale / np.float64(np.float32(S_F)))
    s_out = (np.float64(np.float32(S_F)) * w2s.astype(np.float64)).astype(np.float32)
    return dict(wq=wq, ws=ws, w2q=w2q, w2s=w2s, bq=bq, m0=m0, shift=shift, s_out=s_out)


def test_annotate_golden_ir_and_counts():
    annotate = QuantizeAnnotate(QuantizeConfig())
    mod = annotate(_bound(Before, w=W, b=B, w2=W2))
    k = _reference_constants()
    expected = _bound(ExpectedAnnotated, wq=k["wq"], ws=k["ws"], b=B, w2q=k["w2q"], w2s=k["w2s"])
    tvm.ir.assert_structural_equal(mod, expected)
    assert dict(annotate.rewrites) == {"conv2d": 1, "matmul": 1}


@pytest.mark.parametrize(
    "config, counts",
    [
        (QuantizeConfig(skip_first_conv=True), {"matmul": 1}),
        (QuantizeConfig(skip_last_dense=True), {"conv2d": 1}),
        (QuantizeConfig(keep_float=("Conv", "MatMul")), {}),
        (QuantizeConfig(keep_float=("conv2d:0",)), {"matmul": 1}),
    ],
)
def test_annotate_skip_options(config, counts):
    annotate = QuantizeAnnotate(config)
    annotate(_bound(Before, w=W, b=B, w2=W2))
    assert dict(annotate.rewrites) == counts


def test_annotate_per_tensor_weights_have_scalar_scale():
    mod = QuantizeAnnotate(QuantizeConfig(per_tensor=True))(_bound(Before, w=W, b=B, w2=W2))
    scales = [b.value.args[1].value.numpy() for b in mod["main"].body.blocks[0].bindings
              if b.var.name == "w_dq"]
    assert scales and all(s.shape == () for s in scales)


def test_realize_golden_ir_and_counts():
    mod, realize = _realized()
    k = _reference_constants()
    # With these weights every channel's multiplier lands in the same binade: one shift.
    assert _channel(k["shift"]).ndim == 0 and _channel(k["m0"]).ndim == 4
    expected = _bound(
        ExpectedRealized, wq=k["wq"], bq=k["bq"].reshape(1, 4, 1, 1), m0=_channel(k["m0"]),
        half=_channel(rounding_half(k["shift"])), shift=_channel(k["shift"]),
        w2q=k["w2q"], s_out=k["s_out"].reshape(1, 10), s_x=np.array(S_X, np.float32),
    )
    tvm.ir.assert_structural_equal(mod, expected)
    assert dict(realize.rewrites) == {
        "quantize": 1, "conv2d": 1, "bias": 1, "relu": 1, "requantize": 1, "matmul": 1,
    }


def _run(mod, x):
    from accelc.pipeline import PipelineOptions, run
    from accelc.targets import registry

    backend = registry.get("llvm")
    executable, _ = run(mod, backend, backend.make(None), PipelineOptions(opt_level=2))
    return relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


def _conv_int(x, w):
    """NCHW x OIHW, stride 1, pad 1, in int64."""
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    n, c, h, wd = x.shape
    out = np.zeros((n, w.shape[0], h, wd), np.int64)
    for i in range(3):
        for j in range(3):
            out += np.einsum("nchw,oc->nohw", xp[:, :, i:i + h, j:j + wd], w[:, :, i, j].astype(np.int64))
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_realized_kernels_bit_exact_against_numpy(seed):
    mod, _ = _realized()
    x = np.random.default_rng(seed).uniform(-2.0, 2.0, (1, 3, 8, 8)).astype(np.float32)
    k = _reference_constants()
    x_int8 = np.clip(np.round(x / np.float32(S_X)), -128, 127).astype(np.int8)  # R.quantize: half to even
    acc = _conv_int(x_int8, k["wq"]) + k["bq"].reshape(1, 4, 1, 1)
    acc = np.maximum(acc, 0)
    requant = requantize_reference(acc, k["m0"].reshape(1, 4, 1, 1), k["shift"].reshape(1, 4, 1, 1))
    acc3 = requant.reshape(1, 256).astype(np.int64) @ k["w2q"].astype(np.int64)
    assert np.abs(acc3).max() < 2**31
    expected = acc3.astype(np.int32).astype(np.float32) * k["s_out"].reshape(1, 10)
    got = _run(mod, x)
    np.testing.assert_array_equal(got, expected)


def test_shift_mode_uses_power_of_two_scales_and_no_multiplier():
    annotated = QuantizeAnnotate(QuantizeConfig(requantize="shift"))(_bound(Before, w=W, b=B, w2=W2))
    realize = QuantizeRealize("shift")
    mod = realize(QuantizeCalibrate(scales=[2.0**-6, 2.0**-4])(annotated))
    calls = [b.value.op.name for b in mod["main"].body.blocks[0].bindings if isinstance(b.value, relax.Call)]
    assert "relax.right_shift" in calls and "relax.multiply" in calls[-1:]  # only the output dequantize
    assert calls.count("relax.multiply") == 1
    assert realize.rewrites["requantize"] == 1
