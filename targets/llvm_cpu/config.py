"""Hardware constants and schedule knobs of the LLVM CPU target.

Everything a tuner may later search lives in :class:`CpuScheduleConfig`; the defaults are
derived from the target (vector width, number of cores) by :func:`config_from_target`.
"""

from __future__ import annotations

import dataclasses

import tvm
from tvm.target import Target, codegen


@dataclasses.dataclass(frozen=True)
class CpuScheduleConfig:
    """Knobs of the default CPU schedules (all searchable by a tuner).

    vector_lanes:      fp32 lanes of one vector register (8 for AVX2, 16 for AVX-512).
    num_vector_regs:   architectural vector registers (16 ymm, 32 zmm).
    num_cores:         threads the outer parallel loop is cut for.
    channel_block:     largest channel block of the packed NCHW{c}c layout.
    conv_max_accum:    vector accumulators the conv micro-kernel keeps live; the register tile
                       is ``reg_n`` output pixels x ``oc_block / vector_lanes`` vectors.
    dense_block_n:     columns of one packed weight panel of dense/matmul (multiple of lanes).
    dense_max_accum:   vector accumulators of the dense micro-kernel (rows x panel vectors).
    unroll_kw:         unroll the kernel-width loop of conv (puts kw inside the ic block loop).
    conv_pass_bytes:   weights of one input-channel pass of the packed conv (they stay in L1
                       while every row of the pass reuses them; 0: no passes, the whole
                       reduction in each register tile; see schedule_conv2d._k_blocked).
    conv1x1_pixel_vecs: largest number of pixel vectors in the register tile of the NCHW
                       grouped 1x1 conv (``conv1x1_tile`` picks the tile: pixel vectors x
                       output channels, a divisor of the group's output channels).
    """

    vector_lanes: int = 8
    num_vector_regs: int = 16
    num_cores: int = 1
    channel_block: int = 16
    conv_max_accum: int = 12
    dense_block_n: int = 16
    dense_max_accum: int = 12
    unroll_kw: bool = True
    conv1x1_pixel_vecs: int = 8
    conv_pass_bytes: int = 24 * 1024

    def conv_reg_n(self, out_width: int, oc_block: int) -> int:
        """Output pixels per register tile: a divisor of ``out_width`` if a good one exists.

        Returns the width tile; when it does not divide ``out_width`` the compute pads the
        output width up to a multiple of it (the extra columns are computed and dropped), so
        the micro-kernel never carries a tail predicate.
        """
        vecs = max(1, oc_block // self.vector_lanes)
        limit = max(1, self.conv_max_accum // vecs)
        if out_width <= limit:
            return out_width
        # least padded width over tiles in [limit/2, limit]; ties go to the larger tile
        candidates = range((limit + 1) // 2, limit + 1)
        return min(candidates, key=lambda r: (-(-out_width // r) * r, -r))


    def conv_tile(self, out_width: int, oc_block: int, oc_chunks: int, *, pointwise: bool = False,
                  unpadded: bool = False) -> tuple[int, int]:
        """(pixels, output-channel chunks) of the conv register tile.

        The tile is ``pixels`` outputs of one row x ``chunks`` output-channel blocks of
        ``oc_block`` channels (``chunks`` divides ``oc_chunks``): each step of the reduction
        broadcasts ``pixels`` inputs and loads ``chunks * oc_block / lanes`` weight vectors for
        ``pixels * chunks * oc_block / lanes`` FMAs. With one chunk (the AVX-512 16c case)
        that is one load per FMA; deep layers of 7 or 14 pixels also leave too few
        accumulators to hide the FMA latency. The choice minimizes the modelled cycles per
        useful FMA: ``max(FMAs, loads, latency * FMA ports)`` per step (2 FMA and 2 load
        ports), times the share of padded columns; ties go to bigger tiles, then fewer chunks.

        ``pointwise`` (a 1x1 kernel: no kw loop unrolled, so no broadcasts kept live across
        it): the accumulators may take every register but the tile's weight vectors and one
        broadcast (SqueezeNet's 512 -> 64 @13: 13 x 2 = 26 accumulators, 298 GFLOP/s, against
        7 x 2 at 108). ``unpadded`` (the conv reads its input without padding): a width tile
        that does not divide the row costs a padded copy of the input and a crop the conv
        otherwise does not have, so such tiles cost twice (measured: SqueezeNet's squeeze
        convs @55 ran 11 x 1 at 150 GFLOP/s, the 19 x 1 the model chose at 75).
        """
        vpc = max(1, oc_block // self.vector_lanes)
        latency_fmas = 8  # 4-cycle FMA latency x 2 FMA ports: independent accumulators needed
        best = None
        for chunks in (c for c in range(1, 5) if oc_chunks % c == 0 and c * vpc <= self.conv_max_accum):
            budget = self.conv_max_accum
            if pointwise:
                budget = max(budget, self.num_vector_regs - chunks * vpc - 1)
            limit = max(1, budget // (chunks * vpc))
            for pixels in range(1, min(limit, out_width) + 1):
                padded = -(-out_width // pixels) * pixels
                fmas = pixels * chunks * vpc
                step = max(fmas, pixels + chunks * vpc, latency_fmas)
                cost = step * padded / (fmas * out_width)
                if unpadded and padded != out_width:
                    cost *= 2
                score = (cost, -fmas, chunks)
                if best is None or score < best[0]:
                    best = (score, pixels, chunks)
        return best[1], best[2]

    def conv1x1_tile(self, group_out: int, pixels: int) -> tuple[int, int]:
        """(output-channel rows, pixel vectors) of the NCHW grouped 1x1 GEMM's register tile.

        Per input channel the tile loads ``pixel vectors`` and broadcasts ``rows`` weights for
        ``rows x pixel vectors`` FMAs; rows divide the group's outputs (ShuffleNet's 34 a
        group allow 1, 2, 17 or 34, and a fixed 2-vector pixel tile left 2 x 2 = 4
        accumulators). Same model as :meth:`conv_tile`: cycles per step ``max(FMAs, loads,
        8)`` over useful FMAs, the padded pixels counted; ties go to bigger tiles.
        """
        best = None
        lanes = self.vector_lanes
        for vecs in range(1, self.conv1x1_pixel_vecs + 1):
            tile = vecs * lanes
            padded = -(-pixels // tile) * tile
            for rows in (r for r in range(1, group_out + 1) if group_out % r == 0):
                fmas = rows * vecs
                if fmas > self.conv_max_accum:
                    break
                step = max(fmas, rows + vecs, 8)
                score = (step * padded / (fmas * pixels), -fmas, vecs)
                if best is None or score < best[0]:
                    best = (score, rows, vecs)
        return best[1], best[2]

def _has(feature: str, target: Target) -> bool:
    try:
        return bool(codegen.target_has_features(feature, target))
    except Exception:  # pylint: disable=broad-except
        return False


def config_from_target(target: Target | None = None) -> CpuScheduleConfig:
    """Sensible defaults for ``target`` (or ``Target.current()``)."""
    target = target if target is not None else Target.current(allow_none=True)
    if target is None:
        return CpuScheduleConfig()
    if _has("avx512f", target):
        lanes, regs = 16, 32
    elif _has("avx2", target) or _has("avx", target):
        lanes, regs = 8, 16
    else:  # SSE / NEON: 128-bit registers
        lanes, regs = 4, 16
    cores = int(target.attrs.get("num-cores", 0) or 0) or 1
    # Leave registers for broadcast inputs and weight vectors (measured: more accumulators
    # than this spill in the unrolled-kw 3x3 kernel): 10 of 16 ymm, 24 of 32 zmm.
    accum = 10 if regs <= 16 else 24
    return CpuScheduleConfig(
        vector_lanes=lanes,
        num_vector_regs=regs,
        num_cores=cores,
        channel_block=16,
        conv_max_accum=accum,
        dense_block_n=max(16, 2 * lanes) if lanes <= 8 else 2 * lanes,
        dense_max_accum=accum,
    )


def host_target(num_cores: int | None = None) -> Target:
    """An LLVM target for this machine's CPU.

    ``{"kind": "llvm"}`` alone compiles for generic x86-64 (SSE2, no FMA): the schedules here
    are only fast with ``mcpu`` set to the real CPU.
    """
    import os  # pylint: disable=import-outside-toplevel

    cores = num_cores or len(os.sched_getaffinity(0))
    return tvm.target.Target(
        {"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu(), "num-cores": cores}
    )
