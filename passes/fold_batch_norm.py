"""FoldBatchNorm: fold inference batch norm into the conv2d / matmul that feeds it.

    y = batch_norm(conv2d(x, W) [+ b], gamma, beta, mean, var)
      = conv2d(x, W * s) + ((b - mean) * s + beta)        with s = gamma / sqrt(var + eps)

and the same for ``matmul(x, W)`` with the channel on the last axis (``W[:, n] * s[n]``).

Precondition: runs in phase 1, *before* ``DecomposeOpsForInference`` (which would otherwise
split every batch norm into five elementwise ops), on the importer's output: the weight, the
optional bias and the four batch-norm tensors are constants (a bias may still be
``reshape(constant)``, the importer's form before ``FoldConstant``).
Invariant: only ``batch_norm(...)[0]`` in inference mode (``training=False``) is rewritten;
a non-constant weight, a channel axis that is not the conv's/matmul's output channel, or a
non-float dtype leaves the graph unchanged. The folded constants are computed in float64
and cast back to the weight's dtype. Rewrites are counted in ``num_rewrites``.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, is_tuple_get_item, wildcard


def _constant(expr) -> np.ndarray | None:
    """The value of a constant, or of ``reshape(constant)``; None for anything else."""
    if isinstance(expr, tvm.ir.expr.Constant):
        return expr.value.numpy()
    if isinstance(expr, relax.Call) and expr.op == tvm.ir.Op.get("relax.reshape"):
        inner = _constant(expr.args[0])
        if inner is not None:
            return inner.reshape([int(d) for d in expr.ty.shape.values])
    return None


def _channel_vector(bias: np.ndarray, channels: int, axis: int, ndim: int) -> np.ndarray | None:
    """``bias`` as a length-``channels`` vector if it only varies along ``axis``; else None."""
    shape = [1] * ndim
    shape[axis] = channels
    try:
        full = np.broadcast_to(bias, np.broadcast_shapes(bias.shape, tuple(shape)))
    except ValueError:
        return None
    if full.ndim != ndim:
        return None
    moved = np.moveaxis(full, axis, -1).reshape(-1, channels)
    if not np.all(moved == moved[:1]):
        return None
    return moved[0]


def _patterns():
    weight = is_const()
    conv = is_op("relax.nn.conv2d")(wildcard(), weight)
    matmul = is_op("relax.matmul")(wildcard(), weight)
    producer = conv | matmul
    bias = is_const() | is_op("relax.reshape")(is_const(), wildcard())
    biased = is_op("relax.add")(producer, bias)
    stats = [is_const() for _ in range(4)]
    bn = is_op("relax.nn.batch_norm")(producer | biased, *stats)
    return is_tuple_get_item(bn, 0), dict(conv=conv, matmul=matmul, bias=bias, biased=biased, bn=bn)


class _Folder:
    def __init__(self):
        self.root, self.p = _patterns()
        self.count = 0

    def rewrite(self, expr, matches):
        p = self.p
        bn = matches[p["bn"]]
        attrs = bn.attrs
        if bool(attrs.training):
            return expr
        producer = matches[p["conv"]] if p["conv"] in matches else matches.get(p["matmul"])
        if producer is None:
            return expr
        is_conv = producer.op == tvm.ir.Op.get("relax.nn.conv2d")
        out_ty = producer.ty
        ndim = len(out_ty.shape.values)
        axis = int(attrs.axis) % ndim
        if is_conv:
            a = producer.attrs
            # x = OIHW weight, NCHW output: channel axis 1 and weight axis 0 are the same channel
            if (a.data_layout, a.kernel_layout, a.out_layout) != ("NCHW", "OIHW", "NCHW") or axis != 1:
                return expr
        elif axis != ndim - 1:
            return expr
        weight = producer.args[1].value.numpy()
        if weight.dtype.kind != "f" or (not is_conv and weight.ndim != 2):
            return expr
        gamma, beta, mean, var = (a.value.numpy().astype(np.float64) for a in bn.args[1:5])
        channels = gamma.shape[0]
        bias = np.zeros(channels)
        if p["biased"] in matches:
            raw = _constant(matches[p["bias"]])
            bias = None if raw is None else _channel_vector(raw.astype(np.float64), channels, axis, ndim)
            if bias is None:
                return expr
        scale = gamma / np.sqrt(var + float(attrs.epsilon)) if bool(attrs.scale) else 1.0 / np.sqrt(var + float(attrs.epsilon))
        shift = beta if bool(attrs.center) else 0.0
        dtype = weight.dtype
        if is_conv:  # w' = w * s per output channel (axis 0 of OIHW)
            new_w = weight.astype(np.float64) * scale.reshape(-1, 1, 1, 1)
            bias_shape = (1, channels) + (1,) * (ndim - 2)
        else:  # y = x @ W: output channel n is column n
            new_w = weight.astype(np.float64) * scale.reshape(1, -1)
            bias_shape = (channels,)
        new_b = (bias - mean) * scale + shift  # b' = (b - mean) * s + beta
        call = relax.Call(producer.op, [producer.args[0], relax.const(new_w.astype(dtype))], producer.attrs)
        self.count += 1
        return relax.op.add(call, relax.const(new_b.astype(dtype).reshape(bias_shape)))


@tvm.transform.module_pass(opt_level=0, name="FoldBatchNorm")
class FoldBatchNorm:
    """Fold inference ``batch_norm`` into a preceding constant-weight conv2d or matmul."""

    def __init__(self):
        self.num_rewrites = 0

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        from tvm.relax.dpl import rewrite_call

        folder = _Folder()
        out = mod.clone()
        for gvar, func in list(mod.functions.items()):
            if isinstance(func, relax.Function) and "Codegen" not in (func.attrs or {}):
                before = folder.count
                new_func = rewrite_call(folder.root, folder.rewrite, func)
                if folder.count > before:
                    # the batch_norm tuple and its unused [1], [2] outputs are now dead
                    out[gvar] = relax.analysis.remove_all_unused(new_func)
        self.num_rewrites = folder.count
        return out
