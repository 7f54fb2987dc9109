"""Schedule rule for the block-sparse (BSR) kernels of ``SparseRewrite``.

The kernels (``accelc.passes.sparse_kernels``) iterate over data-dependent block ranges
(``indptr``), which MetaSchedule's space generators cannot split or reorder; their schedule
is therefore a template whose knobs are the register tile: which axis goes into vector lanes
(``nvec``: the block's output channels, for blocks as tall as a vector; ``mvec``: rows of x)
and how many rows one tile holds. This rule re-emits the kernel with the tile derived from
the target (vector width: 16 fp32 lanes and 32 registers with AVX-512, 8 and 16 with AVX2,
4 and 16 for SSE/NEON) and marks it scheduled, so tuning never measures it on random
``indptr``/``indices`` (which would read out of bounds): the BSR arrays are constants of the
module, the kernel always runs the real sparsity pattern.

``bsr_space`` is the MetaSchedule search space of the same template (registered by
``search_space.register`` for blocks tagged ``sparse_kernels.BSR_RULE``): one knob, the
register tile (``plan_candidates``: ``nvec`` with 1..limit rows, per row-block or
tile-major, ``mvec`` with 1..limit vectors of rows; the default ``bsr_plan`` is one point), a ``sample_categorical`` recorded
as the block annotation ``PLAN_ANNOTATION``. The builder (``accelc/tuning/worker.py``) and
``ApplyTuningRecords`` turn the annotation into the kernel with ``realize_bsr``. The tuner
measures with the module's own BSR constants (``tasks.Task.arrays``), never random indices.
"""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.target import Target

from accelc.passes.sparse_kernels import (
    LANES_ANNOTATION, PLAN_ANNOTATION, BsrSpec, bsr_plan, bsr_primfunc, encode_plan, plan_candidates)

from .schedule_utils import CpuRule

BSR_ATTR = "accelc.bsr"


class _Scheduled:  # pylint: disable=too-few-public-methods
    """What ApplyCpuSchedules reads from a rule's result: ``.mod["main"]``."""

    def __init__(self, func: tirx.PrimFunc):
        self.mod = tvm.IRModule({"main": func})


class BsrKernel(CpuRule):
    """Register-tiled BSR matmul / 1x1 conv: vector accumulators across the block loop,
    parallel over row-blocks (``num-cores`` threads)."""

    name = "BsrKernel"

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or not func.attrs or BSR_ATTR not in func.attrs:
            return None
        config = self.config_for(target)
        spec = BsrSpec.from_attr(func.attrs[BSR_ATTR])
        plan = bsr_plan(spec, config.vector_lanes, config.num_vector_regs)
        tiled = bsr_primfunc(spec, plan)
        for key, value in func.attrs.items():
            tiled = tiled.with_attr(key, value)
        return _Scheduled(tiled.with_attr("accelc.bsr_tile", f"{plan.tile}:{plan.rows}"))


def bsr_space(sch, block) -> list:
    """Design space of a BSR workload: the register tile as one categorical knob."""
    from tvm import s_tir

    from .search_space import SPACE_ANNOTATION, _config, _seal

    config = _config()
    func = sch.mod["main"]
    spec = BsrSpec.from_attr(func.attrs[BSR_ATTR])
    plans = plan_candidates(spec, config.vector_lanes, config.num_vector_regs)
    codes = [encode_plan(p) for p in plans]
    # The default tile gets a larger share of the random samples: it is usually near the best.
    probs = [0.25] + [0.75 / (len(codes) - 1)] * (len(codes) - 1) if len(codes) > 1 else [1.0]
    code = sch.sample_categorical(codes, probs)
    sch.annotate(block, PLAN_ANNOTATION, code)
    sch.annotate(block, LANES_ANNOTATION, config.vector_lanes)
    sch.annotate(block, SPACE_ANNOTATION, "bsr")
    _seal(sch)
    assert isinstance(sch, s_tir.Schedule)
    return [sch]
