"""The passes inside the real pipeline: numerics against onnxruntime, CLI and API options."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import accelc
from accelc.errors import AccelcError


def _ort(model, feeds):
    import onnxruntime as ort

    source = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_digits_o3_matches_onnxruntime():
    from accelc.models import default_model_path

    x = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)
    compiled = accelc.compile(str(default_model_path()), input_shapes={"input": [1, 1, 8, 8]})
    got = compiled.run({"input": x})
    np.testing.assert_allclose(next(iter(got.values())), _ort(default_model_path(), {"input": x}), rtol=1e-4, atol=1e-4)


def _sparse_mlp(sparsity=0.9):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 48)).astype("float32")
    w[rng.random(w.shape) < sparsity] = 0
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [4, 48])], [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_compile_sparse_matches_onnxruntime():
    model = _sparse_mlp()
    x = np.random.default_rng(1).standard_normal((4, 64)).astype("float32")
    compiled = accelc.compile(model, sparse=0.8)
    np.testing.assert_allclose(compiled.run({"x": x})["z"], _ort(model, {"x": x}), rtol=1e-5, atol=1e-5)


def test_compile_sparse_bad_threshold_is_a_user_error():
    with pytest.raises(AccelcError, match="threshold"):
        accelc.compile(_sparse_mlp(), sparse=2.0)


def test_cli_sparse_bad_threshold_exits_2(capsys, tmp_path):
    from accelc.cli import main

    path = tmp_path / "m.onnx"
    onnx.save(_sparse_mlp(), str(path))
    assert main(["compile", str(path), "--sparse", "1.5", "-o", str(tmp_path / "m.so")]) == 2
    assert "threshold" in capsys.readouterr().err


def _conv_bn_relu():
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype("float32"), "w"),
        numpy_helper.from_array(rng.random(8).astype("float32") + 0.5, "gamma"),
        numpy_helper.from_array(rng.standard_normal(8).astype("float32"), "beta"),
        numpy_helper.from_array(rng.standard_normal(8).astype("float32"), "mean"),
        numpy_helper.from_array(rng.random(8).astype("float32") + 0.5, "var"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["b"]),
        helper.make_node("Relu", ["b"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "cbr", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_disabled_passes_change_kernels_not_results():
    """--disabled-pass switches passes off by name (TVMC's flag); the kernel count tells what
    fusion bought: without FuseOps/FuseTIR every op is its own kernel."""
    model = _conv_bn_relu()
    x = np.random.default_rng(2).standard_normal((1, 3, 16, 16)).astype("float32")
    ref = _ort(model, {"x": x})
    full = accelc.compile(model)
    unfused = accelc.compile(model, disabled_passes=("FuseOps", "FuseTIR"))
    no_bn_fold = accelc.compile(model, disabled_passes=("FoldBatchNorm",))
    for cm in (full, unfused, no_bn_fold):
        np.testing.assert_allclose(cm.run({"x": x})["y"], ref, rtol=1e-4, atol=1e-4)
    assert full.report.kernel_launches < unfused.report.kernel_launches
    assert full.report.kernel_launches <= no_bn_fold.report.kernel_launches


def test_unknown_disabled_pass_is_a_user_error(capsys, tmp_path):
    from accelc.cli import main

    with pytest.raises(AccelcError, match="no pass named NoSuchPass"):
        accelc.compile(_conv_bn_relu(), disabled_passes=("NoSuchPass",))
    onnx.save(_conv_bn_relu(), tmp_path / "m.onnx")
    assert main(["compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.so"), "--disabled-pass", "Nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no pass named Nope" in err
