"""The GPU check's models, prepared the same way on both machines.

Used by ``build_artifacts.py`` (here: compile) and ``check.py`` (on the GPU machine: weights,
onnxruntime references, PyTorch). Needs only numpy, onnx, onnxruntime and ``tests/zoo.py``
(no TVM, no accelc), because the GPU machine has no TVM.

Each benchmark model is a light-zoo architecture with seeded random weights
(``zoo.randomize_weights``, BatchNorm statistics calibrated with onnxruntime), its logits
exposed before the final Softmax, the batch set, and every float weight turned into a graph
input: the artifact then holds code only and the weights (ResNet-50: 98 MB) are made again
on the GPU machine from the same seed instead of travelling (the device call carries at most
64 MiB). The device recomputes them with its own onnxruntime, so they may differ from this
machine's in the last bits; the references are computed there from the same arrays.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

import zoo  # noqa: E402  (tests/zoo.py: model zoo, seeded weights, onnxruntime oracle)

# Light-zoo name -> nearest torchvision architecture (timed with random weights as a second
# PyTorch baseline; the zoo's shufflenet is v1, torchvision only has v2).
MODELS = {
    "squeezenet": "squeezenet1_0",
    "shufflenet": "shufflenet_v2_x1_0",
    "inception_v1": "googlenet",
    "resnet50": "resnet50",
}
BATCHES = (1, 16)
# The embedded default model (accelc/data/digits_cnn.onnx) is checked too, with its trained
# weights embedded in the artifact (the normal product path), on its whole test set.
DIGITS = "digits"
WEIGHT_SEED = 0
INPUT_SEED = 1


def load_base(name: str, models_dir: Path | None = None) -> onnx.ModelProto:
    """The shipped light model, from ``models_dir`` (carried copies) or the onnx wheel."""
    if models_dir is not None and (models_dir / f"light_{name}.onnx").is_file():
        return onnx.load(str(models_dir / f"light_{name}.onnx"))
    return zoo.load_light_model(name)


def with_random_weights(base: onnx.ModelProto) -> onnx.ModelProto:
    """Seeded weights, logits exposed (batch 1: the calibration runs at the shipped shape)."""
    return zoo.expose_pre_softmax(zoo.randomize_weights(base, WEIGHT_SEED))


def set_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """A copy with the data input's batch set to ``batch``.

    The zoo's Reshape targets are int64 initializers with the batch (1) spelled out, e.g.
    ``[1, 2048]`` or ShuffleNet's ``[1, 3, 80, 28, 28]``: their leading 1 becomes ``batch``.
    """
    m = copy.deepcopy(model)
    inits = {t.name: t for t in m.graph.initializer}
    (data,) = zoo.real_inputs(m)
    data.type.tensor_type.shape.dim[0].dim_value = batch
    for node in m.graph.node:
        if node.op_type == "Reshape" and node.input[1] in inits:
            shape = numpy_helper.to_array(inits[node.input[1]]).copy()
            if shape.size and shape[0] == 1:
                shape[0] = batch
                inits[node.input[1]].CopyFrom(numpy_helper.from_array(shape, node.input[1]))
    for out in m.graph.output:
        dims = out.type.tensor_type.shape.dim
        if len(dims) and dims[0].HasField("dim_value"):
            dims[0].dim_value = batch
    return m


def weights_as_inputs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """(model whose float initializers are graph inputs, their values by name)."""
    m = copy.deepcopy(model)
    listed = {i.name for i in m.graph.input}
    weights, kept = {}, []
    for t in m.graph.initializer:
        if t.data_type == onnx.TensorProto.FLOAT:
            weights[t.name] = numpy_helper.to_array(t)
            if t.name not in listed:
                m.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            kept.append(t)
    del m.graph.initializer[:]
    m.graph.initializer.extend(kept)
    return m, weights


def data_input(model: onnx.ModelProto, batch: int) -> dict[str, np.ndarray]:
    """The seeded N(0, 1) image batch, by input name."""
    (data,) = zoo.real_inputs(model)
    rng = np.random.default_rng(INPUT_SEED)
    return {data.name: rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)}


def logits_name(model: onnx.ModelProto) -> str:
    """The output compared against the reference: the exposed pre-Softmax logits."""
    return model.graph.output[-1].name


def artifact_name(name: str, batch: int) -> str:
    return f"{name}_b{batch}.so"
