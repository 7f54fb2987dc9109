"""QuantizeAnnotate: choose the ops that run in int8 and mark their inputs with QDQ pairs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant
from tvm.relax.expr_functor import PyExprMutator, mutator

from accelc.quantize.config import QuantizeConfig

from .quantize_common import (
    CONV2D,
    DEQUANTIZE,
    MATMUL,
    PLACEHOLDER_SCALE,
    QUANTIZE,
    channel_axis,
    dtype_of,
    is_op,
    quantize_weight,
    static_shape,
    weight_channel_axis,
)


def _candidates(func: relax.Function) -> list[tuple[str, str]]:
    """(op kind, bound variable name) of every quantizable call, in binding order."""
    found = []
    for block in func.body.blocks:
        for binding in block.bindings:
            kind = _kind(getattr(binding, "value", None))
            if kind:
                found.append((kind, binding.var.name))
    return found


def _kind(call) -> str | None:
    """'conv2d' / 'matmul' for a float32 call with a constant weight we can quantize."""
    if is_op(call, CONV2D):
        kind = "conv2d"
    elif is_op(call, MATMUL):
        kind = "matmul"
    else:
        return None
    data, weight = call.args
    if not isinstance(weight, Constant) or isinstance(data, Constant):
        return None
    if dtype_of(data) != "float32" or dtype_of(weight) != "float32" or dtype_of(call) != "float32":
        return None
    out_shape = static_shape(call)
    if out_shape is None or (kind == "matmul" and len(weight.value.shape) != 2):
        return None
    if channel_axis(call.op, call, len(out_shape)) is None:
        return None
    return kind


@mutator
class _Annotator(PyExprMutator):
    def __init__(self, mod, config: QuantizeConfig, decisions: list[bool]):
        super().__init__(mod)
        self.config = config
        self.decisions = iter(decisions)
        self.rewrites = Counter()
        self._activation = {}  # data var -> its dequantized var (one point per tensor)

    def visit_call_(self, call):
        call = super().visit_call_(call)
        kind = _kind(call)
        if kind is None or not next(self.decisions):
            return call
        data, weight = call.args
        axis = None if self.config.per_tensor else weight_channel_axis(call.op)
        w_int8, w_scale = quantize_weight(weight.value.numpy(), axis, self.config.power_of_two)
        # x -> dequantize(quantize(x)): the scale is a placeholder until QuantizeCalibrate.
        weight_dq = self.builder_.emit(
            relax.op.dequantize(relax.const(w_int8), relax.const(w_scale), relax.const(0, "int8"), axis=axis or 0),
            name_hint="w_dq",
        )
        self.rewrites[kind] += 1
        return relax.Call(call.op, [self._fake_quant(data), weight_dq], call.attrs, call.ty_args)

    def _fake_quant(self, data):
        key = data
        if key not in self._activation:
            scale = relax.const(np.float32(PLACEHOLDER_SCALE))
            zero = relax.const(0, "int8")
            q = self.builder_.emit(relax.op.quantize(data, scale, zero, out_dtype="int8"), name_hint="x_q")
            self._activation[key] = self.builder_.emit(relax.op.dequantize(q, scale, zero), name_hint="x_dq")
        return self._activation[key]


@tvm.transform.module_pass(opt_level=0, name="QuantizeAnnotate")
class QuantizeAnnotate:
    """Mark the conv2d (any groups, NCHW/OIHW) and matmul (constant [K, N] weight) calls that
    will run in int8: their data input becomes ``dequantize(quantize(x, s))`` with a
    placeholder scale ``s`` (one point per tensor, shared by all its consumers), their weight
    a symmetric int8 constant with float scales (per output channel unless ``per_tensor``).

    Precondition: float32 module with constant weights (after phase 1 folded them).
    Invariant: the graph computes the same function up to quantization error; nothing but
    QDQ pairs is added. Position: phase 2, before QuantizeCalibrate and QuantizeRealize.
    ``rewrites`` counts annotated ops by kind after the pass ran.
    """

    def __init__(self, config: QuantizeConfig | None = None):
        self.config = config or QuantizeConfig()
        self.rewrites = Counter()

    def _decisions(self, found: list[tuple[str, str]]) -> list[bool]:
        convs = [i for i, (k, _) in enumerate(found) if k == "conv2d"]
        mats = [i for i, (k, _) in enumerate(found) if k == "matmul"]
        index = Counter()
        decisions = []
        for i, (kind, name) in enumerate(found):
            keep = self.config.keeps_float(kind, index[kind], name)
            keep |= self.config.skip_first_conv and convs[:1] == [i]
            keep |= self.config.skip_last_dense and mats[-1:] == [i]
            index[kind] += 1
            decisions.append(not keep)
        return decisions

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        self.rewrites.clear()
        for gv, func in mod.functions_items():
            if not isinstance(func, relax.Function):
                continue
            annotator = _Annotator(mod, self.config, self._decisions(_candidates(func)))
            new_func = annotator.visit_expr(func)
            annotator.builder_.update_func(gv, new_func)
            mod = annotator.builder_.get()
            self.rewrites.update(annotator.rewrites)
        return mod
