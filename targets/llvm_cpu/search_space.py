"""MetaSchedule search space around the llvm_cpu templates (the AutoTVM-template idea).

MetaSchedule's ``ApplyCustomRule`` (the first rule of the llvm space) schedules a block
annotated ``schedule_rule = R`` with the global function ``s_tir.meta_schedule.<key>.<R>``
for each target key (``cpu`` for llvm), see ``src/s_tir/meta_schedule/schedule_rule/
apply_custom_rule.cc``; every other rule skips annotated blocks. Registered here, for the
three kernels ``compute.py`` tags:

    accelc.llvm_cpu.conv2d_nchwc            register tile width  x  output-channel chunks kept
    accelc.llvm_cpu.depthwise_conv2d_nchwc      hot per input row  x  kw inside/outside the
                                                channel block; or (not depthwise) input-channel passes
                                                (chunks a pass x rows a block x tile width)
    accelc.llvm_cpu.dense_packed            rows x panels of the register tile  x  outer order
                                            (panel-major, row-major, K blocked for cache)
    accelc.llvm_cpu.conv2d_1x1_nchw         output-channel rows of the tile  x  outer order

The template is the default schedule's (same micro-kernel, epilogue in the register tile,
parallel outer loop); only its knobs are random variables: tile sizes are
``sample_perfect_tile`` (so MetaSchedule's ``MutateTileSize`` evolves them) and loop orders
are separate design spaces. The default schedule is one point of each space, so a space is a
few dozen points and the XGBoost model converges in tens of trials.

Why the knobs must be random variables and not Python choices: MetaSchedule samples new
points by replaying a design space's trace with fresh decisions, without re-running the rule;
Python branching on a sampled value would be frozen at the first sample.

After the template, every block of the function (root included) is annotated
``schedule_rule = "None"``: the other rules then leave the whole kernel alone
(``ParallelizeVectorizeUnroll`` would otherwise annotate the root and re-parallelize it).

``space_enabled(False)`` turns the rules off for one design-space generation: blocks are
unannotated, as for an unknown rule, and MetaSchedule's stock x86 rules schedule them (the
"stock" space that ``benchmarks/tune_curve.py`` compares against).
"""

from __future__ import annotations

import contextlib
import math

from tvm import s_tir
from tvm.target import Target

from accelc.passes.sparse_kernels import BSR_RULE

from . import compute, schedule_utils
from .config import CpuScheduleConfig, config_from_target, host_target
from .schedule_conv2d import conv_passes, rows_outer
from .schedule_utils import find_rule_block, loop_extent, producers_before, schedule_injective

TARGET_KEY = "cpu"
SPACE_ANNOTATION = "accelc.space"  # which design space (variant) a trace came from
_enabled = True
_wanted: list[int] | None = None  # innermost tile factors to aim for (record transfer)
_drawn = 0  # tile knobs drawn so far in the variant being built


@contextlib.contextmanager
def space_enabled(enabled: bool):
    """Within the block, the templates (True) or MetaSchedule's stock rules (False)."""
    global _enabled  # noqa: PLW0603  (one process-wide switch: rules are global functions)
    saved, _enabled = _enabled, enabled
    try:
        yield
    finally:
        _enabled = saved


@contextlib.contextmanager
def tile_choices(innermost: list[int]):
    """Within the block, tile knobs are not sampled: the i-th takes the perfect tile whose
    innermost factor is nearest (in ratio) to ``innermost[i]``; used to carry a tuned knob
    setting over to a kernel of another shape (``accelc/tuning/transfer.py``)."""
    global _wanted  # noqa: PLW0603
    saved, _wanted = _wanted, list(innermost)
    try:
        yield
    finally:
        _wanted = saved


def _tile(sch: s_tir.Schedule, loop, max_innermost: int) -> list:
    """A two-level perfect tile of ``loop``: sampled, or chosen by ``tile_choices``."""
    global _drawn  # noqa: PLW0603
    index, _drawn = _drawn, _drawn + 1
    decision = None
    if _wanted is not None:
        if index >= len(_wanted):
            raise ValueError("the knob setting has fewer tile knobs than this design space")
        extent = loop_extent(sch, loop)
        divisors = [d for d in range(1, min(extent, max_innermost) + 1) if extent % d == 0]
        inner = min(divisors, key=lambda d: (abs(math.log(d / max(1, _wanted[index]))), -d))
        decision = [extent // inner, inner]
    return sch.sample_perfect_tile(loop, n=2, max_innermost_factor=max_innermost, decision=decision)


def _config() -> CpuScheduleConfig:
    target = Target.current(allow_none=True)
    return config_from_target(target if target is not None else host_target())


def _seal(sch: s_tir.Schedule) -> None:
    """Mark every block scheduled so that no later MetaSchedule rule touches the kernel."""
    root = sch.get_sblock("root")
    for block in [root, *sch.get_child_blocks(root)]:
        if "schedule_rule" not in sch.get(block).annotations:
            sch.annotate(block, "schedule_rule", "None")


def place_epilogue(sch: s_tir.Schedule, main, tile_loop, config: CpuScheduleConfig, fuse: bool = True):
    """``schedule_utils.place_epilogue`` with every loop count independent of the tile knobs.

    A replayed trace must make the same loops at every step whatever its decisions, and
    ``reverse_compute_at(preserve_unit_loops=False)`` drops the tile's unit loops (a tile knob
    at 1), so a later ``get_loops`` would return fewer loops and the replay fails."""
    return schedule_utils.place_epilogue(sch, main, tile_loop, config, fuse, replayable=True)


def _variants(sch, names, build) -> list:
    """One design space per loop-order variant; a variant whose template fails is dropped."""
    global _drawn  # noqa: PLW0603
    out = []
    for name in names:
        _drawn = 0
        s = sch.copy()
        try:
            s = build(s, name)
        except Exception:  # noqa: BLE001  (e.g. an epilogue that cannot move into this tile)
            continue
        _seal(s)
        out.append(s)
    return out


# --------------------------------------------------------------------------------- conv2d
CONV_VARIANTS = ("k_passes", "kw_unrolled", "kw_outer")


def conv2d_nchwc_space(sch: s_tir.Schedule, block) -> list:
    """Packed (grouped or depthwise) conv2d: knobs ``oc_inner`` (output-channel chunks
    computed per input row, inside the parallel loop) and ``tile_w`` (pixels of the register
    tile, a divisor of the compute's ``reg_n``); the register tile's output-channel blocks
    are the compute's ``oc_vecs`` (fixed: the compute's padded width was chosen with them);
    variants put kw inside or outside the input-channel block loop, or (``k_passes``, the
    default schedule's form) run the input channels in passes of ``k_chunks`` over blocks of
    ``rows`` output rows, the tile accumulating into the output. The parallel loop is cut by
    output rows or by output-channel groups as the default schedule decides
    (``schedule_conv2d.rows_outer``: a property of the layer, not a knob, since a kernel
    timed alone cannot see what it buys, the next layer finding its rows in the same core's
    cache)."""
    config = _config()
    depthwise = str(sch.get(block).annotations["schedule_rule"]) == compute.DEPTHWISE_CONV2D_NCHWC
    name_hint = sch.get(block).name_hint

    def build(s, variant):
        conv = s.get_sblock(name_hint)
        reg_n = int(s.get(conv).annotations["accelc.reg_n"])
        s.annotate(conv, SPACE_ANNOTATION, variant)
        for producer in producers_before(s, conv):
            schedule_injective(s, producer, config)
        loops = s.get_loops(conv)
        if depthwise:
            n, oc, oh, ow, ob, rh, rw = loops
        else:
            n, oc, oh, ow, ob, rc, rh, rw, rb = loops
        oc_vecs = int(s.get(conv).annotations.get("accelc.oc_vecs", 1))
        by_rows = rows_outer(s, conv, config, depthwise)
        if variant == "k_passes":
            return _k_passes(s, conv, loops, reg_n, oc_vecs, config, by_rows)
        xo, xi = s.split(ow, [None, reg_n])
        oc, ocr = s.split(oc, [None, oc_vecs])  # the register tile's channel blocks (compute's choice)
        oco, oci = s.split(oc, _tile(s, oc, 16))
        xm, xr = s.split(xi, _tile(s, xi, reg_n))
        first, second = (oh, oco) if by_rows else (oco, oh)
        if depthwise:
            s.reorder(n, first, second, oci, xo, xm, rh, rw, xr, ocr, ob)
            reduce_outer = rh
        elif variant == "kw_unrolled":
            s.reorder(n, first, second, oci, xo, xm, rc, rh, rb, rw, xr, ocr, ob)
            s.unroll(rw)
            reduce_outer = rc
        else:
            s.reorder(n, first, second, oci, xo, xm, rc, rh, rw, rb, xr, ocr, ob)
            reduce_outer = rc
        outer = s.fuse(n, first, second)
        if config.num_cores > 1:
            s.parallel(outer)
        s.unroll(xr)
        s.unroll(ocr)
        s.vectorize(ob)
        s, _ = place_epilogue(s, conv, xo, config)
        init = s.decompose_reduction(conv, reduce_outer)
        init_loops = s.get_loops(init)
        s.vectorize(init_loops[-1])
        s.unroll(init_loops[-2])
        s.unroll(init_loops[-3])
        return s

    return _variants(sch, CONV_VARIANTS[1:2] if depthwise else CONV_VARIANTS, build)


def _k_passes(s, conv, loops, reg_n, oc_vecs, config, by_rows=False):
    """The default schedule's input-channel-pass form (``schedule_conv2d.conv_passes``) with
    knobs: output rows a parallel block, input-channel chunks a pass, pixels of the tile."""
    return conv_passes(s, conv, loops, reg_n, oc_vecs, config, rows=lambda oh: _tile(s, oh, 64),
                       chunks=lambda rc: _tile(s, rc, 64), tile=lambda xi: _tile(s, xi, reg_n), replayable=True,
                       by_rows=by_rows)


# ---------------------------------------------------------------------------------- dense
DENSE_VARIANTS = ("panel_major", "row_major", "k_blocked")


def dense_packed_space(sch: s_tir.Schedule, block) -> list:
    """Dense against packed panels: knobs ``rows`` and ``panels`` of the register tile
    (``rows * panels * bn / lanes`` accumulators); variants order the parallel outer loop
    panel-major or row-major, or block K (``k_inner`` elements) for the L1 cache."""
    config = _config()
    name_hint = sch.get(block).name_hint

    def build(s, variant):
        dense = s.get_sblock(name_hint)
        bn = int(s.get(dense).annotations["accelc.block_n"])
        s.annotate(dense, SPACE_ANNOTATION, variant)
        budget = max(1, config.dense_max_accum // max(1, bn // config.vector_lanes))
        for producer in producers_before(s, dense):
            schedule_injective(s, producer, config)
        *batch, n, k = s.get_loops(dense)
        m = s.fuse(*batch) if len(batch) > 1 else (batch[0] if batch else s.add_unit_loop(n))
        no, ni = s.split(n, [None, bn])
        po, pi = s.split(no, _tile(s, no, budget))
        mo, mi = s.split(m, _tile(s, m, budget))
        reduce_outer = k
        if variant == "k_blocked":
            ko, ki = s.split(k, _tile(s, k, 512))
            s.reorder(po, mo, ko, ki, mi, pi, ni)
            reduce_outer = ko
        elif variant == "row_major":
            s.reorder(mo, po, k, mi, pi, ni)
        else:
            s.reorder(po, mo, k, mi, pi, ni)
        outer = s.fuse(mo, po) if variant == "row_major" else s.fuse(po, mo)
        if config.num_cores > 1:
            s.parallel(outer)
        s.unroll(mi)
        s.unroll(pi)
        s.vectorize(ni)
        s, _ = place_epilogue(s, dense, outer, config)
        init = s.decompose_reduction(dense, reduce_outer)
        init_loops = s.get_loops(init)
        s.vectorize(init_loops[-1])
        for loop in init_loops[1:-1]:
            s.unroll(loop)
        return s

    return _variants(sch, DENSE_VARIANTS, build)


# ------------------------------------------------------------------------- grouped 1x1 conv
CONV1X1_VARIANTS = ("rows_outer", "pixels_outer")


def conv2d_1x1_nchw_space(sch: s_tir.Schedule, block) -> list:
    """Grouped 1x1 conv as a GEMM per group: knob ``rows`` (output channels of the tile, a
    divisor of the group's channels); variants order rows or pixel tiles outermost."""
    config = _config()
    name_hint = sch.get(block).name_hint

    def build(s, variant):
        gemm = s.get_sblock(name_hint)
        ann = s.get(gemm).annotations
        groups, tile = int(ann["accelc.groups"]), int(ann["accelc.pixel_tile"])
        s.annotate(gemm, SPACE_ANNOTATION, variant)
        for producer in producers_before(s, gemm):
            schedule_injective(s, producer, config)
        n, o, p, rc = s.get_loops(gemm)
        og = loop_extent(s, o) // groups
        limit = max(1, config.conv_max_accum // max(1, tile // config.vector_lanes))
        g, oin = s.split(o, [groups, og])
        oo, oi = s.split(oin, _tile(s, oin, limit))
        po, pv, pl = s.split(p, [None, tile // config.vector_lanes, config.vector_lanes])
        if variant == "rows_outer":
            s.reorder(n, g, oo, po, rc, oi, pv, pl)
            outer = s.fuse(n, g, oo, po)
        else:
            s.reorder(n, g, po, oo, rc, oi, pv, pl)
            outer = s.fuse(n, g, po, oo)
        if config.num_cores > 1:
            s.parallel(outer)
        s.unroll(oi)
        s.unroll(pv)
        s.vectorize(pl)
        width, pixels = int(ann["accelc.width"]), int(ann["accelc.pixels"])
        box = tile % width == 0 and pixels % tile == 0
        s, _ = place_epilogue(s, gemm, outer, config, fuse=box)
        init = s.decompose_reduction(gemm, rc)
        init_loops = s.get_loops(init)
        s.vectorize(init_loops[-1])
        for loop in init_loops[1:-1]:
            s.unroll(loop)
        return s

    return _variants(sch, CONV1X1_VARIANTS, build)


SPACES = {
    compute.CONV2D_NCHWC: conv2d_nchwc_space,
    compute.DEPTHWISE_CONV2D_NCHWC: conv2d_nchwc_space,
    compute.DENSE_PACKED: dense_packed_space,
    compute.CONV2D_1X1_NCHW: conv2d_1x1_nchw_space,
    BSR_RULE: lambda sch, block: bsr_space(sch, block),  # targets/llvm_cpu/sparse.py
}


def _dispatch(space):
    def apply(sch, block):
        if not _enabled:  # stock space: as for an unknown rule, drop the tag and let MS schedule it
            sch.unannotate(block, "schedule_rule")
            return [sch]
        if find_rule_block(sch, str(sch.get(block).annotations["schedule_rule"])) is None:
            return [sch]  # several tagged blocks in one kernel: not a template we know
        spaces = space(sch, block)
        if not spaces:  # the template does not apply: the stock rules get the block
            sch.unannotate(block, "schedule_rule")
            return [sch]
        return spaces

    return apply


def bsr_space(sch, block):
    from .sparse import bsr_space as space  # sparse.py imports this module's helpers

    return space(sch, block)


def register() -> None:
    """Register the rules as MetaSchedule custom rules (idempotent)."""
    import tvm_ffi

    for rule, space in SPACES.items():
        tvm_ffi.register_global_func(f"s_tir.meta_schedule.{TARGET_KEY}.{rule}", _dispatch(space), override=True)
