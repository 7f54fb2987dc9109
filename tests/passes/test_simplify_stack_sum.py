"""SimplifyStackSum: golden IR, rewrite counts, guards, numerics, and the layout it unblocks."""

import re

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from accelc.frontend import import_onnx
from accelc.passes.simplify_stack_sum import SimplifyStackSum


def run(mod):
    p = SimplifyStackSum()
    out = p(mod)
    relax.analysis.well_formed(out)
    return out, p


def _outputs(mod, *arrays):
    vm = relax.VirtualMachine(tvm.compile(mod, "llvm"), tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in arrays]).numpy()


def test_importer_sum_golden():
    """The importer's form of ONNX Sum(a, b, c) becomes a + b + c (left to right)."""

    @I.ir_module
    class Before:
        @R.function
        def main(a: R.Tensor((1, 4, 3, 3), "float32"), b: R.Tensor((1, 4, 3, 3), "float32"),
                 c: R.Tensor((1, 4, 3, 3), "float32")) -> R.Tensor((1, 4, 3, 3), "float32"):
            with R.dataflow():
                ba = R.broadcast_to(a, R.shape([1, 4, 3, 3]))
                bb = R.broadcast_to(b, R.shape([1, 4, 3, 3]))
                bc = R.broadcast_to(c, R.shape([1, 4, 3, 3]))
                st = R.stack((ba, bb, bc), axis=0)
                out = R.sum(st, axis=[0], keepdims=False)
                R.output(out)
            return out

    @I.ir_module
    class Expected:
        @R.function
        def main(a: R.Tensor((1, 4, 3, 3), "float32"), b: R.Tensor((1, 4, 3, 3), "float32"),
                 c: R.Tensor((1, 4, 3, 3), "float32")) -> R.Tensor((1, 4, 3, 3), "float32"):
            with R.dataflow():
                ab = R.add(a, b)
                out = R.add(ab, c)
                R.output(out)
            return out

    out, p = run(Before)
    assert p.num_rewrites == 1 and p.rewrites["stack_sum"] == 1 and p.rewrites["single_term"] == 0
    tvm.ir.assert_structural_equal(out, Expected)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((1, 4, 3, 3)).astype("float32") for _ in range(3)]
    np.testing.assert_allclose(_outputs(out, *xs), _outputs(Before, *xs), rtol=1e-6, atol=1e-6)


def test_broadcasting_input_keeps_its_broadcast():
    """An input of another shape keeps its broadcast_to (the sum's shape must not change)."""

    @I.ir_module
    class Before:
        @R.function
        def main(a: R.Tensor((2, 3), "float32"), b: R.Tensor((1, 3), "float32")) -> R.Tensor((2, 3), "float32"):
            with R.dataflow():
                ba = R.broadcast_to(a, R.shape([2, 3]))
                bb = R.broadcast_to(b, R.shape([2, 3]))
                st = R.stack((ba, bb), axis=0)
                out = R.sum(st, axis=[0], keepdims=False)
                R.output(out)
            return out

    @I.ir_module
    class Expected:
        @R.function
        def main(a: R.Tensor((2, 3), "float32"), b: R.Tensor((1, 3), "float32")) -> R.Tensor((2, 3), "float32"):
            with R.dataflow():
                bb = R.broadcast_to(b, R.shape([2, 3]))
                out = R.add(a, bb)
                R.output(out)
            return out

    out, p = run(Before)
    assert p.num_rewrites == 1
    tvm.ir.assert_structural_equal(out, Expected)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 3)).astype("float32"), rng.standard_normal((1, 3)).astype("float32")
    np.testing.assert_allclose(_outputs(out, a, b), a + b, rtol=1e-6)


def test_single_input_and_guards():
    @I.ir_module
    class Mod:
        @R.function
        def main(a: R.Tensor((2, 3), "float32"), b: R.Tensor((2, 3), "float32")):
            with R.dataflow():
                one = R.sum(R.stack((a,), axis=0), axis=[0], keepdims=False)  # Sum of one input
                st = R.stack((a, b), axis=1)
                other_axis = R.sum(st, axis=[0], keepdims=False)  # not the stacked axis: kept
                kept = R.sum(st, axis=[1], keepdims=True)  # keepdims: kept
                out = (one, other_axis, kept)
                R.output(out)
            return out

    out, p = run(Mod)
    assert p.num_rewrites == 1 and p.rewrites["single_term"] == 1
    text = out.script()
    assert text.count("R.sum(") == 2 and text.count("R.stack(") == 1


def _residual_model() -> onnx.ModelProto:
    """conv -> BN-free relu -> conv, joined by ONNX Sum (ResNet's residual in the zoo)."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((32, 32, 3, 3)) * 0.1).astype("float32")
    w2 = (rng.standard_normal((32, 32, 3, 3)) * 0.1).astype("float32")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Sum", ["c2", "x"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
        helper.make_node("Conv", ["y", "w2"], ["z"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 8, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 32, 8, 8])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_sum_keeps_the_packed_layout_end_to_end():
    """With the rewrite, the residual join stays in NCHW16c: no activation layout_transform
    between the convolutions (ConvertLayout failed on stack before and every conv was packed
    alone), and the compiled model equals onnxruntime."""
    import onnxruntime as ort

    from accelc.pipeline import PipelineOptions, phases
    from accelc.targets import registry

    model = _residual_model()
    backend = registry.get("llvm")
    target = backend.make({"num-cores": 2})
    mod = import_onnx(model, None).mod
    assert "R.stack(" in mod.script()
    layout = None
    with target, tvm.transform.PassContext(opt_level=3):
        for _, passes in phases(PipelineOptions(opt_level=3), backend, target):
            for p in passes:
                mod = p(mod)
                if p.info.name == "ConvertConv2dLayout":
                    layout = p
    assert layout is not None and layout.fallback is None
    calls = re.findall(r"(te_layout_transform\w*)\(", mod["main"].script())
    assert len(calls) == 2, calls  # the model's input and output only

    import accelc

    compiled = accelc.compile(model, target_options={"num-cores": 2}, tuning_records=None)
    x = np.random.default_rng(2).standard_normal((1, 32, 8, 8)).astype("float32")
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = compiled.run({"x": x})["z"]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", ["int32"])
def test_integer_sum_exact(dtype):
    @I.ir_module
    class Mod:
        @R.function
        def main(a: R.Tensor((4,), "int32"), b: R.Tensor((4,), "int32")) -> R.Tensor((4,), "int32"):
            with R.dataflow():
                out = R.sum(R.stack((a, b), axis=0), axis=[0], keepdims=False)
                R.output(out)
            return out

    out, p = run(Mod)
    assert p.num_rewrites == 1
    a = np.array([1, -2, 2**30, 7], dtype)
    b = np.array([3, 4, 2**30 - 1, -7], dtype)
    np.testing.assert_array_equal(_outputs(out, a, b), a + b)
