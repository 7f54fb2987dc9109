"""QuantizeRealize: turn calibrated QDQ float math into int8 x int8 -> int32 integer kernels."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant
from tvm.relax.expr_functor import PyExprMutator, mutator

from accelc.quantize.fixed_point import multiplier_and_shift, rounding_half

from .quantize_common import (
    CONV2D,
    DEQUANTIZE,
    MATMUL,
    QUANTIZE,
    broadcast_const,
    channel_axis,
    channel_vector,
    const_value,
    dtype_of,
    is_op,
    static_shape,
    weight_channel_axis,
)

_op = tvm.ir.Op.get
ADD, SUBTRACT, MULTIPLY, DIVIDE = (_op(f"relax.{n}") for n in ("add", "subtract", "multiply", "divide"))
RELU = _op("relax.nn.relu")
# Ops that commute with a zero-point-0 int8 quantize q: q(op(x)) == op(q(x)).
# relu: q(max(x, 0)) = max(q(x), 0); max_pool: q is monotone; the rest move data only.
QUANTIZE_COMMUTES = tuple(
    _op(f"relax.{n}") for n in ("nn.relu", "nn.max_pool2d", "reshape", "permute_dims", "squeeze", "expand_dims")
)


@dataclass(frozen=True)
class _Int32:
    """An int32 tensor ``acc`` standing for the float value ``acc * scale`` (``scale`` varies
    along ``axis`` of an ``ndim``-D tensor). ``acc == base + round(offset)``: the biases met
    since the last integer op are summed in float and rounded once."""

    acc: relax.Var
    scale: np.ndarray
    axis: int
    ndim: int
    base: relax.Var
    offset: np.ndarray


@mutator
class _Realizer(PyExprMutator):
    def __init__(self, mod, power_of_two: bool):
        super().__init__(mod)
        self.power_of_two = power_of_two
        self.rewrites = Counter()
        self._views = {}  # the float32 cast var of a float view -> its _Int32
        self._int8 = {}  # (float var, scale) -> its int8 quantization

    # -- dispatch --------------------------------------------------------------------------
    def visit_call_(self, call):
        call = super().visit_call_(call)
        if is_op(call, CONV2D) or is_op(call, MATMUL):
            result = self._compute(call)
        elif any(is_op(call, op) for op in (ADD, SUBTRACT, MULTIPLY, DIVIDE)):
            result = self._affine(call)
        elif is_op(call, RELU):
            result = self._relu(call)
        else:
            result = None
        return call if result is None else result

    # -- the int32 domain ------------------------------------------------------------------
    def _float_view(self, info: _Int32):
        """Dequantize: float32(acc) * scale. Dead when every consumer stays integer."""
        cast = self.builder_.emit(relax.op.astype(info.acc, "float32"), name_hint="acc_f32")
        self._views[cast] = info
        return relax.op.multiply(cast, broadcast_const(info.scale, info.ndim, info.axis, "float32"))

    def _int_of(self, expr) -> _Int32 | None:
        if not isinstance(expr, relax.Var):
            return None
        value = self.lookup_binding(expr)
        if is_op(value, MULTIPLY) and isinstance(value.args[0], relax.Var):
            return self._views.get(value.args[0])
        return None

    def _compute(self, call):
        """conv2d/matmul(dequantize(quantize(x, s_x)), dequantize(W_int8, s_w))
        -> conv2d/matmul(x_int8, W_int8, out_dtype=int32), scale s_x * s_w."""
        x, s_x = self._activation_qdq(call.args[0])
        w = self._weight_dq(call.args[1], call.op)
        out_shape = static_shape(call)
        if x is None or w is None or out_shape is None or dtype_of(call) != "float32":
            return None
        axis = channel_axis(call.op, call, len(out_shape))
        if axis is None:
            return None
        w_int8, s_w = w
        x_int8 = self._int8_of(x, s_x)
        if is_op(call, CONV2D):
            a = call.attrs
            value = relax.op.nn.conv2d(
                x_int8, w_int8, strides=a.strides, padding=a.padding, dilation=a.dilation, groups=a.groups,
                data_layout=a.data_layout, kernel_layout=a.kernel_layout, out_layout=a.out_layout, out_dtype="int32",
            )
            self.rewrites["conv2d"] += 1
        else:
            value = relax.op.matmul(x_int8, w_int8, out_dtype="int32")
            self.rewrites["matmul"] += 1
        acc = self.builder_.emit(value, name_hint="acc")
        scale = s_x * np.broadcast_to(s_w, (out_shape[axis],))
        return self._float_view(_Int32(acc, scale, axis, len(out_shape), acc, np.zeros_like(scale)))

    def _affine(self, call):
        """Per-channel constants on an int32 value: x + c -> acc + round(c / scale) (the bias in
        int32); x * c, x / c -> the same acc with scale * c, scale / c (fixedpoint only: a
        product of scales is no power of two)."""
        lhs, rhs = call.args
        info, c = self._int_of(lhs), const_value(rhs)
        if info is None and not (is_op(call, ADD) or is_op(call, MULTIPLY)):
            return None
        if info is None:  # c + x, c * x
            info, c = self._int_of(rhs), const_value(lhs)
        if info is None or c is None or static_shape(call) is None:
            return None
        vector = channel_vector(c, static_shape(call), info.axis)
        if vector is None or not np.all(np.isfinite(vector)):
            return None
        if is_op(call, ADD) or is_op(call, SUBTRACT):
            sign = 1.0 if is_op(call, ADD) else -1.0
            offset = info.offset + sign * vector / info.scale
            bias = np.clip(np.round(offset), -(2**31), 2**31 - 1).astype(np.int32)
            acc = self.builder_.emit(
                relax.op.add(info.base, broadcast_const(bias, info.ndim, info.axis, "int32")), name_hint="acc"
            )
            self.rewrites["bias"] += 1
            return self._float_view(_Int32(acc, info.scale, info.axis, info.ndim, info.base, offset))
        if self.power_of_two or np.any(vector == 0):
            return None
        scale = info.scale * vector if is_op(call, MULTIPLY) else info.scale / vector
        self.rewrites["rescale"] += 1
        return self._float_view(_Int32(info.acc, scale, info.axis, info.ndim, info.base, info.offset))

    def _relu(self, call):
        info = self._int_of(call.args[0])
        if info is None or np.any(info.scale <= 0):  # relu(acc * s) == relu(acc) * s needs s > 0
            return None
        acc = self.builder_.emit(relax.op.nn.relu(info.acc), name_hint="acc")
        self.rewrites["relu"] += 1
        return self._float_view(_Int32(acc, info.scale, info.axis, info.ndim, acc, np.zeros_like(info.scale)))

    # -- into int8 -------------------------------------------------------------------------
    def _int8_of(self, x, scale: float):
        """x quantized to int8 with ``scale``: requantized from int32 when x is an integer
        value, pushed through ops that commute with quantize, else quantized from float."""
        key = (x, scale)
        if key in self._int8:
            return self._int8[key]
        info = self._int_of(x)
        value = self.lookup_binding(x) if isinstance(x, relax.Var) else None
        if info is not None:
            result = self._requantize(info, scale)
        elif any(is_op(value, op) for op in QUANTIZE_COMMUTES) and dtype_of(value.args[0]) == "float32":
            inner = self._int8_of(value.args[0], scale)
            result = self.builder_.emit(relax.Call(value.op, [inner, *value.args[1:]], value.attrs, value.ty_args))
        else:
            q = relax.op.quantize(x, relax.const(np.float32(scale)), relax.const(0, "int8"), out_dtype="int8")
            result = self.builder_.emit(q, name_hint="x_int8")
            self.rewrites["quantize"] += 1
        self._int8[key] = result
        return result

    def _requantize(self, info: _Int32, scale: float):
        """int32 acc -> int8: clip((acc * M0 + 2**(n-1)) >> n, -128, 127) in int64."""
        m0, shift = multiplier_and_shift(info.scale / np.float64(np.float32(scale)), self.power_of_two)
        value = self.builder_.emit(relax.op.astype(info.acc, "int64"), name_hint="acc_i64")
        if np.any(m0 != 1):
            value = relax.op.multiply(value, broadcast_const(m0, info.ndim, info.axis, "int64"))
        if np.any(shift > 0):
            value = relax.op.add(value, broadcast_const(rounding_half(shift), info.ndim, info.axis, "int64"))
            value = relax.op.right_shift(value, broadcast_const(shift, info.ndim, info.axis, "int64"))
        value = relax.op.astype(relax.op.clip(value, -128, 127), "int8")
        self.rewrites["requantize"] += 1
        return self.builder_.emit(value, name_hint="requant")

    # -- matching the annotated form -------------------------------------------------------
    def _activation_qdq(self, expr):
        """(x, s) for dequantize(quantize(x, s, 0, int8), s, 0), else (None, None)."""
        dq = self.lookup_binding(expr) if isinstance(expr, relax.Var) else None
        if not is_op(dq, DEQUANTIZE) or not isinstance(dq.args[0], relax.Var):
            return None, None
        q = self.lookup_binding(dq.args[0])
        if not is_op(q, QUANTIZE) or isinstance(q.args[0], Constant) or str(q.attrs.out_dtype) != "int8":
            return None, None
        s, zq, s_dq, zdq = (const_value(a) for a in (q.args[1], q.args[2], dq.args[1], dq.args[2]))
        if any(v is None for v in (s, zq, s_dq, zdq)) or s.size != 1 or np.any(zq != 0) or np.any(zdq != 0):
            return None, None
        if not np.array_equal(s, s_dq) or dtype_of(q.args[0]) != "float32":
            return None, None
        return q.args[0], float(s.reshape(()))

    def _weight_dq(self, expr, op):
        """(W_int8 constant, scale vector or scalar) for dequantize(W_int8, s_w, 0, axis)."""
        dq = self.lookup_binding(expr) if isinstance(expr, relax.Var) else expr
        if not is_op(dq, DEQUANTIZE) or not isinstance(dq.args[0], Constant) or dtype_of(dq.args[0]) != "int8":
            return None
        s, z = const_value(dq.args[1]), const_value(dq.args[2])
        if s is None or z is None or np.any(z != 0):
            return None
        if s.size > 1 and (s.ndim != 1 or int(dq.attrs.axis) % len(dq.args[0].value.shape) != weight_channel_axis(op)):
            return None
        if op.same_as(MATMUL) and len(dq.args[0].value.shape) != 2:
            return None
        return dq.args[0], s.astype(np.float64).reshape(-1) if s.size > 1 else np.float64(s.reshape(()))


@tvm.transform.module_pass(opt_level=0, name="QuantizeRealize")
class QuantizeRealize:
    """Rewrite calibrated QDQ float math into integer kernels:

        conv2d/matmul(dq(q(x)), dq(W))   -> int8 x int8 -> int32 conv2d/matmul
        + per-channel constant           -> int32 bias add (round(c / scale))
        * or / per-channel constant      -> folded into the scale (fixedpoint mode)
        relu on int32                    -> int32 relu
        q(int32 value) feeding int8 op   -> requantize: fixed-point multiplier + rounding
                                            right shift (or shift only), saturating to int8
        q(relu / max_pool / reshape ...) -> the op runs on int8 (they commute with q)

    Every realized value also gets a float view (float32(acc) * scale); views and QDQ pairs
    nobody reads are removed by DeadCodeElimination at the end, so the integer chain only
    leaves int32 where a float consumer (or the output) needs it.

    Precondition: QuantizeAnnotate and QuantizeCalibrate ran (or an imported QDQ model with
    symmetric int8). Invariant: unmatched QDQ stays, and still compiles as float math.
    Position: phase 2, last quantize pass. ``rewrites`` counts each rule after the run.
    """

    def __init__(self, requantize: str = "fixedpoint"):
        self.power_of_two = requantize == "shift"
        self.rewrites = Counter()

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        self.rewrites.clear()
        for gv, func in mod.functions_items():
            if not isinstance(func, relax.Function):
                continue
            realizer = _Realizer(mod, self.power_of_two)
            realizer.builder_.update_func(gv, realizer.visit_expr(func))
            mod = realizer.builder_.get()
            self.rewrites.update(realizer.rewrites)
        return relax.transform.DeadCodeElimination()(mod)
