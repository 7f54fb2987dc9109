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
    scalar_clamp_kind,
    static_shape,
    weight_channel_axis,
)

_op = tvm.ir.Op.get
ADD, SUBTRACT, MULTIPLY, DIVIDE = (_op(f"relax.{n}") for n in ("add", "subtract", "multiply", "divide"))
RELU = _op("relax.nn.relu")
CONCAT = _op("relax.concat")
MAXIMUM, MINIMUM, CLIP = _op("relax.maximum"), _op("relax.minimum"), _op("relax.clip")
CALL_TIR = _op("relax.call_tir")
INT8_RANGE = (-128, 127)
# Fraction bits of an integer add's common scale (fixedpoint): the smaller input's multiplier
# is exact to 2**-21 relative, and two 8-bit values times 2**20 still add up inside int32.
ADD_FRACTION_BITS = 20
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
        self.mod_ = mod  # the PrimFuncs a call_tir clamp calls
        self.power_of_two = power_of_two
        self.rewrites = Counter()
        self._views = {}  # the float32 cast var of a float view -> its _Int32
        self._int8 = {}  # (float var, scale) -> its int8 quantization

    # -- dispatch --------------------------------------------------------------------------
    def visit_call_(self, call):
        call = super().visit_call_(call)
        if is_op(call, CONV2D) or is_op(call, MATMUL):
            result = self._compute(call)
        elif is_op(call, ADD) and not any(isinstance(a, Constant) for a in call.args):
            result = self._integer_add(call)
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
        x, s_x, z_x = self._activation_qdq(call.args[0])
        w = self._weight_dq(call.args[1], call.op)
        out_shape = static_shape(call)
        if x is None or w is None or out_shape is None or dtype_of(call) != "float32":
            return None
        axis = channel_axis(call.op, call, len(out_shape))
        if axis is None:
            return None
        w_int8, s_w = w
        x_int8 = self._int8_of(x, s_x, z_x)
        if is_op(call, CONV2D):
            a = call.attrs
            padding = [int(p) for p in a.padding]
            if z_x and any(padding):  # float zeros pad as the zero point z_x: pad explicitly
                top, left, bottom, right = padding
                x_int8 = self.builder_.emit(
                    relax.op.nn.pad(x_int8, [0, 0, 0, 0, top, bottom, left, right], pad_value=z_x), name_hint="x_pad"
                )
                padding = [0, 0, 0, 0]
            value = relax.op.nn.conv2d(
                x_int8, w_int8, strides=a.strides, padding=padding, dilation=a.dilation, groups=a.groups,
                data_layout=a.data_layout, kernel_layout=a.kernel_layout, out_layout=a.out_layout, out_dtype="int32",
            )
            self.rewrites["conv2d"] += 1
        else:
            value = relax.op.matmul(x_int8, w_int8, out_dtype="int32")
            self.rewrites["matmul"] += 1
        acc = self.builder_.emit(value, name_hint="acc")
        scale = s_x * np.broadcast_to(s_w, (out_shape[axis],))
        if not z_x:
            return self._float_view(_Int32(acc, scale, axis, len(out_shape), acc, np.zeros_like(scale)))
        # (x - z) * W == x * W - z * sum(W): a per-channel integer, kept as the bias offset.
        w = w_int8.value.numpy().astype(np.int64)
        offset = -z_x * (w.reshape(w.shape[0], -1).sum(axis=1) if is_op(call, CONV2D) else w.sum(axis=0))
        corrected = self.builder_.emit(
            relax.op.add(acc, broadcast_const(offset.astype(np.int32), len(out_shape), axis, "int32")), name_hint="acc"
        )
        self.rewrites["zero_point"] += 1
        return self._float_view(_Int32(corrected, scale, axis, len(out_shape), acc, offset.astype(np.float64)))

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

    def _integer_add(self, call):
        """dq(q(a, s_a, z_a)) + dq(q(b, s_b, z_b)) -> (a - z_a) * M_a + (b - z_b) * M_b in int32,
        standing for the sum at a common scale s_c; consumers requantize it to their own scale.
        fixedpoint: s_c = max(s_a, s_b) * 2**-20, M = round(s / s_c) <= 2**20 (the sum of two
        8-bit values stays under 2**29); shift: s_c = min(s_a, s_b), M = 2**k, a left shift."""
        shape = static_shape(call)
        inputs = [self._activation_qdq(a) for a in call.args]
        if shape is None or not shape or any(static_shape(a) != shape for a in call.args):
            return None
        if any(x is None for x, _, _ in inputs) or dtype_of(call) != "float32":
            return None
        scales = [s for _, s, _ in inputs]
        common = min(scales) if self.power_of_two else max(scales) * 2.0**-ADD_FRACTION_BITS
        multipliers = [int(round(s / common)) for s in scales]
        if max(multipliers) > 2**ADD_FRACTION_BITS or not all(self._rescalable(s / common) for s in scales):
            return None  # shift mode: scales too far apart for int32, or not powers of two
        terms = []
        for (x, s, z), m in zip(inputs, multipliers):
            held = self._held_int8(x, s, z, shape).acc
            terms.append(held if m == 1 else self.builder_.emit(relax.op.multiply(held, relax.const(m, "int32"))))
        acc = self.builder_.emit(relax.op.add(*terms), name_hint="acc")
        axis = 1 if len(shape) > 1 else 0
        scale = np.full(shape[axis], common)
        self.rewrites["add"] += 1
        return self._float_view(_Int32(acc, scale, axis, len(shape), acc, np.zeros_like(scale)))

    def _relu(self, call):
        info = self._int_of(call.args[0])
        if info is None or np.any(info.scale <= 0):  # relu(acc * s) == relu(acc) * s needs s > 0
            return None
        acc = self.builder_.emit(relax.op.nn.relu(info.acc), name_hint="acc")
        self.rewrites["relu"] += 1
        return self._float_view(_Int32(acc, info.scale, info.axis, info.ndim, acc, np.zeros_like(info.scale)))

    # -- into int8 -------------------------------------------------------------------------
    def _int8_of(self, x, scale: float, zero: int = 0, bounds: tuple[int, int] = INT8_RANGE):
        """x quantized to int8 with ``scale`` and zero point ``zero``, clamped to ``bounds``:
        requantized from int32 when x is an integer value, pushed through ops that commute with
        quantize, taken from an equal quantize when x is its dequantize (q(dq(q(y))) == q(y)),
        else quantized from float. A clamp by a constant (max/min, clip: ReLU6) becomes
        ``bounds``: q(max(x, c)) == max(q(x), q(c)) as q is monotone, and the bounds are the
        requantize's saturation limits (or one int8 max/min where x is no int32 value)."""
        key = (x, scale, zero, bounds)
        if key in self._int8:
            return self._int8[key]
        info = self._int_of(x)
        value = self.lookup_binding(x) if isinstance(x, relax.Var) else None
        inner_x, inner_s, inner_z = self._activation_qdq(x)
        commutes = [op for op in QUANTIZE_COMMUTES if zero == 0 or not op.same_as(RELU)]  # q(relu) needs z == 0
        clamp = self._clamp(value, scale, zero) if info is None else None
        if clamp is not None:
            inner, (lo, hi) = clamp
            result = self._int8_of(inner, scale, zero, (max(bounds[0], lo), min(bounds[1], hi)))
            self.rewrites["clamp"] += 1
            self._int8[key] = result
            return result
        if info is not None:
            result = self._requantize(info, scale, zero, bounds)
            bounds = INT8_RANGE  # applied by the requantize
        elif inner_x is not None and (inner_s, inner_z) == (scale, zero):
            result = self._int8_of(inner_x, scale, zero)
        elif inner_x is not None and self._rescalable(inner_s / scale) and static_shape(x):
            result = self._requantize(self._held_int8(inner_x, inner_s, inner_z, static_shape(x)), scale, zero)
            self.rewrites["rescale_int8"] += 1
        elif any(is_op(value, op) for op in commutes) and dtype_of(value.args[0]) == "float32":
            inner = self._int8_of(value.args[0], scale, zero)
            result = self.builder_.emit(relax.Call(value.op, [inner, *value.args[1:]], value.attrs, value.ty_args))
        elif is_op(value, CONCAT) and self._fields(value.args[0]):
            # q(concat(x_i), s) == concat(q(x_i, s)): each input requantized to the common scale.
            parts = [self._int8_of(f, scale, zero) for f in self._fields(value.args[0])]
            result = self.builder_.emit(relax.op.concat(parts, axis=int(value.attrs.axis)), name_hint="concat")
            self.rewrites["concat"] += 1
        else:
            q = relax.op.quantize(x, relax.const(np.float32(scale)), relax.const(zero, "int8"), out_dtype="int8")
            result = self.builder_.emit(q, name_hint="x_int8")
            self.rewrites["quantize"] += 1
        if bounds[0] > INT8_RANGE[0]:
            result = self.builder_.emit(relax.op.maximum(result, relax.const(bounds[0], "int8")), name_hint="x_int8")
        if bounds[1] < INT8_RANGE[1]:
            result = self.builder_.emit(relax.op.minimum(result, relax.const(bounds[1], "int8")), name_hint="x_int8")
        self._int8[key] = result
        return result

    def _clamp(self, value, scale: float, zero: int):
        """(x, (lo, hi)) if ``value`` clamps the float32 x by constants (R.maximum/R.minimum
        by a scalar, R.clip, or the importer's call_tir of a scalar max/min kernel), the
        bounds quantized like the data (float32 c / scale, rounded half to even, + zero),
        else None."""
        if value is None:
            return None
        lo, hi = -np.inf, np.inf
        if is_op(value, MAXIMUM) or is_op(value, MINIMUM):
            x, c = value.args
            kind = "max" if is_op(value, MAXIMUM) else "min"
        elif is_op(value, CALL_TIR) and isinstance(value.args[1], relax.Tuple) and len(value.args[1].fields) == 2:
            x, c = value.args[1].fields
            kind = scalar_clamp_kind(self.mod_[value.args[0]]) if isinstance(value.args[0], tvm.ir.GlobalVar) else None
        elif is_op(value, CLIP) and all(isinstance(getattr(a, "value", None), (int, float)) for a in value.args[1:]):
            x, kind = value.args[0], "clip"  # R.clip(x, min, max): scalar immediates
            lo, hi = (float(a.value) for a in value.args[1:])
            c = None
        else:
            return None
        if kind is None or dtype_of(x) != "float32" or dtype_of(value) != "float32":
            return None
        if c is not None:
            if isinstance(c, relax.Var) and self.lookup_binding(c) is not None:
                c = self.lookup_binding(c)
            bound = const_value(c)
            if bound is None or bound.size != 1:
                return None
            lo, hi = (float(bound.reshape(())), np.inf) if kind == "max" else (-np.inf, float(bound.reshape(())))

        def q(v):  # relax.quantize of a float32 constant
            if not np.isfinite(v):
                return INT8_RANGE[0] if v < 0 else INT8_RANGE[1]
            return int(np.clip(np.round(np.float32(v) / np.float32(scale)) + zero, *INT8_RANGE))

        return x, (q(lo), q(hi))

    def _rescalable(self, ratio: float) -> bool:
        """Shift mode rescales only by powers of two; fixedpoint by any ratio."""
        return not self.power_of_two or float(np.exp2(np.round(np.log2(ratio)))) == ratio

    def _fields(self, expr) -> list | None:
        """The float32 tensors of a concat's tuple argument, or None."""
        tup = self.lookup_binding(expr) if isinstance(expr, relax.Var) else expr
        if not isinstance(tup, relax.Tuple) or not all(dtype_of(f) == "float32" for f in tup.fields):
            return None
        return list(tup.fields)

    def _held_int8(self, x, scale: float, zero: int, shape) -> _Int32:
        """The int8 quantization of x at (scale, zero), widened to int32 with the zero point
        taken off: an integer value at ``scale`` that can be requantized to another scale."""
        held = relax.op.astype(self._int8_of(x, scale, zero), "int32")
        if zero:
            held = relax.op.subtract(held, relax.const(zero, "int32"))
        held = self.builder_.emit(held, name_hint="held")
        axis = 1 if len(shape) > 1 else 0
        return _Int32(held, np.full(shape[axis], scale), axis, len(shape), held, np.zeros(shape[axis]))

    def _requantize(self, info: _Int32, scale: float, zero: int = 0, bounds: tuple[int, int] = INT8_RANGE):
        """int32 acc -> int8: clip(((acc * M0 + 2**(n-1)) >> n) + zero, lo, hi) in int64,
        ``(lo, hi)`` the int8 range or narrower (a fused ReLU6)."""
        m0, shift = multiplier_and_shift(info.scale / np.float64(np.float32(scale)), self.power_of_two)
        value = self.builder_.emit(relax.op.astype(info.acc, "int64"), name_hint="acc_i64")
        if np.any(m0 != 1):
            value = relax.op.multiply(value, broadcast_const(m0, info.ndim, info.axis, "int64"))
        if np.any(shift > 0):
            value = relax.op.add(value, broadcast_const(rounding_half(shift), info.ndim, info.axis, "int64"))
            value = relax.op.right_shift(value, broadcast_const(shift, info.ndim, info.axis, "int64"))
        if zero:
            value = relax.op.add(value, relax.const(zero, "int64"))
        value = relax.op.astype(relax.op.clip(value, *bounds), "int8")
        self.rewrites["requantize"] += 1
        return self.builder_.emit(value, name_hint="requant")

    # -- matching the annotated form -------------------------------------------------------
    def _activation_qdq(self, expr):
        """(x, s, z) for dequantize(quantize(x, s, z, int8), s, z), else (None, None, None).
        z (a scalar zero point) is 0 for accelc's own annotation; imported models may have any."""
        dq = self.lookup_binding(expr) if isinstance(expr, relax.Var) else None
        if not is_op(dq, DEQUANTIZE) or not isinstance(dq.args[0], relax.Var):
            return None, None, None
        q = self.lookup_binding(dq.args[0])
        if not is_op(q, QUANTIZE) or isinstance(q.args[0], Constant) or str(q.attrs.out_dtype) not in ("int8", "uint8"):
            return None, None, None
        s, zq, s_dq, zdq = (const_value(a) for a in (q.args[1], q.args[2], dq.args[1], dq.args[2]))
        if any(v is None for v in (s, zq, s_dq, zdq)) or s.size != 1 or zq.size != 1 or not np.array_equal(zq, zdq):
            return None, None, None
        if not np.array_equal(s, s_dq) or dtype_of(q.args[0]) != "float32":
            return None, None, None
        # uint8 u with zero point z is the int8 u - 128 with zero point z - 128: same integers.
        offset = 128 if str(q.attrs.out_dtype) == "uint8" else 0
        return q.args[0], float(s.reshape(())), int(zq.reshape(())) - offset

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
        dq(q(a)) + dq(q(b))              -> int32 add at a common scale (integer multipliers
                                            or left shifts); consumers requantize the sum
        q(concat(x_i), s)                -> concat of each x_i requantized to s, in int8
        q(dq(q(x, s1)), s2)              -> int8 rescaled from s1 to s2 in integers
        q(int32 value) feeding int8 op   -> requantize: fixed-point multiplier + rounding
                                            right shift (or shift only), saturating to int8
        q(relu / max_pool / reshape ...) -> the op runs on int8 (they commute with q)
        q(max/min/clip(x, c)) (ReLU6)    -> the requantize saturates to q(c) instead of the
                                            int8 range: an integer clamp, exact (q is monotone)

    Every realized value also gets a float view (float32(acc) * scale); views and QDQ pairs
    nobody reads are removed by DeadCodeElimination at the end, so the integer chain only
    leaves int32 where a float consumer (or the output) needs it.

    Precondition: QuantizeAnnotate and QuantizeCalibrate ran (or an imported QDQ model:
    int8 activations with any scalar zero point z, whose conv padding becomes an explicit
    pad with z and whose ``-z * sum(W)`` joins the int32 bias). Invariant: unmatched QDQ stays, and still compiles as float math.
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
