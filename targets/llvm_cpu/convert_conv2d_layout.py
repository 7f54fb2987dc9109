"""ConvertConv2dLayout: NCHW conv2d -> packed NCHW{c}c with per-convolution channel blocks."""

from __future__ import annotations

import logging

import tvm
from tvm import IRModule, relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .config import CpuScheduleConfig
from .schedule_utils import static_shape
from accelc.passes.fold_constant_numpy import FoldConstantNumpy


def channel_block(channels: int, max_block: int) -> int:
    """Largest power-of-two block <= max_block dividing ``channels``; small odd counts
    (the 3 colour channels of a first layer) become one block of their own."""
    if channels <= max_block and channels & (channels - 1):
        return channels
    block = max_block
    while block > 1 and channels % block:
        block //= 2
    return block


def is_narrow_group_1x1(call: relax.Call, config: CpuScheduleConfig) -> bool:
    """A 1x1 stride-1 unpadded NCHW conv whose (per-group) channels are no multiple of the
    vector width: NCHW{c}c would vectorize it over 2- to 8-channel blocks (SqueezeNet's
    1000-class conv10 got 8-channel blocks, half an AVX-512 vector, and took a third of the
    model's time), so it stays NCHW and :class:`LegalizePackedOps` lowers it to a per-group
    GEMM vectorized over pixels. Ungrouped convs qualify when their output channels are many
    (>= 8 vectors) and no multiple of the vector width."""
    attrs = call.attrs
    if attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW":
        return False
    data, weight = call.args
    dshape, wshape = static_shape(data), static_shape(weight)
    if dshape is None or wshape is None or data.ty.dtype != "float32":
        return False
    groups = int(attrs.groups)
    if groups == dshape[1] or wshape[2:] != [1, 1]:
        return False
    if any(int(s) != 1 for s in attrs.strides) or any(int(p) for p in attrs.padding):
        return False
    lanes = config.vector_lanes
    if groups == 1:
        # Only wide layers: a GEMM of few output rows (MobileNetV2's 24-channel projections)
        # is 5x slower over pixel lanes than in NCHW8c, and its neighbours then need transforms.
        return wshape[0] % lanes != 0 and wshape[0] >= 8 * lanes and dshape[2] * dshape[3] >= lanes
    return (dshape[1] // groups) % lanes != 0 or (wshape[0] // groups) % lanes != 0


def conv2d_layouts(call: relax.Call, config: CpuScheduleConfig) -> list[str] | None:
    """[data, kernel, out] layouts for one NCHW/OIHW fp32 conv2d, or None to keep NCHW."""
    attrs = call.attrs
    if attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW":
        return None
    if attrs.out_layout not in ("NCHW", ""):
        return None
    data, weight = call.args
    dshape, wshape = static_shape(data), static_shape(weight)
    if dshape is None or wshape is None or data.ty.dtype != "float32":
        return None
    if is_narrow_group_1x1(call, config):
        return None
    in_ch, out_ch, groups = dshape[1], wshape[0], int(attrs.groups)
    max_block = config.channel_block
    if groups == 1:
        ib, ob = channel_block(in_ch, max_block), channel_block(out_ch, max_block)
        return [f"NCHW{ib}c", f"OIHW{ib}i{ob}o", f"NCHW{ob}c"]
    if groups == in_ch == out_ch:  # depthwise, multiplier 1
        b = channel_block(in_ch, max_block)
        return [f"NCHW{b}c", f"OIHW1i{b}o", f"NCHW{b}c"]
    if in_ch // groups == 1:
        # Depthwise with a channel multiplier: the packed grouped kernel has no lowering for
        # one input channel per group (tests/test_fuzz.py::test_grouped_conv_with_channel_multiplier).
        return None
    ib = channel_block(in_ch // groups, max_block)
    ob = channel_block(out_ch // groups, max_block)
    return [f"NCHW{ib}c", f"OIHW{ib}i{ob}o", f"NCHW{ob}c"]


@mutator
class _DropDropout(PyExprMutator):  # pylint: disable=abstract-method
    """``dropout(x)[0] -> x`` (inference). ConvertLayout cannot see through dropout's tuple."""

    def visit_tuple_getitem_(self, op):  # pylint: disable=arguments-renamed
        op = super().visit_tuple_getitem_(op)
        tup = op.tuple_value
        if isinstance(tup, relax.Var):
            bound = self.lookup_binding(tup)
            tup = bound if bound is not None else tup
        if (
            op.index == 0
            and isinstance(tup, relax.Call)
            and isinstance(tup.op, tvm.ir.Op)
            and tup.op.name == "relax.nn.dropout"
        ):
            return tup.args[0]
        return op


@mutator
class _PackEachConv(PyExprMutator):  # pylint: disable=abstract-method
    """Fallback when ConvertLayout fails: pack each conv2d on its own, with layout_transforms
    to and from NCHW around it (no propagation through neighbouring ops)."""

    def __init__(self, mod, config):
        super().__init__(mod)
        self.config = config

    def visit_call_(self, call):  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.nn.conv2d":
            return call
        layouts = conv2d_layouts(call, self.config)
        if layouts is None:
            return call
        data_l, kern_l, out_l = layouts
        data = self.builder_.emit(relax.op.layout_transform(call.args[0], _index_map("NCHW", data_l)))
        kern = self.builder_.emit(relax.op.layout_transform(call.args[1], _index_map("OIHW", kern_l)))
        a = call.attrs
        conv = self.builder_.emit(relax.op.nn.conv2d(
            data, kern, strides=a.strides, padding=a.padding, dilation=a.dilation, groups=a.groups,
            data_layout=data_l, kernel_layout=kern_l, out_layout=out_l, out_dtype=a.out_dtype))
        return relax.op.layout_transform(conv, _index_map(out_l, "NCHW"))


def _index_map(src: str, dst: str):
    """IndexMap for NCHW <-> NCHW{c}c and OIHW -> OIHW{i}i{o}o."""
    import re  # pylint: disable=import-outside-toplevel

    from tvm import tirx  # pylint: disable=import-outside-toplevel

    m = re.fullmatch(r"NCHW(\d+)c", dst)
    if src == "NCHW" and m:
        b = int(m.group(1))
        return tirx.IndexMap.from_func(lambda n, c, h, w: [n, c // b, h, w, c % b])
    m = re.fullmatch(r"NCHW(\d+)c", src)
    if dst == "NCHW" and m:
        b = int(m.group(1))
        return tirx.IndexMap.from_func(lambda n, cc, h, w, cb: [n, cc * b + cb, h, w])
    m = re.fullmatch(r"OIHW(\d+)i(\d+)o", dst)
    if src == "OIHW" and m:
        ib, ob = int(m.group(1)), int(m.group(2))
        return tirx.IndexMap.from_func(lambda o, i, h, w: [o // ob, i // ib, h, w, i % ib, o % ob])
    raise ValueError(f"no index map {src} -> {dst}")


@tvm.transform.module_pass(opt_level=0, name="ConvertConv2dLayout")
class ConvertConv2dLayout:  # pylint: disable=too-few-public-methods
    """Rewrite every fp32 NCHW conv2d into the packed NCHW{c}c / OIHW{i}i{o}o layout.

    Runs on Relax before LegalizeOps, after FoldConstant. Channel blocks are chosen per
    convolution (largest power of two <= ``config.channel_block`` dividing the channels), and
    relax's ConvertLayout propagates the packed layout through elementwise ops, pooling and
    concat, inserting ``layout_transform`` only where producers and consumers disagree.
    Weight transforms apply to constants: a later FoldConstant pre-packs them.
    The resulting 5-D conv2d calls are lowered by :class:`LegalizePackedOps`.
    Inference clean-up first: batch_norm decomposed, ``dropout(x)[0] -> x``. If ConvertLayout fails on the graph,
    each conv2d is packed on its own (layout_transforms around it).
    """

    def __init__(self, config: CpuScheduleConfig):
        self.config = config
        self.fallback: str | None = None  # why ConvertLayout failed (each conv packed alone)

    def transform_module(self, mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        config = self.config

        def layout_cb(call: relax.Call):
            if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.nn.conv2d":
                return {}
            layouts = conv2d_layouts(call, config)
            if layouts is None and call.attrs.data_layout == "NCHW" and call.attrs.kernel_layout == "OIHW":
                # Say NCHW explicitly: with no desired layout, conv2d's layout inference takes
                # its input's packed layout (NCHW8c) and fails on a grouped kernel.
                layouts = ["NCHW", "OIHW", "NCHW"]
            return {"relax.nn.conv2d": layouts} if layouts else {}

        # ConvertLayout cannot see through tuple-returning ops: decompose batch_norm (into a
        # constant scale + shift, which FoldConstant folds) and drop dropout first.
        mod = relax.transform.DecomposeOpsForInference()(mod)
        mod = relax.transform.FoldConstant()(FoldConstantNumpy()(_drop_dropout(mod)))
        try:
            # CSE: ConvertLayout transforms a value once per consumer (an input feeding a
            # conv and a residual add got two identical layout_transforms).
            return relax.transform.EliminateCommonSubexpr()(relax.transform.ConvertLayout({}, layout_cb)(mod))
        except Exception as exc:  # pylint: disable=broad-except; ConvertLayout cannot handle some graph: pack per conv
            # Correct but slow (a layout_transform pair and an unfused epilogue around every
            # conv: ResNet-50 ran 1.6x slower this way before SimplifyStackSum): say so.
            lines = [l.strip() for l in str(exc).strip().splitlines() if l.strip()]
            self.fallback = lines[-1] if lines else type(exc).__name__
            logging.getLogger("accelc.llvm_cpu").warning(
                "ConvertLayout failed (%s): each conv2d is packed on its own", self.fallback)
            rewriter = _PackEachConv(mod, config)
            for g_var, func in mod.functions_items():
                if isinstance(func, relax.Function):
                    rewriter.builder_.update_func(g_var, rewriter.visit_expr(func))
            return rewriter.builder_.get()


def _drop_dropout(mod: IRModule) -> IRModule:
    rewriter = _DropDropout(mod)
    for g_var, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(g_var, rewriter.visit_expr(func))
    return relax.transform.DeadCodeElimination()(rewriter.builder_.get())
