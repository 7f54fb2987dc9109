"""Schedule rule for depthwise conv2d in NCHW{c}c: padding computed per output row, in cache."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from . import compute
from .schedule_utils import CpuRule, find_rule_block, loop_extent, place_epilogue, producers_before, schedule_injective


class DepthwiseConv2dNCHWc(CpuRule):
    """depthwise_conv2d_nchwc (3x3 stride 1/2 in MobileNet) + fused epilogue (bias, ReLU6 clip).

    Depthwise convolution does ~9 FMAs per input element: it is memory-bound, and the generic
    conv schedule (a whole zero-padded copy of the input written at root, then read back) moved
    every input byte three times through memory. Here the padded input rows an output row needs
    are built under that row's loop (kh rows of ``W x block`` floats: L1-resident), so the input
    is read once from memory and the output written once.
    Tile: ``reg_n`` output pixels x one channel block (``block/lanes`` vectors) accumulated over
    kh x kw; (batch, channel chunk, output row) are fused and run in parallel.
    """

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        conv = find_rule_block(sch, compute.DEPTHWISE_CONV2D_NCHWC)
        if conv is None:
            return None
        config = self.config_for(target)
        reg_n = int(sch.get(conv).annotations["accelc.reg_n"])
        producers = producers_before(sch, conv)
        n, oc, oh, ow, ob, rh, rw = sch.get_loops(conv)
        xo, xi = sch.split(ow, [None, reg_n])
        sch.reorder(n, oc, oh, xo, rh, rw, xi, ob)
        outer = sch.fuse(n, oc, oh)
        if config.num_cores > 1:
            sch.parallel(outer)
        sch.unroll(xi)
        sch.vectorize(ob)
        pads = [b for b in producers if sch.get(b).name_hint == "data_pad"]
        for block in producers:
            if block in pads:
                continue
            schedule_injective(sch, block, config)
        for pad in pads:
            sch.compute_at(pad, outer, preserve_unit_loops=False)
            loops = sch.get_loops(pad)[1:]
            if loops and loop_extent(sch, loops[-1]) is not None:
                sch.vectorize(loops[-1])
        sch, _ = place_epilogue(sch, conv, xo, config)
        init = sch.decompose_reduction(conv, rh)
        init_loops = sch.get_loops(init)
        sch.vectorize(init_loops[-1])
        sch.unroll(init_loops[-2])
        return sch
