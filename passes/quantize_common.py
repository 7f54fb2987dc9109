"""Shared vocabulary of the quantize passes (annotate, calibrate, realize), and the small
helpers the other graph passes use too (``static_shape``, ``rewrite_functions``).

The annotated form is plain Relax QDQ, the same form TVM's ONNX importer gives a QDQ model:

    activation  R.dequantize(R.quantize(x, s, 0, out_dtype="int8"), s, 0)   s: scalar float32
    weight      R.dequantize(W_int8_constant, s_w, 0, axis=channel)          s_w: [C] or scalar

An *activation point* is an ``R.quantize`` whose data is not a constant; calibration finds the
points in binding order and gives each its scale.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant

QUANTIZE = tvm.ir.Op.get("relax.quantize")
DEQUANTIZE = tvm.ir.Op.get("relax.dequantize")
CONV2D = tvm.ir.Op.get("relax.nn.conv2d")
MATMUL = tvm.ir.Op.get("relax.matmul")
ADD = tvm.ir.Op.get("relax.add")

# Placeholder scale of an activation point between annotate and calibrate.
PLACEHOLDER_SCALE = 1.0


def is_op(expr, op) -> bool:
    return isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.same_as(op)


def const_value(expr) -> np.ndarray | None:
    return expr.value.numpy() if isinstance(expr, Constant) else None


def static_shape(expr) -> tuple[int, ...] | None:
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        return tuple(int(d) for d in ty.shape)
    except TypeError:  # symbolic dimension
        return None


def rewrite_functions(mod: tvm.IRModule, rewriter) -> tvm.IRModule:
    """Run ``rewriter`` (a ``PyExprMutator`` built on ``mod`` that counts what it rewrites in a
    ``rewrites`` Counter) over every Relax function no external codegen owns. A function where
    a rule fired is replaced, its now-unused bindings removed; ``mod`` itself comes back when
    nothing fired."""
    changed = False
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function) and "Codegen" not in (func.attrs or {}):
            before = sum(rewriter.rewrites.values())
            new = rewriter.visit_expr(func)
            if sum(rewriter.rewrites.values()) > before:
                rewriter.builder_.update_func(gvar, relax.analysis.remove_all_unused(new))
                changed = True
    return rewriter.builder_.get() if changed else mod


def dtype_of(expr) -> str | None:
    ty = expr.ty
    return str(ty.dtype) if isinstance(ty, relax.TensorType) else None


def channel_axis(op, call: relax.Call, out_ndim: int) -> int | None:
    """The output axis that per-channel weight scales run along, or None if unsupported."""
    if op.same_as(CONV2D):
        attrs = call.attrs
        ok = attrs.data_layout == "NCHW" and attrs.kernel_layout == "OIHW" and attrs.out_layout == "NCHW"
        return 1 if ok else None
    return out_ndim - 1  # matmul: the weight's last axis is the output's last axis


def weight_channel_axis(op) -> int:
    return 0 if op.same_as(CONV2D) else 1  # OIHW: O; matmul [K, N]: N


def channel_vector(value: np.ndarray, out_shape: tuple[int, ...], axis: int) -> np.ndarray | None:
    """``value`` as a length-C vector if broadcasting it against ``out_shape`` only varies
    along ``axis`` (and never enlarges the output); else None."""
    ndim, channels = len(out_shape), out_shape[axis]
    if value.ndim > ndim:
        return None
    shape = (1,) * (ndim - value.ndim) + value.shape
    if any(d != 1 for i, d in enumerate(shape) if i != axis) or shape[axis] not in (1, channels):
        return None
    return np.broadcast_to(value.reshape(shape[axis]), (channels,)).astype(np.float64)


def broadcast_const(vector: np.ndarray, ndim: int, axis: int, dtype: str) -> Constant:
    """A per-channel vector as a constant that broadcasts along ``axis`` (scalar if uniform)."""
    vector = np.asarray(vector)
    if np.all(vector == vector.reshape(-1)[0]):
        return relax.const(vector.reshape(-1)[0].astype(dtype), dtype)
    shape = [1] * ndim
    shape[axis] = vector.size
    return relax.const(vector.astype(dtype).reshape(shape), dtype)


def scalar_clamp_kind(func) -> str | None:
    """"max"/"min" if ``func`` is a PrimFunc computing exactly ``out[i...] = max/min(a[i...],
    b[()])`` (one block, identity indices, 0-d second operand: the ONNX importer's kernels of
    ``Clip(x, min, max)`` with bounds as inputs, e.g. MobileNet's ReLU6), else None. (The CPU
    target's ``ScalarClampToRelax`` uses it too, in phase 4.)"""
    from tvm import s_tir, tirx

    if not isinstance(func, tirx.PrimFunc) or len(func.params) != 3:
        return None
    blocks = []

    def visit(stmt):
        if isinstance(stmt, s_tir.SBlockRealize):
            visit(stmt.block)
        elif isinstance(stmt, s_tir.SBlock):
            if stmt.name_hint != "root":
                blocks.append(stmt)
            visit(stmt.body)
        elif isinstance(stmt, tirx.For):
            visit(stmt.body)
        elif isinstance(stmt, tirx.SeqStmt):
            for s in stmt.seq:
                visit(s)

    visit(func.body)
    if len(blocks) != 1 or not isinstance(blocks[0].body, tirx.BufferStore):
        return None
    store, load = blocks[0].body, tvm.ir.expr.TensorLoad
    value = store.value
    kind = "max" if isinstance(value, tirx.Max) else "min" if isinstance(value, tirx.Min) else None
    if kind is None or not isinstance(value.a, load) or not isinstance(value.b, load):
        return None
    iters = [iv.var for iv in blocks[0].iter_vars]
    same = lambda idx: len(idx) == len(iters) and all(i.same_as(v) for i, v in zip(idx, iters))  # noqa: E731
    if not (same(store.indices) and same(value.a.indices) and len(value.b.indices) == 0):
        return None
    return kind


def activation_points(func: relax.Function) -> list[relax.Call]:
    """The activation ``R.quantize`` calls of ``func`` in binding order."""
    points = []
    for block in func.body.blocks:
        for binding in block.bindings:
            value = getattr(binding, "value", None)
            if is_op(value, QUANTIZE) and not isinstance(value.args[0], Constant):
                points.append(value)
    return points


def quantize_weight(weight: np.ndarray, axis: int | None, power_of_two: bool) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights: (W_int8, scale) per channel along ``axis`` (None: per tensor).

    scale = max|W| / 127 (the next power of two in shift mode), so W / scale fits [-127, 127]."""
    from accelc.quantize.fixed_point import power_of_two_ceil

    w = weight.astype(np.float64)
    if axis is None:
        amax = np.abs(w).max(keepdims=True).reshape(1)
    else:
        amax = np.abs(np.moveaxis(w, axis, 0)).reshape(w.shape[axis], -1).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0)
    if power_of_two:
        scale = power_of_two_ceil(scale)
    scale = scale.astype(np.float32)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    q = np.clip(np.round(w / scale.astype(np.float64).reshape(shape)), -127, 127).astype(np.int8)
    return q, (scale if axis is not None else scale.reshape(()))
