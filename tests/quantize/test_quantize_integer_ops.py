"""Integer add and concat in QuantizeAnnotate / QuantizeRealize: golden IR, rewrite counts,
and bit-exactness of a residual + concat network against a numpy integer model."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm.script import ir as I
from tvm.script import relax as R

from accelc.passes.quantize_annotate import QuantizeAnnotate
from accelc.passes.quantize_calibrate import QuantizeCalibrate
from accelc.passes.quantize_common import quantize_weight
from accelc.passes.quantize_realize import ADD_FRACTION_BITS, QuantizeRealize
from accelc.quantize import QuantizeConfig
from accelc.quantize.fixed_point import multiplier_and_shift, requantize_reference, rounding_half

from test_quantize_passes import _bound, _conv_int, _run

S_A, S_B, S_CAT = 0.02, 0.05, 0.04
W1x1 = np.random.default_rng(3).standard_normal((3, 4, 1, 1)).astype(np.float32)


@I.ir_module
class AddConcat:
    @R.function
    def main(a: R.Tensor((1, 2, 4, 4), "float32"), b: R.Tensor((1, 2, 4, 4), "float32"),
             w: R.Tensor((3, 4, 1, 1), "float32")):
        with R.dataflow():
            s = R.add(a, b)
            cat = R.concat((s, a), axis=1)
            y = R.nn.conv2d(cat, w)
            R.output(y)
        return y


@I.ir_module
class AddConcatRealized:
    @R.function
    def main(a: R.Tensor((1, 2, 4, 4), "float32"), b: R.Tensor((1, 2, 4, 4), "float32"),
             m_a: R.Tensor((), "int32"), m_b: R.Tensor((), "int32"), m0: R.Tensor((), "int64"),
             half: R.Tensor((), "int64"), shift: R.Tensor((), "int64"), wq: R.Tensor((3, 4, 1, 1), "int8"),
             s_out: R.Tensor((1, 3, 1, 1), "float32"), s_a: R.Tensor((), "float32"),
             s_b: R.Tensor((), "float32"), s_cat: R.Tensor((), "float32")):
        with R.dataflow():
            a_int8 = R.quantize(a, s_a, R.const(0, "int8"), out_dtype="int8")
            held_a = R.astype(a_int8, "int32")
            term_a = R.multiply(held_a, m_a)
            b_int8 = R.quantize(b, s_b, R.const(0, "int8"), out_dtype="int8")
            held_b = R.astype(b_int8, "int32")
            term_b = R.multiply(held_b, m_b)
            acc = R.add(term_a, term_b)
            acc_i64 = R.astype(acc, "int64")
            sum_int8 = R.astype(R.clip(R.right_shift(R.add(R.multiply(acc_i64, m0), half), shift), -128, 127), "int8")
            a_cat = R.quantize(a, s_cat, R.const(0, "int8"), out_dtype="int8")
            cat = R.concat((sum_int8, a_cat), axis=1)
            acc1 = R.nn.conv2d(cat, wq, out_dtype="int32")
            acc_f32 = R.astype(acc1, "float32")
            y = R.multiply(acc_f32, s_out)
            R.output(y)
        return y


def test_add_concat_golden_ir_and_counts():
    annotate = QuantizeAnnotate(QuantizeConfig())
    annotated = annotate(_bound(AddConcat, w=W1x1))
    assert dict(annotate.rewrites) == {"add": 1, "conv2d": 1}
    realize = QuantizeRealize("fixedpoint")
    mod = realize(QuantizeCalibrate(scales=[S_A, S_B, S_CAT])(annotated))
    s_a, s_b, s_cat = (np.float64(np.float32(s)) for s in (S_A, S_B, S_CAT))
    common = max(s_a, s_b) * 2.0**-ADD_FRACTION_BITS
    m0, shift = multiplier_and_shift(np.array([common / s_cat]), False)
    wq, ws = quantize_weight(W1x1, 0, False)
    expected = _bound(
        AddConcatRealized, m_a=np.array(round(s_a / common), np.int32), m_b=np.array(2**ADD_FRACTION_BITS, np.int32),
        m0=m0.reshape(()), half=rounding_half(shift).reshape(()), shift=shift.reshape(()), wq=wq,
        s_out=(s_cat * ws.astype(np.float64)).astype(np.float32).reshape(1, 3, 1, 1),
        s_a=np.array(S_A, np.float32), s_b=np.array(S_B, np.float32), s_cat=np.array(S_CAT, np.float32),
    )
    tvm.ir.assert_structural_equal(mod, expected)
    assert dict(realize.rewrites) == {"quantize": 3, "add": 1, "requantize": 1, "concat": 1, "conv2d": 1}


def test_keep_float_add_leaves_the_add_float():
    annotate = QuantizeAnnotate(QuantizeConfig(keep_float=("Add",)))
    annotate(_bound(AddConcat, w=W1x1))
    assert dict(annotate.rewrites) == {"conv2d": 1}


@I.ir_module
class Residual:
    @R.function
    def main(x: R.Tensor((1, 4, 6, 6), "float32"), w1: R.Tensor((4, 4, 3, 3), "float32"),
             w2: R.Tensor((4, 4, 3, 3), "float32"), w3: R.Tensor((2, 8, 1, 1), "float32")):
        with R.dataflow():
            c1 = R.nn.conv2d(x, w1, padding=[1, 1, 1, 1])
            r1 = R.nn.relu(c1)
            c2 = R.nn.conv2d(r1, w2, padding=[1, 1, 1, 1])
            s = R.add(c2, r1)
            r2 = R.nn.relu(s)
            cat = R.concat((r2, c1), axis=1)
            y = R.nn.conv2d(cat, w3)
            R.output(y)
        return y


RNG = np.random.default_rng(7)
WEIGHTS = dict(
    w1=(RNG.standard_normal((4, 4, 3, 3)) * 0.3).astype(np.float32),
    w2=(RNG.standard_normal((4, 4, 3, 3)) * 0.3).astype(np.float32),
    w3=RNG.standard_normal((2, 8, 1, 1)).astype(np.float32),
)
# Activation points in binding order: x (conv1), r1 (conv2 and the add), c2 (the add), cat.
SCALES = {"fixedpoint": [0.02, 0.05, 0.04, 0.08], "shift": [2.0**-6, 2.0**-4, 2.0**-5, 2.0**-3]}


def _requant(acc, multiplier, power_of_two):
    m0, shift = multiplier_and_shift(np.asarray(multiplier, np.float64).reshape(1, -1, 1, 1), power_of_two)
    return requantize_reference(acc, m0, shift)


def _residual_reference(x, requantize):
    """The realized network's integer arithmetic, written out in numpy."""
    pow2 = requantize == "shift"
    s0, s1, s2, s3 = (np.float64(np.float32(s)) for s in SCALES[requantize])
    (w1q, ws1), (w2q, ws2), (w3q, ws3) = (quantize_weight(WEIGHTS[k], 0, pow2) for k in ("w1", "w2", "w3"))
    ws1, ws2, ws3 = (w.astype(np.float64) for w in (ws1, ws2, ws3))
    x_q = np.clip(np.round(x / np.float32(s0)), -128, 127).astype(np.int8)  # half to even, as R.quantize
    acc1 = _conv_int(x_q, w1q)
    r1_q = _requant(np.maximum(acc1, 0), s0 * ws1 / s1, pow2)
    c2_q = _requant(_conv_int(r1_q, w2q), s1 * ws2 / s2, pow2)
    common = min(s2, s1) if pow2 else max(s2, s1) * 2.0**-ADD_FRACTION_BITS
    acc_sum = c2_q.astype(np.int64) * round(s2 / common) + r1_q.astype(np.int64) * round(s1 / common)
    assert np.abs(acc_sum).max() < 2**31
    cat = np.concatenate([_requant(np.maximum(acc_sum, 0), np.full(4, common / s3), pow2),
                          _requant(acc1, s0 * ws1 / s3, pow2)], axis=1)
    acc3 = np.einsum("nchw,oc->nohw", cat.astype(np.int64), w3q[:, :, 0, 0].astype(np.int64))
    return acc3.astype(np.int32).astype(np.float32) * (s3 * ws3).astype(np.float32).reshape(1, 2, 1, 1)


@pytest.mark.parametrize("requantize", ["fixedpoint", "shift"])
def test_residual_concat_bit_exact_against_numpy(requantize):
    config = QuantizeConfig(requantize=requantize)
    annotated = QuantizeAnnotate(config)(_bound(Residual, **WEIGHTS))
    realize = QuantizeRealize(requantize)
    mod = realize(QuantizeCalibrate(scales=SCALES[requantize])(annotated))
    assert realize.rewrites["add"] == 1 and realize.rewrites["concat"] == 1
    assert realize.rewrites["requantize"] == 4 and realize.rewrites["quantize"] == 1  # only x from float
    for seed in (1, 2):
        x = np.random.default_rng(seed).uniform(-2.0, 2.0, (1, 4, 6, 6)).astype(np.float32)
        np.testing.assert_array_equal(_run(mod, x), _residual_reference(x, requantize))


@I.ir_module
class ConcatOfQDQ:
    """An imported QDQ concat: int8 inputs with different scales, one output scale."""

    @R.function
    def main(a: R.Tensor((1, 2, 4), "float32"), b: R.Tensor((1, 2, 4), "float32")):
        with R.dataflow():
            qa = R.quantize(a, R.const(0.02, "float32"), R.const(0, "int8"), out_dtype="int8")
            da = R.dequantize(qa, R.const(0.02, "float32"), R.const(0, "int8"))
            qb = R.quantize(b, R.const(0.05, "float32"), R.const(0, "int8"), out_dtype="int8")
            db = R.dequantize(qb, R.const(0.05, "float32"), R.const(0, "int8"))
            cat = R.concat((da, db), axis=2)
            qc = R.quantize(cat, R.const(0.04, "float32"), R.const(0, "int8"), out_dtype="int8")
            dc = R.dequantize(qc, R.const(0.04, "float32"), R.const(0, "int8"))
            w = R.dequantize(R.const(np.eye(8, dtype=np.int8)), R.const(1.0, "float32"), R.const(0, "int8"))
            y = R.matmul(dc, w)
            R.output(y)
        return y


def test_concat_requantizes_each_int8_input_to_the_output_scale():
    realize = QuantizeRealize("fixedpoint")
    mod = realize(ConcatOfQDQ)
    assert realize.rewrites["rescale_int8"] == 2 and realize.rewrites["concat"] == 1
    rng = np.random.default_rng(0)
    a, b = (rng.uniform(-3, 3, (1, 2, 4)).astype(np.float32) for _ in range(2))
    a_q, b_q = (np.clip(np.round(v / np.float32(s)), -128, 127) for v, s in ((a, 0.02), (b, 0.05)))
    s_c = np.float64(np.float32(0.04))
    parts = [requantize_reference(q.astype(np.int32), *multiplier_and_shift(np.float64(np.float32(s)) / s_c, False))
             for q, s in ((a_q, 0.02), (b_q, 0.05))]
    expected = np.concatenate(parts, axis=2).astype(np.float32) * np.float32(s_c)
    from accelc.pipeline import PipelineOptions, run
    from accelc.targets import registry
    from tvm import relax

    backend = registry.get("llvm")
    executable, _ = run(mod, backend, backend.make(None), PipelineOptions(opt_level=2))
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b)).numpy()
    np.testing.assert_array_equal(got, expected)


def _requant_uint8(acc, multiplier, zero):
    """uint8 requantize: clip(((acc * M0 + half) >> n) + zero, 0, 255)."""
    m0, shift = multiplier_and_shift(np.asarray(multiplier, np.float64).reshape(1, -1, 1, 1), False)
    raw = (acc.astype(np.int64) * m0 + rounding_half(shift)) >> shift
    return np.clip(raw + zero, 0, 255)


def test_uint8_activations_bit_exact_against_numpy():
    """uint8 points: zero point 0 after relu (r1), 128 elsewhere (x, c2, cat); the numpy model
    computes in uint8 with explicit zero-point subtraction."""
    annotate = QuantizeAnnotate(QuantizeConfig(activation_dtype="uint8"))
    annotated = annotate(_bound(Residual, **WEIGHTS))
    points = [b.value for b in annotated["main"].body.blocks[0].bindings
              if b.var.name.startswith("x_q")]
    assert [(str(q.attrs.out_dtype), int(q.args[2].value.numpy())) for q in points] == [
        ("uint8", 128), ("uint8", 0), ("uint8", 128), ("uint8", 128)]
    realize = QuantizeRealize("fixedpoint")
    mod = realize(QuantizeCalibrate(scales=SCALES["fixedpoint"])(annotated))
    # Only r1 (zero point 0, i.e. int8 zero point -128) needs compensation: conv2's -z * sum(W).
    assert realize.rewrites["zero_point"] == 1 and realize.rewrites["add"] == 1

    s0, s1, s2, s3 = (np.float64(np.float32(s)) for s in SCALES["fixedpoint"])
    (w1q, ws1), (w2q, ws2), (w3q, ws3) = (quantize_weight(WEIGHTS[k], 0, False) for k in ("w1", "w2", "w3"))
    ws1, ws2, ws3 = (w.astype(np.float64) for w in (ws1, ws2, ws3))
    x = np.random.default_rng(5).uniform(-2.0, 2.0, (1, 4, 6, 6)).astype(np.float32)
    x_u = np.clip(np.round(x / np.float32(s0)) + 128, 0, 255)
    acc1 = _conv_int(x_u - 128, w1q)  # padding is a real 0, i.e. the zero point
    r1_u = _requant_uint8(np.maximum(acc1, 0), s0 * ws1 / s1, 0)
    c2_u = _requant_uint8(_conv_int(r1_u - 0, w2q), s1 * ws2 / s2, 128)
    common = max(s1, s2) * 2.0**-ADD_FRACTION_BITS
    acc_sum = (c2_u - 128) * round(s2 / common) + (r1_u - 0) * round(s1 / common)
    cat_u = np.concatenate([_requant_uint8(np.maximum(acc_sum, 0), np.full(4, common / s3), 128),
                            _requant_uint8(acc1, s0 * ws1 / s3, 128)], axis=1)
    acc3 = np.einsum("nchw,oc->nohw", (cat_u - 128).astype(np.int64), w3q[:, :, 0, 0].astype(np.int64))
    expected = acc3.astype(np.int32).astype(np.float32) * (s3 * ws3).astype(np.float32).reshape(1, 2, 1, 1)
    np.testing.assert_array_equal(_run(mod, x), expected)


def test_activation_dtype_is_checked():
    from accelc.errors import AccelcError

    with pytest.raises(AccelcError, match="--activation-dtype must be one of int8, uint8"):
        QuantizeConfig(activation_dtype="int4")


@I.ir_module
class OnnxSum:
    """A two-input ONNX Sum as TVM's importer writes it (ResNet-50's residual joins)."""

    @R.function
    def main(a: R.Tensor((1, 2, 4, 4), "float32"), b: R.Tensor((1, 2, 4, 4), "float32"),
             w: R.Tensor((3, 2, 1, 1), "float32")):
        with R.dataflow():
            ba = R.broadcast_to(a, R.shape([1, 2, 4, 4]))
            bb = R.broadcast_to(b, R.shape([1, 2, 4, 4]))
            st = R.stack((ba, bb), axis=0)
            s = R.sum(st, axis=[0], keepdims=False)
            y = R.nn.conv2d(s, w)
            R.output(y)
        return y


def test_onnx_sum_of_two_becomes_an_integer_add():
    annotate = QuantizeAnnotate(QuantizeConfig())
    annotated = annotate(_bound(OnnxSum, w=W1x1[:, :2]))
    assert dict(annotate.rewrites) == {"sum_as_add": 1, "add": 1, "conv2d": 1}
    realize = QuantizeRealize("fixedpoint")
    realize(QuantizeCalibrate(scales=[S_A, S_B, S_CAT])(annotated))
    assert realize.rewrites["add"] == 1 and realize.rewrites["requantize"] == 1
    kept = QuantizeAnnotate(QuantizeConfig(keep_float=("add",)))
    kept(_bound(OnnxSum, w=W1x1[:, :2]))
    assert dict(kept.rewrites) == {"conv2d": 1}
