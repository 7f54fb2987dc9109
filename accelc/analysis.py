"""Static facts about an ONNX model: op histogram, parameters, FLOPs, inputs and outputs.

Shapes come from ONNX shape inference (with data propagation, so weights produced by
``ConstantOfShape`` fills count as parameters). FLOPs count a multiply-add as two.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import AccelcError
from .frontend import graph_inputs, iter_nodes, load_onnx, resolve_inputs, unsupported_ops

_ELEMENTWISE = {
    "Add", "Sub", "Mul", "Div", "Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu", "Exp", "Log",
    "Sqrt", "Pow", "Erf", "Gelu", "HardSigmoid", "HardSwish", "Elu", "Selu", "PRelu", "Neg",
    "Abs", "Min", "Max", "Sum", "Mean", "BatchNormalization", "Softmax", "LogSoftmax",
    "LRN", "InstanceNormalization", "LayerNormalization", "Dropout", "Sign", "Reciprocal",
}


@dataclass
class ModelReport:
    name: str
    opset: int
    op_histogram: Counter
    param_count: int
    param_bytes: int
    flops: int | None
    inputs: list[tuple[str, list, str]]
    outputs: list[tuple[str, list, str]]
    unsupported: dict[str, list[str]]
    notes: list[str] = field(default_factory=list)

    def format(self) -> str:
        lines = [f"model: {self.name} (opset {self.opset})"]
        lines.append("inputs:")
        lines += [f"  {n}: {d}{_dims(s)}" for n, s, d in self.inputs]
        lines.append("outputs:")
        lines += [f"  {n}: {d}{_dims(s)}" for n, s, d in self.outputs]
        lines.append(f"parameters: {self.param_count:,} ({_human_bytes(self.param_bytes)})")
        flops = "unknown (shapes not inferable)" if self.flops is None else f"{self.flops / 1e9:.3f} GFLOP"
        lines.append(f"compute: {flops} per run (multiply-add = 2 FLOPs)")
        total = sum(self.op_histogram.values())
        lines.append(f"ops: {total} nodes, {len(self.op_histogram)} types")
        for op, count in self.op_histogram.most_common():
            mark = "  (unsupported)" if op in self.unsupported else ""
            lines.append(f"  {op:<28s}{count:6d}{mark}")
        if self.unsupported:
            lines.append("unsupported ops:")
            for op, nodes in sorted(self.unsupported.items()):
                lines.append(f"  {op} x{len(nodes)}: {', '.join(nodes[:5])}{' ...' if len(nodes) > 5 else ''}")
        else:
            lines.append("unsupported ops: none")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _dims(shape) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _value_shapes(proto: onnx.ModelProto) -> dict[str, tuple[list, int]]:
    """name -> (shape with None for unknown dims, element type) for every known value."""
    out = {}
    for v in list(proto.graph.value_info) + list(proto.graph.input) + list(proto.graph.output):
        t = v.type.tensor_type
        if not t.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        out[v.name] = (dims, t.elem_type)
    for init in proto.graph.initializer:
        out[init.name] = (list(init.dims), init.data_type)
    return out


def _numel(shape) -> int | None:
    if shape is None or any(d is None for d in shape):
        return None
    return int(np.prod(shape, dtype=np.int64))


def _node_flops(node, shapes) -> int | None:
    def shape(name):
        return shapes.get(name, (None, 0))[0]

    out = shape(node.output[0]) if node.output else None
    n_out = _numel(out)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    op = node.op_type
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        w = shape(node.input[3] if op == "QLinearConv" else node.input[1])
        if n_out is None or w is None or None in w:
            return None
        return 2 * n_out * int(np.prod(w[1:]))
    if op == "ConvTranspose":
        x, w = shape(node.input[0]), shape(node.input[1])
        if _numel(x) is None or w is None or None in w:
            return None
        return 2 * _numel(x) * int(np.prod(w[1:]))
    if op in ("MatMul", "Gemm", "MatMulInteger", "QLinearMatMul"):
        a = shape(node.input[0])
        if n_out is None or not a or a[-1] is None:
            return None
        k = a[0] if op == "Gemm" and attrs.get("transA", 0) else a[-1]
        return 2 * n_out * int(k)
    if op in ("MaxPool", "AveragePool"):
        return None if n_out is None else n_out * int(np.prod(attrs.get("kernel_shape", [1])))
    if op in ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum", "ReduceMax"):
        n_in = _numel(shape(node.input[0]))
        return n_in
    if op in _ELEMENTWISE:
        return n_out
    return 0


def analyze(model, input_shapes: dict | None = None) -> ModelReport:
    proto = load_onnx(model)
    notes = []
    try:
        fixed = {t.name: list(t.shape) for t in resolve_inputs(proto, input_shapes)}
    except AccelcError as exc:
        fixed = dict(input_shapes or {})
        notes.append(f"{exc} (FLOPs need static shapes)")
    shaped = onnx.ModelProto()
    shaped.CopyFrom(proto)
    for value in graph_inputs(shaped):
        if value.name in fixed:
            dims = value.type.tensor_type.shape.dim
            del dims[:]
            for d in fixed[value.name]:
                dims.add().dim_value = int(d)
    try:
        shaped = onnx.shape_inference.infer_shapes(shaped, data_prop=True)
    except Exception as exc:  # inference is best effort: report what it could not do
        notes.append(f"shape inference failed: {exc}")
    shapes = _value_shapes(shaped)

    param_count = param_bytes = 0
    for init in proto.graph.initializer:
        n = int(np.prod(init.dims, dtype=np.int64))
        param_count += n
        param_bytes += n * np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
    flops: int | None = 0
    for node in iter_nodes(shaped.graph):
        if node.op_type in ("Constant", "ConstantOfShape") and node.output:
            # Weights stored as constant nodes (the ONNX light zoo fills them this way).
            shape, elem = shapes.get(node.output[0], (None, 0))
            n = _numel(shape)
            if node.op_type == "Constant" and n is None:
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    n, elem = int(np.prod(value.dims, dtype=np.int64)), value.data_type
            if n and n > 1 and elem:
                param_count += n
                param_bytes += n * np.dtype(helper.tensor_dtype_to_np_dtype(elem)).itemsize
            continue
        f = _node_flops(node, shapes)
        flops = None if f is None or flops is None else flops + f

    def describe(values):
        out = []
        for v in values:
            dims, elem = shapes.get(v.name, (None, v.type.tensor_type.elem_type))
            dtype = str(np.dtype(helper.tensor_dtype_to_np_dtype(elem))) if elem else "?"
            out.append((v.name, dims if dims is not None else [], dtype))
        return out

    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    return ModelReport(
        name=proto.graph.name or "model",
        opset=opset,
        op_histogram=Counter(n.op_type for n in iter_nodes(proto.graph)),
        param_count=param_count,
        param_bytes=param_bytes,
        flops=flops,
        inputs=describe(graph_inputs(proto)),
        outputs=describe(proto.graph.output),
        unsupported=unsupported_ops(proto),
        notes=notes,
    )
