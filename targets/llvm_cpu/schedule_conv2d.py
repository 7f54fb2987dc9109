"""Schedule rules for packed conv2d (NCHW{c}c): register-blocked FMA micro-kernel."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from . import compute
from .schedule_utils import (
    CpuRule,
    find_rule_block, loop_extent, place_epilogue, producers_before, schedule_injective,
)


class Conv2dNCHWc(CpuRule):
    """conv2d_nchwc (incl. grouped) + fused epilogue.

    Tile: ``reg_n`` output pixels of one row x ``oc_vecs`` output-channel blocks
    (``oc_vecs * oc_block/lanes`` vectors, both from :meth:`CpuScheduleConfig.conv_tile`):
    the accumulators stay in registers across the whole reduction (input-channel chunks, kh,
    kw, channels of the block); the inner step is one broadcast of an input pixel shared by
    the tile's weight vectors. Outer loops (batch, oc chunk, output
    row) are fused and run in parallel; the epilogue (bias, relu, residual add, crop) is
    computed from the register tile before it is stored.
    """

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        conv = find_rule_block(sch, compute.CONV2D_NCHWC)
        depthwise = False
        if conv is None:
            conv = find_rule_block(sch, compute.DEPTHWISE_CONV2D_NCHWC)
            depthwise = True
        if conv is None:
            return None
        config = self.config_for(target)
        ann = sch.get(conv).annotations
        reg_n = int(ann["accelc.reg_n"])
        oc_vecs = int(ann.get("accelc.oc_vecs", 1))
        for block in producers_before(sch, conv):
            schedule_injective(sch, block, config)
        loops = sch.get_loops(conv)
        if depthwise:
            n, oc, oh, ow, ob, rh, rw = loops
        else:
            n, oc, oh, ow, ob, rc, rh, rw, rb = loops
        xo, xi = sch.split(ow, [None, reg_n])
        oc, oci = sch.split(oc, [None, oc_vecs])
        if depthwise:
            sch.reorder(n, oc, oh, xo, rh, rw, xi, oci, ob)
            reduce_outer = rh
        elif config.unroll_kw:
            sch.reorder(n, oc, oh, xo, rc, rh, rb, rw, xi, oci, ob)
            sch.unroll(rw)
            reduce_outer = rc
        else:
            sch.reorder(n, oc, oh, xo, rc, rh, rw, rb, xi, oci, ob)
            reduce_outer = rc
        outer = sch.fuse(n, oc, oh)
        if config.num_cores > 1:
            sch.parallel(outer)
        sch.unroll(xi)
        sch.unroll(oci)
        sch.vectorize(ob)
        sch, _ = place_epilogue(sch, conv, xo, config)
        init = sch.decompose_reduction(conv, reduce_outer)
        init_loops = sch.get_loops(init)
        sch.vectorize(init_loops[-1])
        sch.unroll(init_loops[-2])
        sch.unroll(init_loops[-3])
        return sch


class Conv2d1x1NCHW(CpuRule):
    """conv2d_1x1_nchw (grouped 1x1 conv as a GEMM per group, vectorized over pixels) + epilogue.

    Tile: ``rows`` output channels of one group x ``pixel_tile`` pixels (``pixel_tile/lanes``
    vectors; both from :meth:`CpuScheduleConfig.conv1x1_tile`): per input channel,
    ``pixel_tile/lanes`` vector loads shared by the rows and one weight broadcast per row. ``rows`` divides the group's output channels, so the input row
    ``g(o) * cg + c`` is the same for the whole tile. (batch, group, row tile, pixel tile) are
    fused and run in parallel.
    """

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        gemm = find_rule_block(sch, compute.CONV2D_1X1_NCHW)
        if gemm is None:
            return None
        config = self.config_for(target)
        ann = sch.get(gemm).annotations
        groups, tile = int(ann["accelc.groups"]), int(ann["accelc.pixel_tile"])
        for block in producers_before(sch, gemm):
            schedule_injective(sch, block, config)
        n, o, p, rc = sch.get_loops(gemm)
        og = loop_extent(sch, o) // groups
        rows = int(ann.get("accelc.rows", 0))
        if rows <= 0 or og % rows:
            limit = max(1, config.conv_max_accum // max(1, tile // config.vector_lanes))
            rows = max(r for r in range(1, min(limit, og) + 1) if og % r == 0)
        g, oin = sch.split(o, [groups, og])
        oo, oi = sch.split(oin, [None, rows])
        po, pv, pl = sch.split(p, [None, tile // config.vector_lanes, config.vector_lanes])
        sch.reorder(n, g, oo, po, rc, oi, pv, pl)
        outer = sch.fuse(n, g, oo, po)
        if config.num_cores > 1:
            sch.parallel(outer)
        sch.unroll(oi)
        sch.unroll(pv)
        sch.vectorize(pl)
        # the epilogue (in (h, w)) fits in the tile only if the tile is whole rows, none padded
        width, pixels = int(ann["accelc.width"]), int(ann["accelc.pixels"])
        box = tile % width == 0 and pixels % tile == 0
        sch, _ = place_epilogue(sch, gemm, outer, config, fuse=box)
        init = sch.decompose_reduction(gemm, rc)
        init_loops = sch.get_loops(init)
        sch.vectorize(init_loops[-1])
        for loop in init_loops[1:-1]:
            sch.unroll(loop)
        return sch
