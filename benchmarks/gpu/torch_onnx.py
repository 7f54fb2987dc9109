"""PyTorch eager on the very graph accelc compiled: an ONNX interpreter over torch ops.

The GPU check's main PyTorch baseline: the same light-zoo graph, the same weights, one
``torch.nn.functional`` call per ONNX node, in graph order, exactly as eager PyTorch runs a
module's ``forward`` (the per-op dispatch is the same; a dict lookup per node is the only
extra). Covers the ops of the nine light models (opset 9 semantics).
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _pads2d(pads, fill=0.0):
    """ONNX [top, left, bottom, right] -> (symmetric padding for torch, or an F.pad tuple)."""
    if not pads:
        return (0, 0), None
    t, l, b, r = pads
    if t == b and l == r:
        return (t, l), None
    return (0, 0), (l, r, t, b)


def _conv(x, w, b, a):
    padding, extra = _pads2d(a.get("pads"))
    if extra is not None:
        x = F.pad(x, extra)
    return F.conv2d(x, w, b, a.get("strides", [1, 1]), padding, a.get("dilations", [1, 1]), a.get("group", 1))


def _maxpool(x, a):
    padding, extra = _pads2d(a.get("pads"))
    if extra is not None:
        x = F.pad(x, extra, value=float("-inf"))
    return F.max_pool2d(x, a["kernel_shape"], a.get("strides", [1, 1]), padding, ceil_mode=bool(a.get("ceil_mode", 0)))


def _avgpool(x, a):
    kernel, strides = a["kernel_shape"], a.get("strides", [1, 1])
    ceil, include_pad = bool(a.get("ceil_mode", 0)), bool(a.get("count_include_pad", 0))
    padding, extra = _pads2d(a.get("pads"))
    if extra is None:
        return F.avg_pool2d(x, kernel, strides, padding, ceil_mode=ceil, count_include_pad=include_pad)
    # Asymmetric pads (Inception v1): window sums over the zero-padded input, divided by the
    # number of elements ONNX counts (real ones only, unless count_include_pad).
    total = F.avg_pool2d(F.pad(x, extra), kernel, strides, 0, ceil_mode=ceil, divisor_override=1)
    mask = F.pad(torch.ones_like(x[:1, :1]), extra, value=1.0 if include_pad else 0.0)
    count = F.avg_pool2d(mask, kernel, strides, 0, ceil_mode=ceil, divisor_override=1)
    return total / count


def _gemm(a_, b_, c, a):
    if a.get("transA", 0):
        a_ = a_.t()
    if a.get("transB", 0):
        b_ = b_.t()
    y = a_ @ b_
    alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        y = y + (c * beta if beta != 1.0 else c)
    return y


def _softmax(x, a):
    axis = a.get("axis", 1)  # opset < 13: coerce to 2-D at axis
    shape = x.shape
    return F.softmax(x.reshape(int(np.prod(shape[:axis])), -1), dim=1).reshape(shape)


def _reshape(x, shape):
    shape = [x.shape[i] if d == 0 else int(d) for i, d in enumerate(shape)]
    return x.reshape(shape)


def _unsqueeze(x, axes):
    for axis in sorted(axes):
        x = x.unsqueeze(axis)
    return x


_OPS = {
    "Conv": lambda i, a: _conv(i[0], i[1], i[2] if len(i) > 2 else None, a),
    "Relu": lambda i, a: F.relu(i[0]),
    "MaxPool": lambda i, a: _maxpool(i[0], a),
    "AveragePool": lambda i, a: _avgpool(i[0], a),
    "GlobalAveragePool": lambda i, a: i[0].mean(dim=(2, 3), keepdim=True),
    "LRN": lambda i, a: F.local_response_norm(i[0], a["size"], a.get("alpha", 1e-4), a.get("beta", 0.75), a.get("bias", 1.0)),
    "BatchNormalization": lambda i, a: F.batch_norm(i[0], i[3], i[4], i[1], i[2], False, 0.0, a.get("epsilon", 1e-5)),
    "Gemm": lambda i, a: _gemm(i[0], i[1], i[2] if len(i) > 2 else None, a),
    "Softmax": lambda i, a: _softmax(i[0], a),
    "Concat": lambda i, a: torch.cat(i, dim=a["axis"]),
    "Sum": lambda i, a: sum(i[1:], i[0]),
    "Add": lambda i, a: i[0] + i[1],
    "Mul": lambda i, a: i[0] * i[1],
    "Dropout": lambda i, a: i[0],
    "Flatten": lambda i, a: i[0].flatten(a.get("axis", 1)),
    "Transpose": lambda i, a: i[0].permute(*a["perm"]),
    "Reshape": lambda i, a: _reshape(i[0], i[1]),
    "Unsqueeze": lambda i, a: _unsqueeze(i[0], a["axes"]),
}


class OnnxTorch:
    """``OnnxTorch(model, weights, device)(inputs) -> outputs`` (name -> tensor dicts).

    ``weights``: float arrays by name for the graph inputs that are weights; int64
    initializers (Reshape targets) stay Python lists.
    """

    def __init__(self, model: onnx.ModelProto, weights: dict[str, np.ndarray], device: str):
        missing = sorted({n.op_type for n in model.graph.node} - set(_OPS))
        if missing:
            raise NotImplementedError(f"ops without a torch mapping: {missing}")
        self.nodes = [(n.op_type, list(n.input), list(n.output), _attrs(n)) for n in model.graph.node]
        self.outputs = [o.name for o in model.graph.output]
        self.env0: dict = {}
        for t in model.graph.initializer:
            arr = numpy_helper.to_array(t)
            self.env0[t.name] = arr.tolist() if arr.dtype.kind == "i" else torch.from_numpy(arr.copy()).to(device)
        for name, arr in weights.items():
            self.env0[name] = torch.from_numpy(np.array(arr, dtype=np.float32, copy=True)).to(device)

    def __call__(self, inputs: dict) -> dict:
        env = dict(self.env0)
        env.update(inputs)
        for op, ins, outs, attrs in self.nodes:
            env[outs[0]] = _OPS[op]([env[i] for i in ins if i], attrs)
        return {name: env[name] for name in self.outputs}
