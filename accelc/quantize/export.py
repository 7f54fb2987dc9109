"""``accelc quantize``: accelc's own annotate + calibrate, written back as a standard QDQ ONNX.

The model goes through what ``accelc compile --quantize int8`` runs up to calibration (phase 1
import cleanup, FoldScaleShift, QuantizeAnnotate, QuantizeCalibrate). Each conv2d/matmul of
that Relax module is then matched, in order, with the ONNX node it came from (Conv, MatMul,
Gemm), and each quantized one is rewritten in the ONNX graph:

    Conv(x, W, B) [-> BatchNormalization]  ->  Conv(DQ(Q(x, s_x)), DQ(W_int8, s_w, axis=0), B')
    MatMul(x, W)                           ->  MatMul(DQ(Q(x, s_x)), DQ(W_int8, s_w, axis=1))
    Gemm(x, W, C)                          ->  MatMul(DQ(Q(x, s_x)), DQ(W_int8, s_w, axis=1)) + B'

W_int8, s_w and B' are the values accelc computed (batch norm and Gemm's alpha/beta already
folded in), so compiling the written model with accelc realizes the same integer kernels as
``accelc compile MODEL --quantize int8`` with the same options. Every other node is kept.
``quantization_report`` describes the same Relax module for ``accelc inspect``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import AccelcError


@dataclass
class QuantizedOp:
    """One conv2d/matmul of the annotated Relax module, in binding order."""

    kind: str  # "conv2d" | "matmul"
    name: str  # the Relax variable it binds (what --keep-float takes)
    quantized: bool
    reason: str = ""  # why it stayed float
    dtype: str = "float32"  # of its result: int32 for integer ops the model itself wrote
    act_scale: float | None = None
    act_zero: int = 0
    act_dtype: str = "int8"
    weight_int8: np.ndarray | None = None
    weight_scale: np.ndarray | None = None  # [C] per channel or a scalar
    weight_axis: int | None = None  # None: per tensor
    bias: np.ndarray | None = None  # float32 [C] added right after it, if any

    def describe(self) -> str:
        if not self.quantized:
            label = "float" if self.dtype == "float32" else self.dtype
            return f"  {self.name:<10s}{self.kind:<8s} {label:<6s} ({self.reason})"
        s = np.atleast_1d(self.weight_scale)
        weights = f"weight scale {s.min():.3g}" if s.size == 1 else f"weight scales {s.min():.3g}..{s.max():.3g} ({s.size} channels)"
        return f"  {self.name:<10s}{self.kind:<8s} int8   activation scale {self.act_scale:.4g}, {weights}"


@dataclass
class QuantizationReport:
    ops: list[QuantizedOp] = field(default_factory=list)
    source: str = ""  # "calibration: entropy", "pre-quantized model (QDQ)", ...
    kernels: dict = field(default_factory=dict)  # QuantizeRealize's rewrite counts
    adds: list = field(default_factory=list)  # quantized_adds(): summand points or None

    def format(self) -> str:
        done = sum(op.quantized for op in self.ops)
        lines = [f"int8 quantization ({self.source}): {done} of {len(self.ops)} conv2d/matmul ops in int8"]
        lines += [op.describe() for op in self.ops]
        for points in self.adds:
            if points is None:
                lines.append("  add (tensor + tensor)   float  (no quantized summands)")
            else:
                scales = ", ".join(f"{s:.4g}" + (f" (zero point {z})" if z else "") for s, z, _ in points)
                lines.append(f"  add (tensor + tensor)   int8   summand scales {scales}")
        if self.kernels:
            lines.append("  realized: " + ", ".join(f"{k} {v}" for k, v in sorted(self.kernels.items())))
        return "\n".join(lines)


# ------------------------------------------------------------------------------ Relax side
def annotated_module(model, calib, config, input_shapes=None, opt_level: int = 3):
    """(imported model, calibrated QDQ Relax module): phases 1-2 of the pipeline with
    annotate + calibrate (no realize), as ``accelc compile --quantize int8`` runs them."""
    import tvm

    from accelc.passes.quantize_annotate import QuantizeAnnotate
    from accelc.passes.quantize_calibrate import QuantizeCalibrate

    from ..frontend import import_onnx
    from ..pipeline import PipelineOptions, phase1_import_cleanup, phase2_graph_passes
    from .data import calibration_runs

    if opt_level < 2:
        raise AccelcError(f"quantization needs -O2 or -O3 (graph passes run from O2), got -O{opt_level}")
    imported = import_onnx(model, input_shapes)
    runs = calibration_runs(calib, imported.inputs, config.max_calib_samples)
    opts = PipelineOptions(opt_level=opt_level, graph_passes=(QuantizeAnnotate(config), QuantizeCalibrate(config, runs)))
    with tvm.transform.PassContext(opt_level=opt_level):
        mod = tvm.transform.Sequential(phase1_import_cleanup(opts) + phase2_graph_passes(opts))(imported.mod)
    return imported, mod


def quantized_ops(mod, float_reason: str = "kept float by --keep-float or a skip option") -> list[QuantizedOp]:
    """Every conv2d/matmul of ``main`` with what the quantize passes decided for it
    (``float_reason``: why a quantizable op without QDQ stayed float)."""
    from tvm import relax
    from tvm.ir.expr import Constant

    from accelc.passes.quantize_common import CONV2D, DEQUANTIZE, MATMUL, QUANTIZE, const_value, dtype_of, is_op

    bindings = {}
    order = []
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            bindings[b.var] = b.value
            order.append(b)

    def value_of(expr):
        return bindings.get(expr) if isinstance(expr, relax.Var) else expr

    bias_of = {}  # call var -> the constant added to it
    for b in order:
        v = b.value
        if is_op(v, tvm_add()) and isinstance(v.args[0], relax.Var) and isinstance(v.args[1], Constant):
            bias_of.setdefault(v.args[0], v.args[1].value.numpy())

    ops = []
    for b in order:
        call = b.value
        if not (is_op(call, CONV2D) or is_op(call, MATMUL)):
            continue
        kind = "conv2d" if is_op(call, CONV2D) else "matmul"
        op = QuantizedOp(kind, b.var.name, False, dtype=dtype_of(call) or "?")
        data, weight = value_of(call.args[0]), value_of(call.args[1])
        if is_op(data, DEQUANTIZE) and is_op(weight, DEQUANTIZE) and isinstance(weight.args[0], Constant):
            q = value_of(data.args[0])
            if is_op(q, QUANTIZE):
                op.quantized = True
                op.act_scale = float(const_value(q.args[1]).reshape(()))
                op.act_zero = int(const_value(q.args[2]).reshape(()))
                op.act_dtype = str(q.attrs.out_dtype)
                op.weight_int8 = weight.args[0].value.numpy()
                scale = const_value(weight.args[1])
                op.weight_scale = scale
                op.weight_axis = int(weight.attrs.axis) % op.weight_int8.ndim if scale.size > 1 else None
                bias = bias_of.get(b.var)
                op.bias = None if bias is None else bias.reshape(-1).astype(np.float32)
        if not op.quantized:
            op.reason = _float_reason(call, kind, weight, dtype_of, float_reason)
        ops.append(op)
    return ops


def quantized_adds(mod) -> list[list[tuple[float, int, str]] | None]:
    """Every add of two non-constant tensors in ``main``, in binding order: for an add whose
    summands QuantizeAnnotate marked (a residual add realized in integers), the (scale, zero
    point, dtype) of each summand; else None."""
    from tvm import relax
    from tvm.ir.expr import Constant

    from accelc.passes.quantize_common import DEQUANTIZE, QUANTIZE, const_value, is_op

    bindings = {}
    adds = []
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            bindings[b.var] = b.value
            v = b.value
            if not is_op(v, tvm_add()) or any(_is_constant(a, bindings) for a in v.args):
                continue
            points = []
            for arg in v.args:
                dq = bindings.get(arg) if isinstance(arg, relax.Var) else None
                q = bindings.get(dq.args[0]) if is_op(dq, DEQUANTIZE) and isinstance(dq.args[0], relax.Var) else None
                if not is_op(q, QUANTIZE) or isinstance(q.args[0], Constant):
                    break
                points.append((float(const_value(q.args[1]).reshape(())), int(const_value(q.args[2]).reshape(())),
                               str(q.attrs.out_dtype)))
            adds.append(points if len(points) == 2 else None)
    return adds


def _is_constant(expr, bindings) -> bool:
    from tvm import relax
    from tvm.ir.expr import Constant

    while isinstance(expr, relax.Var) and expr in bindings:
        expr = bindings[expr]
    return isinstance(expr, Constant)


def tvm_add():
    import tvm

    return tvm.ir.Op.get("relax.add")


def _float_reason(call, kind, weight, dtype_of, default: str) -> str:
    from tvm.ir.expr import Constant

    if dtype_of(call) != "float32":
        return "integer op written by the model (ConvInteger/MatMulInteger), wide integer math, not an int8 kernel"
    if not isinstance(weight, Constant):
        return "weight is not a constant"
    if kind == "matmul" and weight.value.numpy().ndim != 2:
        return "weight is not 2-D"
    return default


def quantization_report(model, calib, config, input_shapes=None) -> QuantizationReport:
    """What ``--quantize int8`` with ``config`` would quantize (``accelc inspect --quantize``)."""
    _, mod = annotated_module(model, calib, config, input_shapes)
    return QuantizationReport(quantized_ops(mod), f"calibration: {config.calib_method}", adds=quantized_adds(mod))


def prequantized_report(model, input_shapes=None) -> QuantizationReport | None:
    """The quantized ops of a pre-quantized (QDQ / QOperator) model and the integer kernels
    accelc realizes from them; None for a float model."""
    from ..frontend import import_onnx, load_onnx
    from .onnx_import import is_prequantized, prepare_prequantized, realize_prequantized

    proto = load_onnx(model)
    if not is_prequantized(proto):
        return None
    imported = import_onnx(proto, input_shapes)
    prepared = prepare_prequantized(imported.mod)
    ops = quantized_ops(prepared, "no QuantizeLinear/DequantizeLinear around it in the model")
    _, kernels = realize_prequantized(imported.mod)
    return QuantizationReport(ops, "pre-quantized model", dict(kernels), quantized_adds(prepared))


# ------------------------------------------------------------------------------- ONNX side
def quantize_to_onnx(model, calib, config, input_shapes=None) -> tuple[onnx.ModelProto, QuantizationReport]:
    """The QDQ ONNX model of ``model`` quantized by accelc with ``config``."""
    from ..frontend import load_onnx

    proto = load_onnx(model)
    _, mod = annotated_module(proto, calib, config, input_shapes)
    ops, adds = quantized_ops(mod), quantized_adds(mod)
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    _Writer(out.graph).write(ops, adds)
    opset = next((o for o in out.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and opset.version < 13:  # per-channel DequantizeLinear (axis) needs 13
        from onnx import version_converter

        out = version_converter.convert_version(out, 13)
    return out, QuantizationReport(ops, f"calibration: {config.calib_method}", adds=adds)


class _Writer:
    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.inits = {t.name: t for t in graph.initializer}
        self.qdq: dict[tuple[str, float], str] = {}
        self.new_nodes: dict[int, list] = {}  # index of a replaced node -> its replacement
        self.dropped: set[int] = set()
        self._made: set[str] = set()

    def write(self, ops: list[QuantizedOp], adds: list) -> None:
        nodes = list(self.graph.node)
        jobs = self._add_jobs(nodes, adds)  # node index -> its rewrite, run in node order so
        # that a Q/DQ pair shared by several nodes is defined before its first reader
        candidates = [i for i, n in enumerate(nodes) if n.op_type in ("Conv", "MatMul", "Gemm") and n.domain == ""]
        kinds = ["conv2d" if nodes[i].op_type == "Conv" else "matmul" for i in candidates]
        if kinds != [op.kind for op in ops]:
            raise AccelcError(
                f"cannot map accelc's {len(ops)} conv2d/matmul ops back onto the model's "
                f"{len(candidates)} Conv/MatMul/Gemm nodes (an op was folded or split on import)"
            )
        consumers: dict[str, list[int]] = {}
        for i, n in enumerate(nodes):
            for name in n.input:
                consumers.setdefault(name, []).append(i)
        for index, op in zip(candidates, ops):
            if op.quantized:
                jobs[index] = lambda index=index, op=op: self._rewrite(nodes, index, op, consumers)
        for index in sorted(jobs):
            jobs[index]()
        rewritten = []
        for i, n in enumerate(nodes):
            if i in self.dropped:
                continue
            rewritten.extend(self.new_nodes.get(i, [n]))
        del self.graph.node[:]
        self.graph.node.extend(rewritten)
        self._drop_unused_initializers()

    def _drop_unused_initializers(self) -> None:
        """The float weights the int8 ones replaced (and folded batch norms) go away."""
        used = {name for n in self.graph.node for name in n.input} | {o.name for o in self.graph.output}
        kept = [t for t in self.graph.initializer if t.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(kept)
        names = {t.name for t in kept}
        inputs = [v for v in self.graph.input if v.name not in self.inits or v.name in names]
        del self.graph.input[:]
        self.graph.input.extend(inputs)

    # -- helpers ---------------------------------------------------------------------------
    def _init(self, array: np.ndarray, name: str) -> str:
        while name in self.inits:
            name += "_"
        tensor = numpy_helper.from_array(np.asarray(array), name)
        self.graph.initializer.append(tensor)
        self.inits[name] = tensor
        return name

    def _unique(self, name: str) -> str:
        taken = {o for n in self.graph.node for o in n.output} | set(self.inits) | self._made
        while name in taken:
            name += "_"
        self._made.add(name)
        return name

    def _weight(self, name: str) -> np.ndarray | None:
        return numpy_helper.to_array(self.inits[name]).astype(np.float64) if name in self.inits else None

    def _add_jobs(self, nodes, adds: list) -> dict:
        """Q/DQ pairs on both summands of each residual add accelc realizes in integers."""
        constants = set(self.inits) | {o for n in nodes if n.op_type == "Constant" for o in n.output}
        candidates = [i for i, n in enumerate(nodes)
                      if n.op_type == "Add" and n.domain == "" and not set(n.input) & constants]
        if not any(adds):
            return {}
        if len(candidates) != len(adds):
            raise AccelcError(f"cannot map accelc's {len(adds)} tensor + tensor adds back onto the model's "
                              f"{len(candidates)} Add nodes")
        return {index: (lambda index=index, points=points: self._rewrite_add(nodes[index], index, points))
                for index, points in zip(candidates, adds) if points is not None}

    def _rewrite_add(self, node, index: int, points) -> None:
        out: list = []
        inputs = [self._activation(out, x, *point) for x, point in zip(node.input, points)]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        out.append(helper.make_node("Add", inputs, list(node.output), name=node.name, **attrs))
        self.new_nodes[index] = out

    def _activation(self, out: list, x: str, scale_value: float, zero_value: int, dtype: str) -> str:
        key = (x, scale_value, zero_value, dtype)
        if key not in self.qdq:
            scale = self._init(np.float32(scale_value), f"{x}_scale")
            zero = self._init(np.array(zero_value, dtype=dtype), f"{x}_zero_point")
            q, dq = self._unique(f"{x}_QuantizeLinear_Output"), self._unique(f"{x}_DequantizeLinear_Output")
            out.append(helper.make_node("QuantizeLinear", [x, scale, zero], [q], name=f"{x}_QuantizeLinear"))
            out.append(helper.make_node("DequantizeLinear", [q, scale, zero], [dq], name=f"{x}_DequantizeLinear"))
            self.qdq[key] = dq
        return self.qdq[key]

    def _weight_dq(self, out: list, base: str, op: QuantizedOp, w_int8: np.ndarray, axis: int) -> str:
        w = self._init(w_int8.astype(np.int8), f"{base}_quantized")
        per_channel = op.weight_axis is not None
        scale = np.asarray(op.weight_scale, np.float32)
        s = self._init(scale.reshape(-1) if per_channel else scale.reshape(()), f"{base}_scale")
        zero = np.zeros(scale.size, np.int8) if per_channel else np.int8(0)
        z = self._init(zero, f"{base}_zero_point")
        attrs = {"axis": axis} if per_channel else {}
        dq = f"{base}_DequantizeLinear_Output"
        out.append(helper.make_node("DequantizeLinear", [w, s, z], [dq], name=f"{base}_DequantizeLinear", **attrs))
        return dq

    def _check(self, expected: np.ndarray | None, op: QuantizedOp, w_int8: np.ndarray, axis: int, what: str) -> bool:
        """Is ``expected`` (the ONNX float weight, folded as accelc folds it) what the int8
        weight stands for, to within one quantization step?"""
        if expected is None or expected.shape != w_int8.shape:
            return False
        shape = [1] * w_int8.ndim
        if op.weight_axis is not None:
            shape[axis] = -1
        step = np.asarray(op.weight_scale, np.float64).reshape(shape)
        return bool(np.all(np.abs(expected - w_int8 * step) <= step * 0.5 + 1e-6 * np.abs(expected).max()))

    # -- the rewrites ----------------------------------------------------------------------
    def _rewrite(self, nodes, index: int, op: QuantizedOp, consumers) -> None:
        node = nodes[index]
        out: list = []
        x = self._activation(out, node.input[0], op.act_scale, op.act_zero, op.act_dtype)
        base = node.name or node.output[0]
        if node.op_type == "Conv":
            weight = self._weight(node.input[1])
            output = node.output[0]
            users = consumers.get(output, [])
            bn = nodes[users[0]] if len(users) == 1 and nodes[users[0]].op_type == "BatchNormalization" else None
            folded = self._bn_folded(weight, bn) if bn is not None else None
            if folded is not None and self._check(folded, op, op.weight_int8, 0, "conv"):
                self.dropped.add(users[0])  # accelc folded the batch norm into W and B
                output = bn.output[0]
            elif not self._check(weight, op, op.weight_int8, 0, "conv"):
                raise AccelcError(f"cannot write Conv node {base!r} as QDQ: its weight was folded with ops "
                                  "the exporter does not rewrite")
            inputs = [x, self._weight_dq(out, base, op, op.weight_int8, 0)]
            if op.bias is not None:
                inputs.append(self._init(op.bias, f"{base}_bias"))
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            out.append(helper.make_node("Conv", inputs, [output], name=node.name, **attrs))
        elif node.op_type == "MatMul":
            if not self._check(self._weight(node.input[1]), op, op.weight_int8, 1, "matmul"):
                raise AccelcError(f"cannot write MatMul node {base!r} as QDQ: its weight is not the constant accelc quantized")
            w = self._weight_dq(out, base, op, op.weight_int8, 1)
            out.append(helper.make_node("MatMul", [x, w], list(node.output), name=node.name))
        else:  # Gemm: alpha * A @ op(B) + beta * C, folded by accelc into W [K, N] and a bias
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            weight = self._weight(node.input[1])
            if attrs.get("transA", 0) or weight is None:
                raise AccelcError(f"cannot write Gemm node {base!r} as QDQ (transA or a non-constant B)")
            expected = (weight.T if attrs.get("transB", 0) else weight) * attrs.get("alpha", 1.0)
            if not self._check(expected, op, op.weight_int8, 1, "gemm"):
                raise AccelcError(f"cannot write Gemm node {base!r} as QDQ: its weight was folded with other ops")
            w = self._weight_dq(out, base, op, op.weight_int8, 1)
            has_c = len(node.input) > 2 and node.input[2]
            if has_c and op.bias is None:
                raise AccelcError(f"cannot write Gemm node {base!r} as QDQ: its bias was not folded")
            product = f"{base}_MatMul_Output" if op.bias is not None else node.output[0]
            out.append(helper.make_node("MatMul", [x, w], [product], name=f"{base}_MatMul"))
            if op.bias is not None:
                bias = self._init(op.bias, f"{base}_bias")
                out.append(helper.make_node("Add", [product, bias], list(node.output), name=f"{base}_Add"))
        self.new_nodes[index] = out

    def _bn_folded(self, weight: np.ndarray | None, bn) -> np.ndarray | None:
        if weight is None:
            return None
        params = [self._weight(n) for n in bn.input[1:5]]
        if any(p is None for p in params):
            return None
        gamma, _, _, var = params
        eps = next((helper.get_attribute_value(a) for a in bn.attribute if a.name == "epsilon"), 1e-5)
        factor = gamma / np.sqrt(var + eps)
        return weight * factor.reshape((-1,) + (1,) * (weight.ndim - 1))


def write_quantized(model, calib, config, output, input_shapes=None) -> tuple[Path, QuantizationReport]:
    """``accelc quantize``: write the QDQ model to ``output``; return (path, report)."""
    out, report = quantize_to_onnx(model, calib, config, input_shapes)
    path = Path(output)
    if path.exists() and path.is_dir():
        raise AccelcError(f"output path is a directory: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(out, str(path))
    return path, report
