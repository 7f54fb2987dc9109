"""Tiny ONNX models for the tuning tests: one kernel that tuning clearly speeds up."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def matmul_relu_model(m: int = 64, k: int = 256, n: int = 256, seed: int = 0) -> onnx.ModelProto:
    """x[m,k] -> Relu(MatMul(x, W[k,n])) -> y[m,n]; at O1 a single naive kernel (~4 M MACs)."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array((rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["mm"], name="mm0"),
        helper.make_node("Relu", ["mm"], ["y"], name="relu0"),
    ]
    graph = helper.make_graph(
        nodes, "matmul_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
