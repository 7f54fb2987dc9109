"""Schedule rules for packed conv2d (NCHW{c}c): register-blocked FMA micro-kernel."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from . import compute
from .schedule_utils import (
    CpuRule,
    find_rule_block, inline_epilogue, loop_extent, place_epilogue, producers_before, schedule_injective,
)


class Conv2dNCHWc(CpuRule):
    """conv2d_nchwc (incl. grouped) + fused epilogue.

    Tile: ``reg_n`` output pixels of one row x ``oc_vecs`` output-channel blocks
    (``oc_vecs * oc_block/lanes`` vectors, both from :meth:`CpuScheduleConfig.conv_tile`):
    the accumulators stay in registers across the whole reduction (input-channel chunks, kh,
    kw, channels of the block); the inner step is one broadcast of an input pixel shared by
    the tile's weight vectors. Outer loops (batch, oc chunk, output
    row; or batch, output row, oc chunk: :func:`rows_outer`) are fused and run in parallel; the epilogue (bias, relu, residual add, crop) is
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
        by_rows = rows_outer(sch, conv, config, depthwise)
        if not depthwise and config.unroll_kw:
            kblocked = _k_blocked(sch, conv, loops, reg_n, oc_vecs, config, by_rows)
            if kblocked is not None:
                return kblocked
        xo, xi = sch.split(ow, [None, reg_n])
        oc, oci = sch.split(oc, [None, oc_vecs])
        first, second = (oh, oc) if by_rows else (oc, oh)
        if depthwise:
            sch.reorder(n, first, second, xo, rh, rw, xi, oci, ob)
            reduce_outer = rh
        elif config.unroll_kw:
            sch.reorder(n, first, second, xo, rc, rh, rb, rw, xi, oci, ob)
            sch.unroll(rw)
            reduce_outer = rc
        else:
            sch.reorder(n, first, second, xo, rc, rh, rw, rb, xi, oci, ob)
            reduce_outer = rc
        outer = sch.fuse(n, first, second)
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


def rows_outer(sch, conv, config, depthwise: bool = False) -> bool:
    """Cut the parallel loop by output rows (each core takes a band of rows, all output
    channels) instead of by output channels, when the layer's activations outweigh its
    weights (weights <= 2 x (input + output) elements).

    What a core wrote stays in its own L2 for the next layer: cut by rows, the next layer's
    core reads the rows it produced itself (give or take a 3x3 halo row); cut by output
    channels, every core reads every input channel, half of them from the other core's
    cache. Measured on ResNet-50 in context (per-kernel A/B in one process): the 56x56 and
    28x28 layers took 0.67-0.94x the time cut by rows, but the weight-heavy layers (3x3 512
    @7: 9.4 MB of weights for 100 KB of activations) 1.6-2.3x, every band reading every
    weight, so those keep the channel cut. Depthwise weights are tiny: always rows."""
    if config.num_cores <= 1:
        return False
    if depthwise:
        return True
    block = sch.get(conv)
    out = block.writes[0].source
    weights = acts = 0
    for region in block.reads:
        count = _elements(region.source)
        if count is None:
            return False
        if len(region.source.shape) == 6:  # the packed kernel; data is NCHW{c}c (rank 5)
            weights += count
        elif not region.source.same_as(out):
            acts += count
    written = _elements(out)
    return written is not None and weights <= 2 * (acts + written)


def _elements(buf) -> int | None:
    total = 1
    for dim in buf.shape:
        if not isinstance(dim, (int, tirx.IntImm)):
            return None
        total *= int(dim)
    return total


def _k_blocked(sch, conv, loops, reg_n, oc_vecs, config, by_rows=False):
    """The conv with its input channels in passes, MLAS-style (None if not applicable).

    Order: (batch, oc group, row block) in parallel (``by_rows``: (batch, row block, oc
    group), with at least a block of rows per core; see :func:`rows_outer`), then per pass of ``kb`` input-channel
    chunks every output row and register tile of the block, accumulating into the output;
    the epilogue runs on the group's rows after the last pass. A pass's weights
    (``oc_vecs x kb x kh x kw`` 16x16 blocks, <= ``config.conv_pass_bytes``) stay in L1 for all
    the rows instead of streaming from L2 for every tile (the whole reduction a tile):
    measured 1.1-1.4x per ResNet-50 layer alone (3x3 256->256 @14: 208 -> 274-299 GFLOP/s),
    ResNet-50 whole 1.15x. ``config.conv_pass_bytes`` 0 turns it off."""
    if config.conv_pass_bytes <= 0:
        return None
    n, oc, oh, ow, ob, rc, rh, rw, rb = loops
    ext = {name: loop_extent(sch, l) for name, l in zip(("oc", "oh", "ow", "ob", "rc", "rh", "rw", "rb"), loops[1:])}
    if None in ext.values():
        return None
    per_chunk = oc_vecs * ext["rh"] * ext["rw"] * ext["rb"] * ext["ob"] * 4
    kb = max([d for d in range(1, ext["rc"] + 1) if ext["rc"] % d == 0 and d * per_chunk <= config.conv_pass_bytes] or [1])
    if kb >= ext["rc"]:
        return None  # one pass: the register-tile schedule is the same thing
    groups = ext["oc"] // oc_vecs
    want = max(1, -(-4 * config.num_cores // groups))
    if by_rows:
        want = max(want, config.num_cores)
    row_blocks = min((d for d in range(1, ext["oh"] + 1) if ext["oh"] % d == 0 and d >= want), default=ext["oh"])
    trial = sch.copy()
    try:
        conv_passes(trial, conv, loops, reg_n, oc_vecs, config, rows=[row_blocks, None], chunks=[None, kb],
                    by_rows=by_rows)
    except Exception:  # pylint: disable=broad-except
        return None
    return trial


def conv_passes(sch, conv, loops, reg_n, oc_vecs, config, *, rows, chunks, tile=None, replayable=False,
                by_rows=False):
    """Schedule ``conv`` in the input-channel-pass form (see ``_k_blocked``). Split factors,
    each a list or a function of the loop that returns one: ``rows`` of the output rows (row
    blocks x rows a block), ``chunks`` of the input-channel chunks (passes x chunks a pass)
    and, optionally, ``tile`` of the register tile's ``reg_n`` pixels; ``by_rows`` puts the
    row blocks outside the output-channel groups in the parallel loop. Concrete factors for
    the default schedule; sampled ones and ``replayable`` (unit loops kept) for the tuning
    space (``search_space._k_passes``)."""

    def factors(spec, loop):
        return spec(loop) if callable(spec) else spec

    n, oc, oh, ow, ob, rc, rh, rw, rb = loops
    xo, xi = sch.split(ow, [None, reg_n])
    oco, oci = sch.split(oc, [None, oc_vecs])
    rbo, rbi = sch.split(oh, factors(rows, oh))
    rco, rci = sch.split(rc, factors(chunks, rc))
    pixels = [xi] if tile is None else list(sch.split(xi, factors(tile, xi)))
    first, second = (rbo, oco) if by_rows else (oco, rbo)
    sch.reorder(n, first, second, rco, rbi, xo, *pixels[:-1], rci, rh, rb, rw, pixels[-1], oci, ob)
    outer = sch.fuse(n, first, second)
    if config.num_cores > 1:
        sch.parallel(outer)
    sch.unroll(rw)
    sch.unroll(pixels[-1])
    sch.unroll(oci)
    sch.vectorize(ob)
    epilogue = inline_epilogue(sch, conv)
    if epilogue:
        for block in epilogue[:-1]:
            schedule_injective(sch, block, config)
        sch.reverse_compute_at(epilogue[-1], outer, preserve_unit_loops=replayable)
        sch.vectorize(sch.get_loops(epilogue[-1])[-1])
    sch.decompose_reduction(conv, rco)
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
        kc = _gemm_passes(sch, rc, rows, tile, config)
        if kc is not None:
            passes = _k_blocked_gemm(sch, gemm, (n, g, oo, oi, po, pv, pl, rc), kc, config)
            if passes is not None:
                return passes
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


def _gemm_passes(sch, rc, rows, tile, config) -> int | None:
    """Input channels a pass of the NCHW 1x1 GEMM (``None``: one pass). A pass's weight
    panel (``rows`` x chunk) stays in L1 while every pixel tile of the row tile reuses it;
    the input panels of the pass (all pixel tiles) come from L2."""
    if config.conv_pass_bytes <= 0:
        return None
    k = loop_extent(sch, rc)
    fits = [d for d in range(config.vector_lanes, k, config.vector_lanes)
            if k % d == 0 and d * (rows + tile) * 4 <= config.conv_pass_bytes]
    return max(fits) if fits else None


def _k_blocked_gemm(sch, gemm, loops, kc, config):
    """Conv2d1x1NCHW in input-channel passes of ``kc`` (SqueezeNet's 512 -> 1000 conv10:
    a 20-row tile's weights for all 512 channels are 40 KiB, read again for each of the 11
    pixel tiles; by passes of 128 channels they stay in L1): (batch, group, row tile) in
    parallel, then per pass every pixel tile, accumulating into the GEMM's output; the
    epilogue runs after the GEMM. ``loops``: the rule's tile loops, split, not yet ordered;
    None (``sch`` untouched) if a primitive fails."""
    n, g, oo, oi, po, pv, pl, rc = loops
    trial = sch.copy()
    try:
        rco, rci = trial.split(rc, [None, kc])
        trial.reorder(n, g, oo, rco, po, rci, oi, pv, pl)
        outer = trial.fuse(n, g, oo)
        if config.num_cores > 1:
            trial.parallel(outer)
        trial.unroll(oi)
        trial.unroll(pv)
        trial.vectorize(pl)
        # the epilogue reads the flattened pixels back as (h, w): as its own parallel loop nest
        # (reverse_compute_at's region inference kept 7 of SqueezeNet's 13 columns when the
        # padded pixel count, 176, is no multiple of the width)
        for block in inline_epilogue(trial, gemm):
            schedule_injective(trial, block, config)
        trial.decompose_reduction(gemm, rco)
    except Exception:  # pylint: disable=broad-except
        return None
    return trial
