"""Schedule rule for dense/matmul against a pre-packed weight (``Wp[N/bn, K, bn]``)."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from . import compute
from .config import CpuScheduleConfig
from .schedule_utils import CpuRule, find_rule_block, loop_extent, place_epilogue, producers_before, schedule_injective


def _best_divisor(n: int, limit: int) -> int:
    """Largest divisor of n in [limit/2, limit], else limit (the split then has a tail)."""
    if n <= limit:
        return n
    for r in range(limit, (limit + 1) // 2 - 1, -1):
        if n % r == 0:
            return r
    return limit


def dense_tile(m: int, npanels: int, block_n: int, config: CpuScheduleConfig) -> tuple[int, int]:
    """(rows, panels) of the register tile: rows x panels x block_n/lanes accumulators.

    Wide rather than tall: 4 rows of A x as many panels as the accumulator budget allows
    (AVX-512: 4 x 3 panels of 32 = 24 accumulators; per k 4 broadcasts and 6 panel loads for
    24 FMAs). Measured on BERT's layer (128 x 768 x {768, 3072} and 128 x 3072 x 768), whole
    model against onnxruntime in one run: 8 rows x 1 panel (the tallest tile, the old default)
    1.29x slower than 4 x 3; 4 x 2 1.08x; 3 x 4 and 2 x 6 slower still (ragged rows, too few
    broadcasts to hide the panel loads).
    """
    vecs = max(1, block_n // config.vector_lanes)
    budget = max(1, config.dense_max_accum // vecs)
    rows = _best_divisor(m, min(4, budget)) if m >= 4 else m
    panels = max(1, budget // rows)
    for p in range(min(panels, npanels), 0, -1):
        if npanels % p == 0:
            return rows, p
    return rows, 1


class DensePacked(CpuRule):
    """dense_packed + fused epilogue.

    Tile: ``rows`` rows of A x ``panels`` weight panels of ``bn`` columns held in
    ``rows * panels * bn / lanes`` vector accumulators over the whole K loop; per k: ``rows``
    broadcasts of A and ``panels * bn / lanes`` contiguous panel loads. Row/panel tiles are
    fused and run in parallel; the epilogue (bias, activation, crop) runs on the register tile.
    """

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        dense = find_rule_block(sch, compute.DENSE_PACKED)
        if dense is None:
            return None
        config = self.config_for(target)
        bn = int(sch.get(dense).annotations["accelc.block_n"])
        for block in producers_before(sch, dense):
            schedule_injective(sch, block, config)
        *batch, n, k = sch.get_loops(dense)
        m = sch.fuse(*batch) if len(batch) > 1 else (batch[0] if batch else sch.add_unit_loop(n))
        m_ext = loop_extent(sch, m)
        n_ext = loop_extent(sch, n)
        rows, panels = dense_tile(m_ext, n_ext // bn, bn, config)
        no, ni = sch.split(n, [None, bn])
        po, pi = sch.split(no, [None, panels])
        mo, mi = sch.split(m, [None, rows])
        sch.reorder(po, mo, k, mi, pi, ni)
        outer = sch.fuse(po, mo)
        if config.num_cores > 1:
            sch.parallel(outer)
        sch.unroll(mi)
        sch.unroll(pi)
        sch.vectorize(ni)
        sch, _ = place_epilogue(sch, dense, outer, config)
        init = sch.decompose_reduction(dense, k)
        init_loops = sch.get_loops(init)
        sch.vectorize(init_loops[-1])
        for loop in init_loops[1:-1]:
            sch.unroll(loop)
        return sch
