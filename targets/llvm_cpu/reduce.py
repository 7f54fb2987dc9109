"""Schedule rule for row-wise normalizations (softmax, LayerNorm): one parallel row loop."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from .schedule_utils import CpuRule, all_blocks, loop_extent

_REDUCE = 2  # IterVar.CommReduce


def _row_shape(sch, block) -> tuple[list[int], bool] | None:
    """(extents of the loops over rows, is_reduction) of a block whose iterators are
    ``S..S`` (row axes then one inner axis) or ``S..S R`` (row axes, then the reduced axis)."""
    kinds = [int(iv.iter_type) for iv in sch.get(block).iter_vars]
    loops = sch.get_loops(block)
    extents = [loop_extent(sch, l) for l in loops]
    if len(loops) != len(kinds) or any(e is None for e in extents):
        return None
    if any(k == _REDUCE for k in kinds[:-1]) or any(k not in (0, _REDUCE) for k in kinds):
        return None
    return extents, kinds[-1] == _REDUCE


def _lane_partials(sch: s_tir.Schedule, block, lanes: int):
    """(schedule, rfactor block): ``block`` reduces a row as ``lanes`` partial results (one
    vector accumulator, ``[rows..., lanes]``), and then the lanes; (sch, None) when rfactor
    rejects it (the schedule is left as it was).

    A scalar reduction is a chain of dependent adds (4 cycles each): BERT's softmax rows of
    128 and LayerNorm rows of 768 spent most of their time there."""
    trial = sch.copy()
    try:
        loop = trial.get_loops(block)[-1]
        _, inner = trial.split(loop, [None, lanes])
        ndim = len(trial.get(block).writes[0].region)
        rf = trial.rfactor(inner, ndim)
    except Exception:  # pylint: disable=broad-except
        return sch, None
    return trial, rf


class RowReduce(CpuRule):
    """softmax / LayerNorm / fused row normalizations over the last axis.

    Match: every block is ``rows x inner`` (spatial), ``rows`` reduced over the last axis or
    one value per row (LayerNorm's mean),
    with the same row extents, at least one reduction, a spatial last block. Schedule: the
    output block's row loops are fused and run in parallel; every other block is computed at
    that row loop, so a row's max/sum/mean/variance and its exp or centered values live in
    cache-resident row buffers (nothing is recomputed, unlike inlining ``exp`` into both the
    sum and the division); spatial row loops are vectorized in whole vectors, and rows whose
    length is a multiple of the vector reduce into a vector of lane partials first
    (``_lane_partials``).
    """

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        try:
            blocks = all_blocks(sch)
        except Exception:  # pylint: disable=broad-except
            return None
        if len(blocks) < 2:
            return None
        shapes = [_row_shape(sch, b) for b in blocks]
        if any(s is None for s in shapes) or shapes[-1][1] or not any(s[1] for s in shapes):
            return None
        rows = shapes[-1][0][:-1]
        # a block is over rows x inner (or reduces inner), or holds one value a row (mean, rstd)
        if not rows or any(s[0][:-1] != rows and (s[1] or s[0] != rows) for s in shapes):
            return None
        for block in blocks:
            if "schedule_rule" in sch.get(block).annotations:
                return None
        config = self.config_for(target)
        lanes = config.vector_lanes
        partials = []  # rfactor blocks: a vector of lane partials per row
        for block, (extents, is_reduce) in zip(blocks, shapes):
            if is_reduce and extents[-1] % lanes == 0 and extents[-1] >= 2 * lanes:
                sch, rf = _lane_partials(sch, block, lanes)
                if rf is not None:
                    partials.append(rf)
        try:
            ordered = all_blocks(sch)
            row = sch.fuse(*sch.get_loops(ordered[-1])[:-1])
            for block in reversed(ordered[:-1]):
                sch.compute_at(block, row, preserve_unit_loops=False)
        except Exception:  # pylint: disable=broad-except; a dependency that is not row-local
            return None
        if config.num_cores > 1:
            sch.parallel(row)
        for rf in partials:  # compute_at gave the rf block (lanes, k-chunks) loops: swap them
            *_, lane, chunk = sch.get_loops(rf)
            sch.reorder(chunk, lane)
            sch.vectorize(lane)
            sch.decompose_reduction(rf, chunk)
        for block, (extents, is_reduce) in zip(blocks, shapes):
            if is_reduce or extents == rows:
                continue
            inner = sch.get_loops(block)[-1]
            if extents[-1] % lanes == 0:
                _, vec = sch.split(inner, [None, lanes])
                sch.vectorize(vec)
            elif extents[-1] <= 64:
                sch.vectorize(inner)
        return sch
