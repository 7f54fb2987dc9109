"""QuantizeAnnotate: choose the ops that run in int8 and mark their inputs with QDQ pairs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant
from tvm.relax.dpl import is_op as dpl_op
from tvm.relax.dpl import is_tuple, rewrite_call, wildcard
from tvm.relax.expr_functor import PyExprMutator, mutator

from accelc.quantize.config import QuantizeConfig

from .quantize_common import (
    ADD,
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


RELU = tvm.ir.Op.get("relax.nn.relu")
# Ops whose output is >= 0 when their input is (uint8 activations get zero point 0 there).
NON_NEGATIVE_PRESERVING = tuple(
    tvm.ir.Op.get(f"relax.{n}")
    for n in ("nn.max_pool2d", "reshape", "permute_dims", "squeeze", "expand_dims", "flatten")
)


def _sums_as_adds(func: relax.Function) -> tuple[relax.Function, int]:
    """TVM's ONNX importer writes a two-input ``Sum`` (ResNet's residual joins) as
    sum(stack([broadcast_to(a, S), broadcast_to(b, S)]), axis=0); when a and b already have
    shape S that is a + b, bit for bit (one float addition either way). Rewritten to ``add``
    so that the residual add can run in integers."""
    a, b = wildcard(), wildcard()
    stack = dpl_op("relax.stack")(is_tuple([dpl_op("relax.broadcast_to")(a, wildcard()),
                                            dpl_op("relax.broadcast_to")(b, wildcard())]))
    pattern = dpl_op("relax.sum")(stack)
    count = 0

    def rewrite(call, matched):
        nonlocal count
        shape = static_shape(call)
        axes = None if call.attrs.axis is None else [int(i) for i in call.attrs.axis]
        if shape is None or axes != [0] or call.attrs.keepdims or int(matched[stack].attrs.axis) != 0:
            return call
        if static_shape(matched[a]) != shape or static_shape(matched[b]) != shape:
            return call
        count += 1
        return relax.op.add(matched[a], matched[b])

    return rewrite_call(pattern, rewrite, func), count


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
    """'conv2d' / 'matmul' for a float32 call with a constant weight we can quantize; 'add'
    for a float32 add of two same-shape tensors (a residual add: it then runs in integers)."""
    if is_op(call, ADD):
        lhs, rhs = call.args
        shape = static_shape(call)
        same = shape is not None and static_shape(lhs) == shape and static_shape(rhs) == shape
        floats = all(dtype_of(e) == "float32" and not isinstance(e, Constant) for e in (lhs, rhs, call))
        return "add" if same and floats and shape else None
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
        if kind == "add":  # both summands become activation points; the sum stays unmarked
            self.rewrites[kind] += 1
            return relax.Call(call.op, [self._fake_quant(a) for a in call.args], call.attrs, call.ty_args)
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
            dtype = self.config.activation_dtype
            # uint8: the whole grid for a tensor that cannot be negative, else centred on 128.
            zero = relax.const(0 if dtype == "int8" or self._non_negative(data) else 128, dtype)
            q = self.builder_.emit(relax.op.quantize(data, scale, zero, out_dtype=dtype), name_hint="x_q")
            self._activation[key] = self.builder_.emit(relax.op.dequantize(q, scale, zero), name_hint="x_dq")
        return self._activation[key]

    def _non_negative(self, expr, depth: int = 0) -> bool:
        """True when ``expr`` is >= 0 by construction: relu, or max_pool / data movement of it."""
        value = self.lookup_binding(expr) if isinstance(expr, relax.Var) else None
        if is_op(value, RELU):
            return True
        if depth < 8 and any(is_op(value, op) for op in NON_NEGATIVE_PRESERVING):
            return self._non_negative(value.args[0], depth + 1)
        return False


@tvm.transform.module_pass(opt_level=0, name="QuantizeAnnotate")
class QuantizeAnnotate:
    """Mark the conv2d (any groups, NCHW/OIHW) and matmul (constant [K, N] weight) calls that
    will run in int8: their data input becomes ``dequantize(quantize(x, s))`` with a
    placeholder scale ``s`` (one point per tensor, shared by all its consumers), their weight
    a symmetric int8 constant with float scales (per output channel unless ``per_tensor``).
    A float32 add of two same-shape tensors (a residual add) gets a point on each input so
    that QuantizeRealize can add in integers. ``activation_dtype="uint8"`` makes the points
    uint8: zero point 0 for tensors >= 0 by construction (relu, max_pool of relu, ...), else 128.

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
            if not self.config.keeps_float("add", -1, ""):
                func, count = _sums_as_adds(func)
                self.rewrites.update({"sum_as_add": count} if count else {})
            annotator = _Annotator(mod, self.config, self._decisions(_candidates(func)))
            new_func = annotator.visit_expr(func)
            annotator.builder_.update_func(gv, new_func)
            mod = annotator.builder_.get()
            self.rewrites.update(annotator.rewrites)
        return mod
