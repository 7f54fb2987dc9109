"""Small ONNX models built in code, for tests that need a model but not a zoo."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv_relu_model(batch="N", seed: int = 0) -> onnx.ModelProto:
    """x[batch,3,8,8] -> Conv(3->4, 3x3, pad 1) + bias -> Relu -> y; batch may be symbolic."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv0"),
        helper.make_node("Relu", ["c"], ["y"], name="relu0"),
    ]
    graph = helper.make_graph(
        nodes, "conv_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, 8, 8])],
        [w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def two_in_two_out_model() -> onnx.ModelProto:
    """a[2,3] f32, b[2,3] f32 -> sum = a+b, prod = MatMul(a, b^T) (2x2)."""
    nodes = [
        helper.make_node("Add", ["a", "b"], ["sum"], name="add0"),
        helper.make_node("Transpose", ["b"], ["bt"], perm=[1, 0], name="t0"),
        helper.make_node("MatMul", ["a", "bt"], ["prod"], name="mm0"),
    ]
    graph = helper.make_graph(
        nodes, "two_in_two_out",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in ("a", "b")],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("prod", TensorProto.FLOAT, [2, 2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def unsupported_ops_model() -> onnx.ModelProto:
    """Two kinds of op the importer lacks, one of them twice, around a supported Relu."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("NoSuchOpA", ["r"], ["a1"], name="first_a"),
        helper.make_node("NoSuchOpA", ["a1"], ["a2"], name="second_a"),
        helper.make_node("NoSuchOpB", ["a2"], ["y"], name="only_b"),
    ]
    graph = helper.make_graph(
        nodes, "unsupported",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
