"""Schedule rule for batched matmul of two activations (attention: Q @ K^T, P @ V)."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from .config import CpuScheduleConfig
from .schedule_utils import CpuRule, all_blocks, loop_extent, place_epilogue, producers_before, schedule_injective

_REDUCE = 2  # IterVar.CommReduce


def _var_of(expr):
    return expr if isinstance(expr, tirx.Var) else None


def match_batch_matmul(sch: s_tir.Schedule):
    """The block ``C[b.., i, j] += A[b.., i, k] * B[b.., k, j]`` (fp32, B contiguous in j), or None.

    Exactly one reduction block in the function, iterators ``S..S S S R`` in that order; A and B
    may broadcast batch axes. Blocks tagged ``schedule_rule`` belong to other rules.
    """
    blocks = all_blocks(sch)
    reductions = [b for b in blocks if any(int(iv.iter_type) == _REDUCE for iv in sch.get(b).iter_vars)]
    if len(reductions) != 1:
        return None
    block = reductions[0]
    stmt = sch.get(block)
    if "schedule_rule" in stmt.annotations:
        return None
    kinds = [int(iv.iter_type) for iv in stmt.iter_vars]
    if len(kinds) < 3 or kinds[-1] != _REDUCE or any(k == _REDUCE for k in kinds[:-1]):
        return None
    store = stmt.body
    if not isinstance(store, tirx.BufferStore) or str(store.buffer.dtype) != "float32":
        return None
    value = store.value
    if not (isinstance(value, tirx.Add) and isinstance(value.b, tirx.Mul)):
        return None
    a, b = value.b.a, value.b.b
    if not (hasattr(a, "indices") and hasattr(b, "indices")) or len(a.indices) < 2 or len(b.indices) < 2:
        return None
    i, j, k = (iv.var for iv in stmt.iter_vars[-3:])
    ai, ak = (_var_of(x) for x in a.indices[-2:])
    bk, bj = (_var_of(x) for x in b.indices[-2:])
    if not (ai is not None and ai.same_as(i) and ak is not None and ak.same_as(k)):
        return None
    if not (bk is not None and bk.same_as(k) and bj is not None and bj.same_as(j)):
        return None
    loops = sch.get_loops(block)
    if len(loops) != len(kinds) or any(loop_extent(sch, l) is None for l in loops):
        return None
    return block


def matmul_tile(m: int, n: int, config: CpuScheduleConfig) -> tuple[int, int] | None:
    """(rows, columns) of the register tile: columns a multiple of the vector width dividing n
    (2 vectors if possible), rows the largest divisor of m the accumulator budget allows."""
    lanes = config.vector_lanes
    cols = next((c for c in (2 * lanes, lanes) if n % c == 0), None)
    if cols is None:
        return None
    budget = max(1, config.dense_max_accum // (cols // lanes))
    rows = max(r for r in range(1, min(budget, m) + 1) if m % r == 0)
    return rows, cols


class BatchMatmul(CpuRule):
    """Batched ``A[b, i, k] @ B[b, k, j]`` of two non-constant operands + fused epilogue.

    Tile: ``rows`` rows x ``cols`` columns (``cols/lanes`` vectors) held in registers over the
    whole k loop; per k, ``rows`` broadcasts of A and ``cols/lanes`` contiguous loads of B.
    (batch, row tile, column tile) are fused and run in parallel; the epilogue (the 1/sqrt(d)
    scale of attention, bias, ...) is applied to the register tile before the store.
    """

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        try:
            mm = match_batch_matmul(sch)
        except Exception:  # pylint: disable=broad-except
            return None
        if mm is None:
            return None
        config = self.config_for(target)
        *batch, i, j, k = sch.get_loops(mm)
        tile = matmul_tile(loop_extent(sch, i), loop_extent(sch, j), config)
        if tile is None:
            return None
        rows, cols = tile
        for block in producers_before(sch, mm):
            schedule_injective(sch, block, config)
        io, ii = sch.split(i, [None, rows])
        jo, jv, jl = sch.split(j, [None, cols // config.vector_lanes, config.vector_lanes])
        sch.reorder(*batch, io, jo, k, ii, jv, jl)
        outer = sch.fuse(*batch, io, jo)
        if config.num_cores > 1:
            sch.parallel(outer)
        sch.unroll(ii)
        sch.unroll(jv)
        sch.vectorize(jl)
        sch, _ = place_epilogue(sch, mm, outer, config)
        init = sch.decompose_reduction(mm, k)
        init_loops = sch.get_loops(init)
        sch.vectorize(init_loops[-1])
        for loop in init_loops[1:-1]:
            sch.unroll(loop)
        return sch
