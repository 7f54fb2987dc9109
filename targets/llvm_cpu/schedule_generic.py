"""Fallback CPU rule: injective ops, pooling and other reductions (memory-bound kernels)."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from .config import CpuScheduleConfig
from .schedule_utils import CpuRule, all_blocks, loop_extent, schedule_injective

_REDUCE = 2  # IterVar.CommReduce


def _is_reduction(sch, block) -> bool:
    return any(int(iv.iter_type) == _REDUCE for iv in sch.get(block).iter_vars)


def _loop_kinds(sch, block):
    """For each loop of ``block``: True if it only feeds reduction iters."""
    loops = sch.get_loops(block)
    block_stmt = sch.get(block)
    # iter_values of the realize, via the parent BlockRealize in the loop body
    body = sch.get(loops[-1]).body if loops else None
    realize = body if isinstance(body, s_tir.SBlockRealize) else None
    if realize is None:
        return None
    reduce_vars, spatial_vars = set(), set()
    for iv, value in zip(block_stmt.iter_vars, realize.iter_values):
        used = _vars(value)
        (reduce_vars if int(iv.iter_type) == _REDUCE else spatial_vars).update(id_(v) for v in used)
    kinds = []
    for loop in loops:
        var = id_(sch.get(loop).loop_var)
        if var in reduce_vars and var not in spatial_vars:
            kinds.append("R")
        elif var in spatial_vars and var not in reduce_vars:
            kinds.append("S")
        else:
            kinds.append("?")
    return kinds


def id_(var):
    return var.name if hasattr(var, "name") else str(var)


def _vars(expr):
    return tirx.analysis.undefined_vars(expr)


def _schedule_reduction(sch, block, config: CpuScheduleConfig) -> None:
    loops = sch.get_loops(block)
    kinds = _loop_kinds(sch, block)
    if kinds is None or "?" in kinds:
        return
    spatial = [l for l, k in zip(loops, kinds) if k == "S"]
    reduce = [l for l, k in zip(loops, kinds) if k == "R"]
    if not reduce:
        return
    extents = [loop_extent(sch, l) for l in loops]
    if any(e is None for e in extents):
        return
    inner_ext = loop_extent(sch, spatial[-1]) if spatial else None
    # Vectorize over the innermost spatial axis when it is the contiguous one of a packed
    # layout (NCHW{c}c pooling): reduction loops go outside it.
    vector_inner = (
        spatial and inner_ext is not None and 4 <= inner_ext <= 64
        and (_contiguous_inner(sch, block) or _strided_rows(sch, block, inner_ext))
    )
    if vector_inner:
        outer = spatial[:-1]
        sch.reorder(*outer, *reduce, spatial[-1])
    else:
        outer = spatial
        sch.reorder(*outer, *reduce)
    if outer:
        fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
        if config.num_cores > 1 and loop_extent(sch, fused) > 1:
            sch.parallel(fused)
    if vector_inner:
        sch.vectorize(spatial[-1])  # before decompose_reduction (it refuses a lane loop after)
        init = sch.decompose_reduction(block, reduce[0])
        sch.vectorize(sch.get_loops(init)[-1])


def _contiguous_inner(sch, block) -> bool:
    """The block's last iter is spatial and is the last index of its output and of every
    input (the channel block of NCHW{c}c pooling): lanes along it are contiguous loads."""
    stmt = sch.get(block)
    last = stmt.iter_vars[-1] if stmt.iter_vars else None
    if last is None or int(last.iter_type) == _REDUCE:
        # loops may list the reductions last; find the last spatial iter instead
        spatial = [iv for iv in stmt.iter_vars if int(iv.iter_type) != _REDUCE]
        if not spatial:
            return False
        last = spatial[-1]
    var = last.var
    regions = list(stmt.writes) + list(stmt.reads)
    return bool(regions) and all(
        r.region and isinstance(r.region[-1].min, tirx.Var) and r.region[-1].min.same_as(var)
        for r in regions
    )


def _strided_rows(sch, block, inner_ext: int) -> bool:
    """Pooling along NCHW rows with no border test (int8 max pooling, padded beforehand by
    ``LegalizeInt8Ops``): the innermost spatial iter indexes the last axis of the output and
    of every input (``s * w + rw``), and nothing is conditional. Vectorized along the row,
    each lane loads at stride ``s`` (ResNet-50's int8 3x3/2 pool in the model: 1.24 ms scalar
    with the border tests, 0.06 ms padded and vectorized)."""
    if inner_ext < 8:
        return False
    stmt = sch.get(block)
    spatial = [iv for iv in stmt.iter_vars if int(iv.iter_type) != _REDUCE]
    text = stmt.script()
    if not spatial or "if_then_else" in text or "T.Select" in text:
        return False
    var = spatial[-1].var
    regions = list(stmt.writes) + list(stmt.reads)
    return bool(regions) and all(
        r.region and any(v.same_as(var) for v in _vars(r.region[-1].min)) for r in regions
    )


class GenericCpu(CpuRule):
    """Inline injective producers, then parallelize/vectorize what remains at root.

    Covers elementwise/broadcast/layout_transform/concat functions and simple reductions
    (max/avg pooling in NCHW{c}c: vectorized over the channel block, global pooling,
    softmax): memory-bound kernels, where parallel outer loops + vector inner loops suffice.
    """

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc):
            return None
        config = self.config_for(target)
        sch = s_tir.Schedule(func)
        try:
            blocks = all_blocks(sch)
        except Exception:  # pylint: disable=broad-except
            return None
        if not blocks:
            return None
        for block in blocks[:-1]:
            if _is_reduction(sch, block):
                continue
            try:
                sch.compute_inline(block)
            except Exception:  # pylint: disable=broad-except
                pass
        for block in all_blocks(sch):
            if _is_reduction(sch, block):
                _schedule_reduction(sch, block, config)
            else:
                schedule_injective(sch, block, config)
        return sch
