"""Relax patterns for the VTA target: the realized int8 layer, whole.

``QuantizeRealize(requantize="shift")`` writes every int8 conv2d/dense with an int8 consumer as

    acc = conv2d(x_int8, W_int8, out_dtype=int32)   |  matmul(x_int8, W_int8, out_dtype=int32)
    acc = acc + bias_int32                           (optional)
    acc = relu(acc)                                  (optional)
    y   = astype(acc, int64) [+ half(shift)  >> shift]   (the pair is absent when every shift is 0)
    y   = astype(clip(y, -128, 127), int8)

which is exactly one VTA layer: GEMM into the int32 accumulator, then ALU ADD (bias), MAX 0
(relu), ADD half + SHR (rounding shift), MAX/MIN (clip) and a truncating STORE. The int64 in
the graph is only there so that CPU code cannot overflow: ``acc + half`` fits in int32
(asserted by ``_check``'s bound on the shift) as long as it does on VTA, and VTA's int32
accumulator wraps exactly as the realized int32 conv does.

Patterns are named ``accelc.vta.conv2d`` and ``accelc.vta.dense`` (one name, eight variants
each: bias x relu x rounding shift); ``check_layer`` refuses what VTA cannot run, and
``fallback_reason`` says, for every conv2d/matmul left on the CPU, why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant
from tvm.relax.dpl import is_const, is_op, wildcard

from accelc.quantize.fixed_point import rounding_half

from ..fusion_patterns import register_patterns

CONV2D, DENSE = "accelc.vta.conv2d", "accelc.vta.dense"
_ROOT = {CONV2D: "relax.nn.conv2d", DENSE: "relax.matmul"}
# (acc + half) >> s must not overflow the int32 accumulator for any int32 acc VTA can hold;
# shifts of 31 and more leave only the sign, VTA's SHR immediate is 16-bit signed.
MAX_SHIFT = 30


def layer_pattern(name: str, bias: bool, relu: bool, rounding: bool):
    """``root(x, W) [+ bias] [-> relu] -> astype int64 [+ half >> shift] -> clip -> astype``."""
    data, weight = wildcard(), is_const()
    acc = is_op(_ROOT[name])(data, weight)
    annotations = {"root": acc, "data": data, "weight": weight}
    if bias:
        annotations["bias"] = b = is_const()
        acc = annotations["bias_add"] = is_op("relax.add")(acc, b)
    if relu:
        acc = annotations["relu"] = is_op("relax.nn.relu")(acc)
    y = annotations["widen"] = is_op("relax.astype")(acc)
    if rounding:
        annotations["half"], annotations["shift"] = half, shift = is_const(), is_const()
        y = is_op("relax.right_shift")(is_op("relax.add")(y, half), shift)
    y = annotations["clip"] = is_op("relax.clip")(y, wildcard(), wildcard())
    out = annotations["out"] = is_op("relax.astype")(y)
    return out, annotations


def vta_patterns() -> list[tuple]:
    """``(name, pattern, annotations, check)``, longest chain first (FuseOpsByPattern takes
    the first pattern that matches at a root)."""
    out = []
    for name in (CONV2D, DENSE):
        for bias in (True, False):
            for relu in (True, False):
                for rounding in (True, False):
                    pattern, annotations = layer_pattern(name, bias, relu, rounding)
                    out.append((bias + relu + 2 * rounding, (name, pattern, annotations, _checker(name))))
    out.sort(key=lambda item: -item[0])
    return [p for _, p in out]


# ------------------------------------------------------------------------------ the layer
@dataclass(frozen=True)
class LayerParams:
    """Everything ``compile_layer`` needs, read off a matched chain."""

    kind: str  # "conv2d" | "dense"
    data_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    weight: np.ndarray  # conv2d OIHW, dense (IC, OC) as the graph has it
    bias: np.ndarray | None  # int32 [OC]
    shift: np.ndarray  # int64 [OC], >= 0
    relu: bool
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)


class Refused(Exception):
    """A matched chain VTA cannot run; the message is the reason shown to the user."""


def _const(expr) -> np.ndarray | None:
    value = getattr(expr, "value", None) if isinstance(expr, Constant) else None
    return value.numpy() if hasattr(value, "numpy") else None  # IntImm is a Constant too


def _int_imm(expr) -> int | None:
    value = getattr(expr, "value", None)
    return value if isinstance(value, int) else None


def _dtype(expr) -> str:
    return str(expr.ty.dtype) if isinstance(expr.ty, relax.TensorType) else ""


def _shape(expr) -> tuple[int, ...] | None:
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None or not isinstance(ty.shape, relax.ShapeExpr):
        return None
    try:
        return tuple(int(d) for d in ty.shape.values)
    except TypeError:  # symbolic dimension
        return None


def _per_channel(value: np.ndarray, channels: int, axis: int, ndim: int, what: str) -> np.ndarray:
    """A constant that broadcasts along ``axis`` only -> its [channels] vector."""
    value = np.asarray(value)
    if value.ndim > ndim:
        raise Refused(f"{what} has rank {value.ndim}")
    full = value.reshape((1,) * (ndim - value.ndim) + value.shape)
    if any(d != 1 for i, d in enumerate(full.shape) if i != axis) or full.shape[axis] not in (1, channels):
        raise Refused(f"{what} is not per output channel (shape {value.shape})")
    return np.broadcast_to(full.reshape(-1), (channels,)).copy()


def conv_attrs_refusal(a) -> str | None:
    """Why VTA cannot run a conv2d with these attributes (None: it can)."""
    if int(a.groups) != 1:
        return f"grouped conv2d (groups={int(a.groups)})"
    if any(int(d) != 1 for d in a.dilation):
        return f"dilated conv2d (dilation={[int(d) for d in a.dilation]})"
    if (str(a.data_layout), str(a.kernel_layout), str(a.out_layout)) != ("NCHW", "OIHW", "NCHW"):
        return f"layout {a.data_layout}/{a.kernel_layout} (VTA takes NCHW/OIHW)"
    return None


def layer_params(name: str, annotated: dict) -> LayerParams:
    """Read and check the layer; raise ``Refused`` with the reason VTA cannot run it."""
    root, data = annotated["root"], annotated["data"]
    kind = "conv2d" if name == CONV2D else "dense"
    weight = _const(annotated["weight"])
    data_shape, out_shape = _shape(data), _shape(annotated["out"])
    if _dtype(data) != "int8" or weight is None or weight.dtype != np.int8:
        raise Refused("not an int8 x int8 layer")
    if data_shape is None or out_shape is None:
        raise Refused("dynamic shape")
    if _dtype(root) != "int32" or _dtype(annotated["out"]) != "int8" or _dtype(annotated["widen"]) != "int64":
        raise Refused("not an int32 accumulator requantized to int8")
    if kind == "conv2d":
        a = root.attrs
        reason = conv_attrs_refusal(a)
        if reason:
            raise Refused(reason)
        if len(data_shape) != 4 or weight.ndim != 4:
            raise Refused("conv2d is not 2-D")
        strides, padding = tuple(int(s) for s in a.strides), tuple(int(p) for p in a.padding)
        axis, channels = 1, out_shape[1]
    else:
        if len(data_shape) != 2 or weight.ndim != 2:
            raise Refused(f"matmul of rank {len(data_shape)} x {weight.ndim} (VTA dense is 2-D x 2-D)")
        strides, padding = (1, 1), (0, 0, 0, 0)
        axis, channels = 1, out_shape[1]
    ndim = len(out_shape)

    bias = None
    if "bias" in annotated:
        bias = _const(annotated["bias"])
        if bias.dtype != np.int32:
            raise Refused(f"bias of dtype {bias.dtype}")
        bias = _per_channel(bias, channels, axis, ndim, "bias").astype(np.int32)
    if "shift" in annotated:
        shift, half = _const(annotated["shift"]), _const(annotated["half"])
        if shift.dtype.kind != "i" or half.dtype.kind != "i":
            raise Refused("requantize constants are not integers")
        shift = _per_channel(shift, channels, axis, ndim, "requantize shift").astype(np.int64)
        half = _per_channel(half, channels, axis, ndim, "rounding constant").astype(np.int64)
        if np.any(shift < 0) or np.any(shift > MAX_SHIFT):
            raise Refused(f"requantize shift outside 0..{MAX_SHIFT}")
        if not np.array_equal(half, rounding_half(shift)):
            raise Refused("rounding constant is not half of the shift (not a rounding shift)")
    else:
        shift = np.zeros(channels, np.int64)
    lo, hi = (annotated["clip"].args[i] for i in (1, 2))
    if [_int_imm(lo), _int_imm(hi)] != [-128, 127]:
        raise Refused("clip is not the int8 range")
    return LayerParams(kind, data_shape, out_shape, weight, bias, shift, "relu" in annotated, strides, padding)


def _checker(name: str):
    def check(ctx) -> bool:
        annotated = dict(ctx.annotated_expr.items())
        # Values inside the chain must not be read outside it: the layer only writes int8.
        bound = ctx.value_to_bound_var
        for key in ("root", "bias_add", "relu", "widen", "clip"):
            expr = annotated.get(key)
            var = bound.get(expr) if expr is not None else None
            if var is not None and len(ctx.var_usages.get(var, [])) > 1:
                return False
        try:
            layer_params(name, annotated)
        except Refused:
            return False
        return True

    return check


register_patterns("vta", vta_patterns())


# ------------------------------------------------------------------------- CPU fallbacks
_OPS = {n: tvm.ir.Op.get(f"relax.{n}") for n in ("add", "nn.relu", "astype", "multiply", "right_shift", "clip")}


def _is(value, name: str) -> bool:
    return isinstance(value, relax.Call) and value.op.same_as(_OPS[name])


def fallback_reason(var, call, var2val: dict, users: dict) -> str:
    """Why the conv2d/matmul ``var = call`` was not offloaded (it is still on the CPU)."""
    kind = "conv2d" if "conv2d" in str(call.op) else "matmul"
    data, weight = call.args[0], call.args[1]
    if _dtype(data) in ("uint8", "int16", "uint16"):
        return f"{_dtype(data)} activations (VTA takes int8 x int8; use --activation-dtype int8)"
    if _dtype(data) != "int8":
        return f"{_dtype(data) or 'non-tensor'} {kind}, not quantized (VTA runs int8 layers)"
    if not isinstance(weight, Constant) or _dtype(weight) != "int8":
        return "weight is not an int8 constant"
    if kind == "conv2d" and conv_attrs_refusal(call.attrs):
        return conv_attrs_refusal(call.attrs)
    # Follow the single-consumer chain the realized requantize would form.
    end, steps = var, []
    while True:
        consumers = users.get(end, [])
        if len(consumers) != 1:
            what = "the graph output" if not consumers else f"{len(consumers)} consumers"
            return (f"its {_dtype(end)} result goes to {what}, not to an int8 requantize "
                    "(VTA layers write int8)")
        nxt = consumers[0]
        value = var2val[nxt]
        if _is(value, "multiply"):
            return "fixed-point requantize (multiplier + shift): VTA needs --requantize shift"
        steps.append(value)
        end = nxt
        if _is(value, "astype") and _dtype(nxt) == "int8":
            break
        if not any(_is(value, n) for n in ("add", "nn.relu", "astype", "right_shift", "clip")):
            return (f"its {_dtype(end)} result feeds {value.op.name if isinstance(value, relax.Call) else 'a tuple'}, "
                    "not an int8 requantize (VTA layers write int8)")
        if _is(value, "astype") and _dtype(nxt) not in ("int64", "int32"):
            return f"its result is dequantized to {_dtype(nxt)} (e.g. for a residual add or the output), not requantized to int8"
    name = CONV2D if kind == "conv2d" else DENSE
    for pname, pattern, annotations, _ in vta_patterns():
        if pname != name:
            continue
        found = pattern.extract_matched_expr(end, var2val)
        if found is None:
            continue
        annotated = {key: found[p] for key, p in annotations.items() if p in found}
        try:
            layer_params(name, annotated)
        except Refused as exc:
            return str(exc)
        return "a value inside the chain is also read elsewhere"
    return "the chain after it is not bias/relu/rounding-shift/clip (no VTA pattern matched)"
