"""FoldScaleShift: fold constant per-channel scales and shifts into a conv2d / matmul weight.

Rules (``P`` is ``conv2d(x, W)`` NCHW/OIHW or ``matmul(x, W)``, ``W`` constant; ``c`` a constant
that is a scalar or varies only along P's output-channel axis; ``b`` a constant):

    P * c              -> P'                 # W' = W * c per output channel
    (P + b) * c        -> P' + b * c         # scale distributes over the bias
    (P + b1) + b2      -> P + (b1 + b2)      # shift chain collapses to one bias

Precondition: runs in phase 2, after phase 1's ``FoldConstant`` (so biases and scales are
plain constants) -- this is what is left of a batch norm that ``FoldBatchNorm`` could not
see (e.g. a ``Mul``/``Add`` pair written out in the ONNX graph).
Invariant: the result is the same function up to float rounding; anything else (a
non-constant operand, a scale that varies along a non-channel axis, integer dtypes, a
broadcast that would change the output shape) is left unchanged. Rules repeat to a fixed
point; the number of rule firings is ``num_rewrites``.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from .fold_batch_norm import _channel_vector

_MAX_ROUNDS = 8


def _producer_patterns():
    conv = is_op("relax.nn.conv2d")(wildcard(), is_const())
    matmul = is_op("relax.matmul")(wildcard(), is_const())
    return conv, matmul


def _channel_axis(producer) -> int | None:
    """The output-channel axis of ``producer``, or None if its layout is not handled."""
    ndim = len(producer.ty.shape.values)
    if producer.op == tvm.ir.Op.get("relax.nn.conv2d"):
        a = producer.attrs
        return 1 if (a.data_layout, a.kernel_layout, a.out_layout) == ("NCHW", "OIHW", "NCHW") else None
    weight = producer.args[1].value.numpy()
    return ndim - 1 if weight.ndim == 2 else None


def _as_channels(const, producer, axis) -> np.ndarray | None:
    """``const`` as a per-channel float64 vector if broadcasting it onto P keeps P's shape."""
    value = const.value.numpy()
    out_shape = tuple(int(d) for d in producer.ty.shape.values)
    if value.dtype.kind != "f" or value.ndim > len(out_shape):
        return None
    try:
        if np.broadcast_shapes(value.shape, out_shape) != out_shape:
            return None
    except ValueError:
        return None
    return _channel_vector(value.astype(np.float64), out_shape[axis], axis, len(out_shape))


def _scaled(producer, scale: np.ndarray, axis: int):
    weight = producer.args[1].value.numpy()
    if weight.dtype.kind != "f":
        return None
    if axis == 1 and weight.ndim == 4:
        new_w = weight.astype(np.float64) * scale.reshape(-1, 1, 1, 1)
    else:
        new_w = weight.astype(np.float64) * scale.reshape(1, -1)
    return relax.Call(producer.op, [producer.args[0], relax.const(new_w.astype(weight.dtype))], producer.attrs)


def _bias_const(vector: np.ndarray, producer, axis: int, dtype):
    shape = [1] * len(producer.ty.shape.values)
    shape[axis] = vector.shape[0]
    if axis == len(shape) - 1:
        shape = [vector.shape[0]]
    return relax.const(vector.astype(dtype).reshape(shape))


class _Rules:
    def __init__(self):
        conv, matmul = _producer_patterns()
        self.producer = conv | matmul
        self.bias, self.scale, self.bias2 = is_const(), is_const(), is_const()
        self.biased = is_op("relax.add")(self.producer, self.bias)
        # (P + b) * c  |  P * c
        self.mul_root = is_op("relax.multiply")(self.biased | self.producer, self.scale)
        # (P + b1) + b2
        self.add_root = is_op("relax.add")(self.biased, self.bias2)
        self.count = 0

    def _producer(self, matches):
        producer = matches[self.producer]
        axis = _channel_axis(producer)
        return producer, axis

    def rewrite_mul(self, expr, matches):
        producer, axis = self._producer(matches)
        if axis is None:
            return expr
        scale = _as_channels(matches[self.scale], producer, axis)
        if scale is None:
            return expr
        call = _scaled(producer, scale, axis)
        if call is None:
            return expr
        dtype = producer.args[1].value.numpy().dtype
        if self.biased in matches:
            bias = _as_channels(matches[self.bias], producer, axis)
            if bias is None:
                return expr
            self.count += 1
            return relax.op.add(call, _bias_const(bias * scale, producer, axis, dtype))  # b * c
        self.count += 1
        return call

    def rewrite_add(self, expr, matches):
        producer, axis = self._producer(matches)
        if axis is None:
            return expr
        b1 = _as_channels(matches[self.bias], producer, axis)
        b2 = _as_channels(matches[self.bias2], producer, axis)
        if b1 is None or b2 is None:
            return expr
        self.count += 1
        dtype = producer.args[1].value.numpy().dtype
        return relax.op.add(producer, _bias_const(b1 + b2, producer, axis, dtype))  # b1 + b2


@tvm.transform.module_pass(opt_level=0, name="FoldScaleShift")
class FoldScaleShift:
    """Fold constant multiply/add chains after a constant-weight conv2d or matmul."""

    def __init__(self):
        self.num_rewrites = 0

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        from tvm.relax.dpl import rewrite_call

        rules = _Rules()
        out = mod.clone()
        for gvar, func in list(mod.functions.items()):
            if not isinstance(func, relax.Function) or "Codegen" in (func.attrs or {}):
                continue
            before = rules.count
            for _ in range(_MAX_ROUNDS):  # a chain folds one link per round
                fired = rules.count
                func = rewrite_call(rules.mul_root, rules.rewrite_mul, func)
                func = rewrite_call(rules.add_root, rules.rewrite_add, func)
                if rules.count == fired:
                    break
            if rules.count > before:
                out[gvar] = relax.analysis.remove_all_unused(func)
        self.num_rewrites = rules.count
        return out
