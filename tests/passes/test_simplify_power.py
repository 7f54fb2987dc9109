"""SimplifyPower: golden IR, rewrite counts, guards, numerics against numpy and onnxruntime (LRN)."""

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from accelc.passes.simplify_power import SimplifyPower


def run(mod):
    p = SimplifyPower()
    out = p(mod)
    relax.analysis.well_formed(out)
    return out, p


def _power_module(c, dtype="float32", shape=(2, 3, 4)):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(bb.emit(relax.op.power(x, relax.const(c, dtype))))
        bb.emit_func_output(y)
    return bb.get()


def _run(mod, *arrays):
    vm = relax.VirtualMachine(tvm.compile(mod, "llvm"), tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in arrays]).numpy()


def test_lrn_exponent_golden():
    """x ** 0.75 (ONNX LRN's beta) becomes sqrt(x) * sqrt(sqrt(x))."""

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 8, 4, 4), "float32")) -> R.Tensor((1, 8, 4, 4), "float32"):
            with R.dataflow():
                y = R.add(R.multiply(x, R.const(1e-4, "float32")), R.const(1.0, "float32"))
                out = R.power(y, R.const(0.75, "float32"))
                R.output(out)
            return out

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 8, 4, 4), "float32")) -> R.Tensor((1, 8, 4, 4), "float32"):
            with R.dataflow():
                y = R.add(R.multiply(x, R.const(1e-4, "float32")), R.const(1.0, "float32"))
                root = R.sqrt(y)
                fourth = R.sqrt(root)
                out = R.multiply(root, fourth)
                R.output(out)
            return out

    out, p = run(Before)
    assert p.num_rewrites == 1 and p.rewrites["power"] == 1
    tvm.ir.assert_structural_equal(out, Expected)


def test_negative_and_integer_exponents_golden():
    """x ** -1.5 -> 1 / (x * sqrt(x)); x ** -0.5 -> rsqrt(x); x ** 2 -> x * x; one rewrite each."""

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((4,), "float32")):
            with R.dataflow():
                a = R.power(x, R.const(-1.5, "float32"))
                b = R.power(x, R.const(-0.5, "float32"))
                c = R.power(x, R.const(2.0, "float32"))
                out = (a, b, c)
                R.output(out)
            return out

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((4,), "float32")):
            with R.dataflow():
                root = R.sqrt(x)
                prod = R.multiply(x, root)
                a = R.divide(R.const(1.0, "float32"), prod)
                b = R.rsqrt(x)
                c = R.multiply(x, x)
                out = (a, b, c)
                R.output(out)
            return out

    out, p = run(Before)
    assert p.num_rewrites == 3
    tvm.ir.assert_structural_equal(out, Expected)


@pytest.mark.parametrize("c", [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.75, -0.25, -0.5, -0.75, -1.0, -2.5])
def test_numerics_match_numpy_power(c):
    """Within 4 ulp of numpy's pow for positive x (rounded square roots and products);
    a negative x with a fractional exponent is NaN like pow, with an integer one the sign
    comes out as pow's."""
    rng = np.random.default_rng(0)
    x = rng.uniform(1e-3, 50.0, (2, 3, 4)).astype("float32")
    out, p = run(_power_module(c))
    assert p.num_rewrites == 1
    got, ref = _run(out, x), np.power(x, np.float32(c))
    np.testing.assert_allclose(got, ref, rtol=4 * np.finfo(np.float32).eps, atol=0)
    neg = -x
    with np.errstate(invalid="ignore"):
        ref = np.power(neg, np.float32(c))
    got = _run(out, neg)
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got[~np.isnan(got)], ref[~np.isnan(ref)], rtol=4 * np.finfo(np.float32).eps)


@pytest.mark.parametrize("c", [0.3, 0.0, 5.0, float("nan")])
def test_other_exponents_stay_pow(c):
    """Exponents that are no multiple of 1/4, zero (pow(nan, 0) is 1) or above 4 3/4 keep pow."""
    out, p = run(_power_module(c))
    assert p.num_rewrites == 0
    assert "R.power" in out.script()


def test_tensor_exponents():
    """A constant tensor of one repeated exponent is rewritten when it does not broadcast x
    to a bigger shape; one that does keeps pow (the result is bigger than x)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 3), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.power(x, relax.const(np.full((2, 3), 0.75, "float32"))))
            b = bb.emit(relax.op.power(x, relax.const(np.full((4, 2, 3), 0.5, "float32"))))
            out = bb.emit_output(relax.Tuple([a, b]))
        bb.emit_func_output(out)
    out, p = run(bb.get())
    assert p.num_rewrites == 1 and out.script().count("R.power") == 1


def test_non_constant_and_integer_dtypes_stay_pow():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4,), "float32"))
    e = relax.Var("e", relax.TensorType((4,), "float32"))
    i = relax.Var("i", relax.TensorType((4,), "int32"))
    with bb.function("main", [x, e, i]):
        with bb.dataflow():
            a = bb.emit(relax.op.power(x, e))  # exponent not a constant
            b = bb.emit(relax.op.power(i, relax.const(2, "int32")))  # integers: exact already
            out = bb.emit_output(relax.Tuple([a, b]))
        bb.emit_func_output(out)
    _, p = run(bb.get())
    assert p.num_rewrites == 0


def test_lrn_model_matches_onnxruntime():
    """ONNX LRN (the importer's power by beta = 0.75) through accelc -O3 against onnxruntime,
    with the rewrite firing in the compiled model."""
    import onnxruntime as ort

    import accelc

    node = helper.make_node("LRN", ["x"], ["y"], size=5, alpha=1e-4, beta=0.75, bias=1.0)
    graph = helper.make_graph([node], "lrn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 7, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 7, 7])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    x = (np.random.default_rng(1).standard_normal((1, 16, 7, 7)) * 20).astype("float32")
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = next(iter(accelc.compile(model).run({"x": x}).values()))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)

    from accelc.frontend import import_onnx
    from accelc.pipeline import PipelineOptions, phase1_import_cleanup, phase2_graph_passes

    mod = import_onnx(model, None).mod
    assert "R.power" in mod.script()
    opts = PipelineOptions(opt_level=3)
    mod = tvm.transform.Sequential(phase1_import_cleanup(opts) + phase2_graph_passes(opts))(mod)
    assert "R.power" not in mod.script() and "R.sqrt" in mod.script()
