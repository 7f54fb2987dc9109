"""Shared helpers for the VTA tests: configs, token sync, exact accumulator read-back."""

from __future__ import annotations

import numpy as np

from accelc.targets.vta import DramImage, MemType, ProgramBuilder, Stage, Uop, VTAConfig, PRESETS
from accelc.targets.vta.isa import AluOp
from accelc.targets.vta.reference import wrap

# Non-default configs every functional test should survive (no hard-coded 16 / int8 / batch 1).
CONFIGS = {
    "1x16_i8w8a32": VTAConfig(),
    "2x8_i8w8a32": PRESETS["2x8_i8w8a32_15_15_16_17"],
    "1x8x16_i8w8a32": VTAConfig(LOG_BLOCK_IN=3, LOG_INP_BUFF_SIZE=14, LOG_WGT_BUFF_SIZE=17),
    "1x16_i16w16a32": VTAConfig(LOG_INP_WIDTH=4, LOG_WGT_WIDTH=4, LOG_INP_BUFF_SIZE=16,
                                LOG_WGT_BUFF_SIZE=19),
}

LOAD, COMPUTE, STORE = Stage.LOAD, Stage.COMPUTE, Stage.STORE


def sync(b: ProgramBuilder, src: Stage, dst: Stage) -> None:
    """``dst`` waits for everything emitted so far on ``src``."""
    b.dep_push(src, dst)
    b.dep_pop(src, dst)


def rand_int(rng: np.random.Generator, bits: int, shape) -> np.ndarray:
    return rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=shape, dtype=np.int64)


class ExactReadback:
    """Recover full-width accumulator rows through the truncating STORE: store the low
    OUT-width bits, SHR by the OUT width, repeat (acc_width / out_width planes)."""

    def __init__(self, cfg: VTAConfig, img: DramImage, b: ProgramBuilder, uop_slot: int | None = None):
        self.cfg, self.img, self.b = cfg, img, b
        self.uop_slot = cfg.uop_depth - 1 if uop_slot is None else uop_slot
        self.planes = cfg.acc_width // cfg.out_width

    def emit(self, sram_base: int, n: int) -> list[int]:
        """Instructions storing acc rows [sram_base, sram_base + n); returns the DRAM planes."""
        cfg, b = self.cfg, self.b
        bases = [self.img.alloc(MemType.OUT, n) for _ in range(self.planes)]
        b.load(MemType.UOP, self.uop_slot, self.img.put(MemType.UOP, [Uop(dst=sram_base)]), 1, 1)
        for k, base in enumerate(bases):
            sync(b, COMPUTE, STORE)
            b.store(sram_base, base, 1, n)
            sync(b, STORE, COMPUTE)
            if k + 1 < self.planes:
                b.alu(AluOp.SHR, self.uop_slot, self.uop_slot + 1, 1, n, imm=cfg.out_width,
                      dst_factor=(0, 1))
        return bases

    def read(self, bases: list[int], n: int, dram: np.ndarray) -> np.ndarray:
        ob = self.cfg.out_width
        total = np.zeros((n,) + self.cfg.acc_elem_shape, np.int64)
        for k, base in enumerate(bases):
            plane = self.img.read(MemType.OUT, base, n, data=dram).astype(np.int64) & ((1 << ob) - 1)
            total |= plane << (k * ob)
        return wrap(total, self.cfg.acc_width)
