"""The shipped default model (accelc/data/digits_cnn.onnx) is real, small and accurate."""

import numpy as np
import onnx
import pytest

from accelc import models

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return onnx.load(models.default_model_path())


def test_model_file_is_small():
    assert models.default_model_path().stat().st_size < 1_000_000


def test_graph_keeps_conv_and_batchnorm_for_the_fusion_passes(model):
    ops = {node.op_type for node in model.graph.node}
    assert {"Conv", "BatchNormalization"} <= ops


def test_signature(model):
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert inp.name == "input"
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["N", 1, 8, 8]
    assert out.name == "logits"


def test_data_files_match_the_model_input():
    inputs, labels = models.load_digits_test()
    calib = models.load_digits_calib()["input"]
    assert inputs.dtype == calib.dtype == np.float32
    assert inputs.shape[1:] == calib.shape[1:] == (1, 8, 8)
    assert labels.dtype == np.int64 and labels.shape == (len(inputs),)
    assert set(np.unique(labels)) == set(range(10))
    assert 0.0 <= inputs.min() and inputs.max() <= 1.0


def test_onnxruntime_test_accuracy_at_least_95_percent(model):
    inputs, labels = models.load_digits_test()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": inputs})
    assert logits.shape == (len(labels), 10)
    assert models.accuracy(logits, labels) >= 95.0


def test_accuracy_is_top1_percent():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert models.accuracy(logits, [1, 0, 0, 0]) == 75.0
