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
