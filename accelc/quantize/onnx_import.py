"""Pre-quantized ONNX models: rewrite them into the one form the quantize passes realize.

onnxruntime's ``quantize_static`` writes two formats:

    QDQ        float ops between QuantizeLinear/DequantizeLinear pairs; weights are int8
               initializers behind DequantizeLinear (per channel: ``axis``), biases int32.
    QOperator  integer ops: QLinearConv, QLinearMatMul (ONNX), com.microsoft QLinearAdd,
               QLinearMul, QLinearConcat, QLinearGlobalAveragePool, ... and MaxPool, Flatten
               or Reshape applied to the quantized tensors directly.

TVM 0.27's Relax importer reads QuantizeLinear/DequantizeLinear, DynamicQuantizeLinear and
MatMulInteger only. Everything here is an ONNX-to-ONNX rewrite before that importer runs:

    QLinearX(x_q, s_x, z_x, ..., s_y, z_y)  ->  QuantizeLinear(X(DequantizeLinear(x_q, s_x, z_x), ...), s_y, z_y)
                                                (int32 bias B: DequantizeLinear(B, s_x * s_w))
    MaxPool/Flatten/Reshape/... (x_q)      ->  QuantizeLinear(op(DequantizeLinear(x_q)), s_x, z_x)
                                                (exact: these ops move or select values, and
                                                q(dq(v)) == v)
    ConvInteger(x, w, z_x, z_w)            ->  Conv(int32(x) - z_x, int32(w) - z_w)  (int32, exact)
    uint8 activation Q/DQ, zero point z    ->  int8 Q/DQ with zero point z - 128
                                                (exact: clip(round(x/s) + z, 0, 255) - 128
                                                 == clip(round(x/s) + z - 128, -128, 127))

so that every model reaches Relax as QDQ with int8 values, which ``QuantizeRealize`` turns
into int8 x int8 -> int32 kernels (``realize_prequantized``). An op this module does not
know stays as it is, and the front end's unsupported-op check names it in one line.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import AccelcError

MS_DOMAIN = "com.microsoft"
# Ops that only move, select or reorder values: they commute with quantize/dequantize.
_MOVES = {
    "MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity",
    "Slice", "Gather", "Split", "DepthToSpace", "SpaceToDepth", "Expand", "Tile",
}
# com.microsoft QLinear ops with one quantized input: (float op, attributes dropped).
_UNARY = {
    "QLinearGlobalAveragePool": "GlobalAveragePool",
    "QLinearAveragePool": "AveragePool",
    "QLinearSigmoid": "Sigmoid",
    "QLinearLeakyRelu": "LeakyRelu",
    "QLinearSoftmax": "Softmax",
    "QLinearReduceMean": "ReduceMean",
}
_BINARY = {"QLinearAdd": "Add", "QLinearMul": "Mul"}
QOPERATOR_OPS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "QLinearConcat", "QGemm", *_UNARY, *_BINARY}


def is_prequantized(proto: onnx.ModelProto) -> bool:
    """True when the graph holds quantization ops (QDQ or QOperator)."""
    quant = QOPERATOR_OPS | {"QuantizeLinear", "DequantizeLinear", "MatMulInteger"}
    return any(n.op_type in quant for n in proto.graph.node)


def convert_prequantized(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, Counter]:
    """The QDQ form of ``proto`` (a copy; ``proto`` itself when there is nothing to do) and a
    count of the rewrites by rule."""
    if not is_prequantized(proto):
        return proto, Counter()
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    rewriter = _Rewriter(model.graph)
    rewriter.run()
    rewriter.uint8_to_int8()
    if rewriter.rewrites["QLinear"] or rewriter.rewrites["ConvInteger"] or rewriter.rewrites["move"]:
        _use_standard_domain(model)
    return model, rewriter.rewrites


def _use_standard_domain(model: onnx.ModelProto) -> None:
    """Drop the com.microsoft opset import when no node needs it any more."""
    if any(n.domain == MS_DOMAIN for n in model.graph.node):
        return
    kept = [o for o in model.opset_import if o.domain != MS_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)


class _Rewriter:
    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.inits = {t.name: t for t in graph.initializer}
        self.rewrites = Counter()
        self.qparams: dict[str, tuple[str, str]] = {}  # quantized tensor -> (scale, zero point)
        self._dq_cache: dict[tuple, str] = {}
        self._names = Counter()
        self._taken = {v for n in graph.node for v in list(n.input) + list(n.output)} | set(self.inits)

    # -- naming and constants ---------------------------------------------------------------
    def _fresh(self, base: str) -> str:
        while True:
            self._names[base] += 1
            name = f"{base}__accelc{self._names[base]}"
            if name not in self._taken:
                self._taken.add(name)
                return name

    def _const(self, name: str) -> np.ndarray | None:
        return numpy_helper.to_array(self.inits[name]) if name in self.inits else None

    def _add_init(self, array: np.ndarray, base: str) -> str:
        name = self._fresh(base)
        tensor = numpy_helper.from_array(array, name)
        self.graph.initializer.append(tensor)
        self.inits[name] = tensor
        return name

    # -- the QDQ building blocks ------------------------------------------------------------
    def _dq(self, out: list, x: str, scale: str, zero: str, axis: int | None = None) -> str:
        key = (x, scale, zero, axis)
        if key not in self._dq_cache:
            y = self._fresh(f"{x}_dq")
            attrs = {} if axis is None else {"axis": axis}
            out.append(helper.make_node("DequantizeLinear", [x, scale, zero], [y], name=y, **attrs))
            self._dq_cache[key] = y
        return self._dq_cache[key]

    def _q(self, out: list, x: str, scale: str, zero: str, y: str) -> None:
        out.append(helper.make_node("QuantizeLinear", [x, scale, zero], [y], name=self._fresh(f"{y}_q")))
        self.qparams[y] = (scale, zero)

    def _weight_axis(self, weight: str, scale: str, axis: int) -> int | None:
        """The DequantizeLinear axis of a weight: ``axis`` for a per-channel scale."""
        s = self._const(scale)
        if s is not None and s.size > 1:
            w = self._const(weight)
            return axis % w.ndim if w is not None else axis
        return None

    # -- the rewrite ------------------------------------------------------------------------
    def run(self) -> None:
        nodes = []
        for node in self.graph.node:
            new = self._rewrite(node)
            nodes.extend(new if new is not None else [node])
            if new is None:
                self._track(node)
        del self.graph.node[:]
        self.graph.node.extend(nodes)

    def _track(self, node) -> None:
        if node.op_type == "QuantizeLinear" and len(node.input) >= 3 and node.input[2]:
            self.qparams[node.output[0]] = (node.input[1], node.input[2])

    def _rewrite(self, node) -> list | None:
        op, ins = node.op_type, list(node.input)
        if node.domain == MS_DOMAIN and op in ("QuantizeLinear", "DequantizeLinear"):
            node.domain = ""  # the contrib ops are the standard ones (int8/uint8)
            return None
        out: list = []
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if op == "QLinearConv":
            x = self._dq(out, ins[0], ins[1], ins[2])
            w = self._dq(out, ins[3], ins[4], ins[5], self._weight_axis(ins[3], ins[4], 0))
            inputs = [x, w]
            if len(ins) > 8 and ins[8]:
                inputs.append(self._bias(out, ins[8], ins[1], ins[4]))
            y = self._fresh(f"{node.output[0]}_f")
            out.append(helper.make_node("Conv", inputs, [y], name=node.name, **attrs))
            self._q(out, y, ins[6], ins[7], node.output[0])
        elif op == "QLinearMatMul":
            a = self._dq(out, ins[0], ins[1], ins[2])
            b = self._dq(out, ins[3], ins[4], ins[5], self._weight_axis(ins[3], ins[4], -1))
            y = self._fresh(f"{node.output[0]}_f")
            out.append(helper.make_node("MatMul", [a, b], [y], name=node.name))
            self._q(out, y, ins[6], ins[7], node.output[0])
        elif op in _BINARY and node.domain == MS_DOMAIN:
            a = self._dq(out, ins[0], ins[1], ins[2])
            b = self._dq(out, ins[3], ins[4], ins[5])
            y = self._fresh(f"{node.output[0]}_f")
            out.append(helper.make_node(_BINARY[op], [a, b], [y], name=node.name))
            self._q(out, y, ins[6], ins[7], node.output[0])
        elif op in _UNARY and node.domain == MS_DOMAIN:
            if attrs.pop("channels_last", 0):
                raise AccelcError(f"{op} node {node.name!r}: channels_last=1 is not supported")
            attrs.pop("opset", None)
            x = self._dq(out, ins[0], ins[1], ins[2])
            y = self._fresh(f"{node.output[0]}_f")
            out.append(helper.make_node(_UNARY[op], [x], [y], name=node.name, **attrs))
            self._q(out, y, ins[3], ins[4], node.output[0])
        elif op == "QLinearConcat" and node.domain == MS_DOMAIN:
            xs = [self._dq(out, ins[i], ins[i + 1], ins[i + 2]) for i in range(2, len(ins), 3)]
            y = self._fresh(f"{node.output[0]}_f")
            out.append(helper.make_node("Concat", xs, [y], name=node.name, **attrs))
            self._q(out, y, ins[0], ins[1], node.output[0])
        elif op == "QGemm" and node.domain == MS_DOMAIN:
            a = self._dq(out, ins[0], ins[1], ins[2])
            b_axis = 0 if attrs.get("transB", 0) else 1
            b = self._dq(out, ins[3], ins[4], ins[5], self._weight_axis(ins[3], ins[4], b_axis))
            inputs = [a, b]
            if len(ins) > 6 and ins[6]:
                inputs.append(self._bias(out, ins[6], ins[1], ins[4]))
            quantized_out = len(ins) > 7 and ins[7]
            y = self._fresh(f"{node.output[0]}_f") if quantized_out else node.output[0]
            out.append(helper.make_node("Gemm", inputs, [y], name=node.name, **attrs))
            if quantized_out:
                zero = ins[8] if len(ins) > 8 and ins[8] else self._add_init(np.uint8(0), f"{y}_zero")
                self._q(out, y, ins[7], zero, node.output[0])
        elif op == "ConvInteger":
            out.extend(self._conv_integer(node, ins, attrs))
        elif op in _MOVES and ins and ins[0] in self.qparams and node.domain == "":
            # An integer op on a quantized tensor: the same op between DQ and Q (exact).
            scale, zero = self.qparams[ins[0]]
            x = self._dq(out, ins[0], scale, zero)
            y = self._fresh(f"{node.output[0]}_f")
            out.append(helper.make_node(op, [x, *ins[1:]], [y, *node.output[1:]], name=node.name, **attrs))
            self._q(out, y, scale, zero, node.output[0])
            self.rewrites["move"] += 1
            return out
        else:
            return None
        self.rewrites["ConvInteger" if op == "ConvInteger" else "QLinear"] += 1
        return out

    def _bias(self, out: list, bias: str, x_scale: str, w_scale: str) -> str:
        """The int32 bias as DequantizeLinear(B, s_x * s_w): the scale its integers are in."""
        s_x, s_w = self._const(x_scale), self._const(w_scale)
        if s_x is None or s_w is None:
            raise AccelcError(f"quantized bias {bias!r}: the input and weight scales must be constants")
        scale = (s_x.astype(np.float32) * s_w.astype(np.float32)).astype(np.float32)
        scale_name = self._add_init(scale, f"{bias}_scale")
        zero_name = self._add_init(np.zeros(scale.shape, np.int32), f"{bias}_zero")
        return self._dq(out, bias, scale_name, zero_name, 0 if scale.size > 1 else None)

    def _conv_integer(self, node, ins, attrs) -> list:
        """ConvInteger -> Conv on int32 values minus their zero points (what the spec says)."""
        out = []
        shifted = []
        for k, (value, zero_index) in enumerate(((ins[0], 2), (ins[1], 3))):
            wide = self._fresh(f"{value}_i32")
            out.append(helper.make_node("Cast", [value], [wide], to=onnx.TensorProto.INT32))
            zero = ins[zero_index] if len(ins) > zero_index and ins[zero_index] else None
            if zero is not None:
                z = self._const(zero)
                if z is None:  # computed (DynamicQuantizeLinear): a scalar
                    zero_i32 = self._fresh(f"{zero}_i32")
                    out.append(helper.make_node("Cast", [zero], [zero_i32], to=onnx.TensorProto.INT32))
                else:
                    z = z.astype(np.int32)
                    if k == 1 and z.size > 1:  # per output channel: broadcast along axis 0 of OIHW
                        z = z.reshape((-1,) + (1,) * (len(self.inits[ins[1]].dims) - 1))
                    zero_i32 = self._add_init(z, f"{zero}_i32")
                sub = self._fresh(f"{value}_minus_zp")
                out.append(helper.make_node("Sub", [wide, zero_i32], [sub]))
                wide = sub
            shifted.append(wide)
        out.append(helper.make_node("Conv", shifted, list(node.output), name=node.name, **attrs))
        return out

    # -- uint8 -> int8 ----------------------------------------------------------------------
    def uint8_to_int8(self) -> None:
        """uint8 Q/DQ pairs with a constant zero point z become int8 with zero point z - 128,
        where every reader of the uint8 tensor is a DequantizeLinear (exact, see above)."""
        readers: dict[str, list] = {}
        for node in self.graph.node:
            for name in node.input:
                readers.setdefault(name, []).append(node)
        outputs = {o.name for o in self.graph.output}
        shifted: dict[str, str] = {}  # uint8 zero-point initializer -> its int8 twin

        def int8_zero(name: str) -> str | None:
            z = self._const(name)
            if z is None or z.dtype != np.uint8:
                return None
            if name not in shifted:
                shifted[name] = self._add_init((z.astype(np.int16) - 128).astype(np.int8), f"{name}_s8")
            return shifted[name]

        for node in list(self.graph.node):
            if node.op_type != "QuantizeLinear" or len(node.input) < 3 or node.output[0] in outputs:
                continue
            users = readers.get(node.output[0], [])
            if not users or any(u.op_type != "DequantizeLinear" or len(u.input) < 3 for u in users):
                continue
            zeros = [int8_zero(node.input[2])] + [int8_zero(u.input[2]) for u in users]
            if any(z is None for z in zeros):
                continue
            node.input[2] = zeros[0]
            for user, zero in zip(users, zeros[1:]):
                user.input[2] = zero
            self.rewrites["uint8->int8"] += 1


# ------------------------------------------------------------------------------ in Relax
def realize_prequantized(mod, requantize: str = "fixedpoint"):
    """Turn an imported QDQ module's quantized ops into integer kernels: fold the dequantize
    of every constant that is not an int8 weight (int32 biases, uint8 weights) in numpy,
    then run ``QuantizeRealize``. Return (module, realize rewrite counts); a module without
    QDQ comes back unchanged with no counts."""
    from tvm import relax

    from accelc.passes.quantize_common import DEQUANTIZE, QUANTIZE
    from accelc.passes.quantize_realize import QuantizeRealize

    if not _calls_any(mod, (QUANTIZE, DEQUANTIZE)):
        return mod, Counter()
    mod = prepare_prequantized(mod)
    if requantize == "shift":  # rescaling by shifts only needs power-of-two scales throughout
        scales = _scales(mod, (QUANTIZE, DEQUANTIZE))
        if any(np.any(np.exp2(np.round(np.log2(s))) != s) for s in scales):
            raise AccelcError("--requantize shift needs power-of-two scales; this pre-quantized model's "
                              "scales are not (use --requantize fixedpoint)")
    realize = QuantizeRealize(requantize)
    mod = realize(relax.transform.Normalize()(mod))
    return mod, Counter(realize.rewrites)


def prepare_prequantized(mod):
    """Biases reach conv/matmul through dequantize and reshape: fold them into constants,
    which QuantizeRealize's bias rule needs (it runs before phase 1's folding); inference
    Dropout goes too, or it would cut the int8 chain it sits in. int8 weights keep their
    dequantize."""
    from tvm import relax

    from accelc.passes.fold_constant_numpy import FoldConstantNumpy

    return relax.transform.CanonicalizeBindings()(FoldConstantNumpy()(_fold_constant_dequantize(mod)))


def _scales(mod, ops) -> list[np.ndarray]:
    from tvm import relax
    from tvm.ir.expr import Constant

    found = []

    def visit(expr):
        if isinstance(expr, relax.Call) and any(expr.op.same_as(op) for op in ops) and isinstance(expr.args[1], Constant):
            found.append(expr.args[1].value.numpy().astype(np.float64))

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return found


def _calls_any(mod, ops) -> bool:
    from tvm import relax

    found = []

    def visit(expr):
        if isinstance(expr, relax.Call) and any(expr.op.same_as(op) for op in ops):
            found.append(expr)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return bool(found)


def _fold_constant_dequantize(mod):
    import tvm
    from tvm import relax
    from tvm.ir.expr import Constant
    from tvm.relax.expr_functor import PyExprMutator, mutator

    from accelc.passes.quantize_common import DEQUANTIZE, is_op

    dropout = tvm.ir.Op.get("relax.nn.dropout")

    @mutator
    class _Fold(PyExprMutator):
        def visit_tuple_getitem_(self, item):
            item = super().visit_tuple_getitem_(item)
            value = self.lookup_binding(item.tuple_value) if isinstance(item.tuple_value, relax.Var) else None
            if item.index == 0 and is_op(value, dropout):  # inference: Dropout is the identity
                return value.args[0]
            return item

        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not is_op(call, DEQUANTIZE) or not all(isinstance(a, Constant) for a in call.args):
                return call
            data, scale, zero = (a.value.numpy() for a in call.args)
            if data.dtype == np.int8 or str(call.attrs.out_dtype) != "float32":
                return call  # int8 weights stay for QuantizeRealize
            shape = [1] * data.ndim
            if scale.size > 1:
                shape[int(call.attrs.axis) % data.ndim] = -1
            value = (data.astype(np.float32) - zero.astype(np.float32).reshape(shape if zero.size > 1 else ())) \
                * scale.astype(np.float32).reshape(shape if scale.size > 1 else ())
            return relax.const(value.astype(np.float32))

    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            folder = _Fold(mod)
            folder.builder_.update_func(gv, folder.visit_expr(func))
            mod = folder.builder_.get()
    return mod
