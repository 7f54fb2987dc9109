"""Lowering a tiled layer to a VTA instruction stream, with double buffering.

SRAM layout (``vt`` virtual threads, each owning ``1/vt`` of inp/wgt and of the accumulator
rows below the constants):

    inp[thread]  ic * HpWp + y * Wp + x          (one 2-D LOAD per input block; borders padded
                                                   by the LOAD's zero-padding fields)
    wgt[thread]  (oc * ic_n + ic) * KH*KW + dy * KW + dx   (one LOAD per tile: rows = oc blocks)
    acc[thread]  oc * OHWt + y * ow_n + x         (STORE reads rows of ow_n, one per oc block)
    acc[const]   2 * OC_blocks rows: rounding bias (+ bias) per channel, then shift per channel

Work is a list of *units* (one output tile x one input-channel step). Unit ``j`` loads into
inp/wgt half ``j % vt``; output tile ``t`` accumulates in acc half ``t % vt``. Tokens:

    load j     pops g2l (compute of unit j-vt released the half), pushes l2g
    compute j  pops l2g; first step of a tile: pops s2g (store of tile t-vt drained the acc
               half), resets; GEMM; pushes g2l if unit j+vt loads; last step: 4 ALU passes,
               pushes g2s
    store t    pops g2s, stores, pushes s2g if tile t+vt exists

A unit whose input and weight tiles are already in its half (single reduction step, same
tile as the thread's previous unit) loads nothing and skips both tokens. Stores are emitted
``vt-1`` tiles late so a full store command queue never holds fetch while the next loads
wait to be dispatched (the fetch unit dispatches in program order). Every token is popped
by an instruction after its push in program order, so the stream cannot deadlock on the
command queues.

Micro-op kernels (GEMM: one micro-op per (ic, dy, dx, oc[, x]); ALU: one) are put in DRAM
once and loaded with ``LOAD UOP`` on a miss of a compile-time cache of the micro-op buffer
(VTA runtime's ``UopQueue``; the compute engine is in order, so overwriting a kernel that an
earlier GEMM used is safe).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import VTAConfig, VTAError
from .isa import AluOp, MemType, ProgramBuilder, Stage
from .planner import (Budget, Problem, Tile, TilePlan, check_plan, input_window, tiles_of, units_of,
                      uop_width)
from .simulator import DramImage

LOAD, COMPUTE, STORE = Stage.LOAD, Stage.COMPUTE, Stage.STORE


@dataclass(frozen=True)
class DramBases:
    """Element indices of the layer's DRAM regions (see ``layer.py`` for their layouts)."""

    inp: int  # (n_blocks, IC_blocks, H, W) input elements
    wgt: int  # (OC_blocks, IC_blocks, KH, KW) weight elements
    const: int  # 2 * OC_blocks accumulator elements
    out: int  # (n_blocks, OC_blocks, OH, OW) output elements


def encode_kernel(cfg: VTAConfig, dst, src=0, wgt=0) -> np.ndarray:
    """Micro-ops as ``uint32`` words from index arrays (vectorized ``isa.encode_uop``)."""
    dst, src, wgt = np.broadcast_arrays(*(np.asarray(v, np.int64).reshape(-1) for v in (dst, src, wgt)))
    layout = cfg.layouts["uop"]
    word = np.zeros(dst.shape, np.int64)
    for name, values in (("dst", dst), ("src", src), ("wgt", wgt)):
        fl = layout[name]
        if values.size and (values.min() < 0 or values.max() >= 1 << fl.width):
            raise VTAError(f"micro-op {name} index {int(values.max())} does not fit {fl.width} bits")
        word |= values << fl.offset
    return word.astype(np.uint32)


class UopCache:
    """Compile-time model of the micro-op buffer: kernels stay resident until it is full, then
    the buffer is reused from slot 0."""

    def __init__(self, cfg: VTAConfig, img: DramImage, b: ProgramBuilder):
        self.cfg, self.img, self.b = cfg, img, b
        self.dram: dict[bytes, int] = {}
        self.resident: dict[bytes, int] = {}
        self.next = 0

    def slot(self, kernel: np.ndarray) -> tuple[int, int]:
        """``(uop_bgn, uop_end)`` of ``kernel`` (encoded words), loading it first if needed."""
        key, n = kernel.tobytes(), int(kernel.size)
        if key not in self.resident:
            if key not in self.dram:
                self.dram[key] = self.img.put(MemType.UOP, kernel)
            if self.next + n > self.cfg.uop_depth:
                self.resident.clear()
                self.next = 0
            self.b.load(MemType.UOP, self.next, self.dram[key], 1, n)
            self.resident[key] = self.next
            self.next += n
        start = self.resident[key]
        return start, start + n


class _Emitter:
    """Emits one layer; holds the SRAM bases that follow from the problem and plan."""

    def __init__(self, p: Problem, plan: TilePlan, cfg: VTAConfig, img: DramImage, bases: DramBases,
                 relu: bool):
        self.p, self.plan, self.cfg, self.bases, self.relu = p, plan, cfg, bases, relu
        self.b = ProgramBuilder(cfg)
        self.uops = UopCache(cfg, img, self.b)
        vt = plan.virtual_threads
        budget = Budget.of(p, cfg, vt)
        self.inp_half, self.wgt_half, self.acc_half = budget.inp, budget.wgt, budget.acc
        self.const_sram = vt * budget.acc
        # Fixed per-plan strides, so edge tiles in h reuse the full tile's micro-op kernel.
        self.inp_ic_stride = p.tile_rows(plan.oh_tile) * p.tile_cols(plan.ow_tile)
        self.acc_oc_stride = plan.oh_tile * plan.ow_tile

    # -- loads (load engine)
    def load_inputs(self, tile: Tile, ic0: int, ic_n: int, inp_base: int) -> None:
        p = self.p
        win = input_window(p, tile)
        hp, wp = p.tile_rows(tile.oh_n), p.tile_cols(tile.ow_n)
        # Whole images without padding: the channel blocks are contiguous in DRAM and SRAM.
        contiguous = (not any(win.pad) and win.y_step == 1 and hp == p.h and wp == p.w
                      and self.inp_ic_stride == hp * wp)
        blocks = [(ic0, ic_n)] if contiguous else [(ic0 + i, 1) for i in range(ic_n)]
        for ic, count in blocks:
            dram = self.bases.inp + ((tile.n * p.ic_blocks + ic) * p.h + win.y_first) * p.w + win.x_first
            self.b.load(MemType.INP, inp_base + (ic - ic0) * self.inp_ic_stride, dram, count * win.y_size,
                        win.x_size, p.w * win.y_step, win.pad)

    def load_weights(self, tile: Tile, ic0: int, ic_n: int, wgt_base: int) -> None:
        p = self.p
        dram = self.bases.wgt + (tile.oc0 * p.ic_blocks + ic0) * p.kk
        self.b.load(MemType.WGT, wgt_base, dram, tile.oc_n, ic_n * p.kk, p.ic_blocks * p.kk)

    # -- compute
    def gemm(self, tile: Tile, ic_n: int, inp_base: int, wgt_base: int, acc_base: int) -> None:
        p = self.p
        wp = p.tile_cols(tile.ow_n)
        uw = uop_width(p, tile.oc_n, tile.ow_n)
        kh = 1 if p.row_skip else p.kh
        # Micro-op order (ic, dy, dx, oc, x): output channel (and column) innermost.
        ic, dy, dx, oc, x = np.ix_(range(ic_n), range(kh), range(p.kw), range(tile.oc_n), range(uw))
        kernel = encode_kernel(
            self.cfg,
            dst=np.broadcast_to(acc_base + oc * self.acc_oc_stride + x, (ic_n, kh, p.kw, tile.oc_n, uw)),
            src=np.broadcast_to(inp_base + ic * self.inp_ic_stride + dy * wp + dx + x * p.sw,
                                (ic_n, kh, p.kw, tile.oc_n, uw)),
            wgt=np.broadcast_to(wgt_base + (oc * ic_n + ic) * p.kk + dy * p.kw + dx, (ic_n, kh, p.kw, tile.oc_n, uw)))
        bgn, end = self.uops.slot(kernel)
        row_factor = wp if p.row_skip else p.sh * wp
        iter_in = tile.ow_n // uw
        self.b.gemm(bgn, end, tile.oh_n, iter_in,
                    dst_factor=(tile.ow_n if tile.oh_n > 1 else 0, 1 if iter_in > 1 else 0),
                    src_factor=(row_factor if tile.oh_n > 1 else 0, p.sw if iter_in > 1 else 0))

    def _rows_loop(self, tile: Tile) -> dict:
        """Loop over the tile's accumulator rows: oc blocks outer, pixels inner."""
        pixels = tile.oh_n * tile.ow_n
        return dict(iter_out=tile.oc_n, iter_in=pixels,
                    dst_factor=(self.acc_oc_stride if tile.oc_n > 1 else 0, 1 if pixels > 1 else 0))

    def reset(self, tile: Tile, acc_base: int) -> None:
        bgn, end = self.uops.slot(encode_kernel(self.cfg, acc_base))
        loop = self._rows_loop(tile)
        self.b.gemm(bgn, end, loop["iter_out"], loop["iter_in"], reset=True, dst_factor=loop["dst_factor"])

    def epilogue(self, tile: Tile, acc_base: int) -> None:
        """acc += bias + half(shift); acc >>= shift; clip to [0 if relu else -128, 127]
        (relu commutes to after the shift: max(v, 0) + h >> s == max((v + h) >> s, 0) as h < 2^s)."""
        loop = self._rows_loop(tile)
        oc_step = 1 if tile.oc_n > 1 else 0
        bias_row = self.const_sram + tile.oc0
        shift_row = self.const_sram + self.p.oc_blocks + tile.oc0
        add = encode_kernel(self.cfg, acc_base, bias_row)  # the clips ignore src: same kernel
        self.b.alu(AluOp.ADD, *self.uops.slot(add), **loop, src_factor=(oc_step, 0))
        shr = encode_kernel(self.cfg, acc_base, shift_row)
        self.b.alu(AluOp.SHR, *self.uops.slot(shr), **loop, src_factor=(oc_step, 0))
        lo = 0 if self.relu else -(1 << (self.cfg.out_width - 1))
        self.b.alu(AluOp.MAX, *self.uops.slot(add), **loop, imm=lo)
        self.b.alu(AluOp.MIN, *self.uops.slot(add), **loop, imm=(1 << (self.cfg.out_width - 1)) - 1)

    # -- store (store engine)
    def store(self, tile: Tile, acc_base: int) -> None:
        p = self.p
        dram = self.bases.out + ((tile.n * p.oc_blocks + tile.oc0) * p.oh + tile.h0) * p.ow + tile.w0
        if tile.oh_n == p.oh and tile.ow_n == p.ow and self.acc_oc_stride == p.oh * p.ow:
            self.b.store(acc_base, dram, tile.oc_n * p.oh, p.ow, p.ow)
            return
        for oc in range(tile.oc_n):
            self.b.store(acc_base + oc * self.acc_oc_stride, dram + oc * p.oh * p.ow,
                         tile.oh_n, tile.ow_n, p.ow)

    # -- the stream
    def run(self) -> ProgramBuilder:
        p, plan, b = self.p, self.plan, self.b
        vt = plan.virtual_threads
        tiles = tiles_of(p, plan)
        units = units_of(p, plan, tiles)
        steps = len(units) // len(tiles)
        # Constants first: the compute engine loads them before any ALU pass needs them.
        b.load(MemType.ACC, self.const_sram, self.bases.const, 1, 2 * p.oc_blocks)
        pending_stores: list[int] = []
        for j, unit in enumerate(units):
            t, tile = unit.tile, tiles[unit.tile]
            half, acc_base = j % vt, (t % vt) * self.acc_half
            inp_base, wgt_base = half * self.inp_half, half * self.wgt_half
            loads = unit.inp_key is not None or unit.wgt_key is not None
            if loads:
                if j >= vt:
                    b.dep_pop(COMPUTE, LOAD)
                if unit.inp_key is not None:
                    self.load_inputs(tile, unit.ic0, unit.ic_n, inp_base)
                if unit.wgt_key is not None:
                    self.load_weights(tile, unit.ic0, unit.ic_n, wgt_base)
                b.dep_push(LOAD, COMPUTE)
            if unit.step == 0:
                if t >= vt:
                    b.dep_pop(STORE, COMPUTE)
                self.reset(tile, acc_base)
            if loads:
                b.dep_pop(LOAD, COMPUTE)
            self.gemm(tile, unit.ic_n, inp_base, wgt_base, acc_base)
            nxt = units[j + vt] if j + vt < len(units) else None
            if nxt is not None and (nxt.inp_key is not None or nxt.wgt_key is not None):
                b.dep_push(COMPUTE, LOAD)
            if unit.step == steps - 1:
                self.epilogue(tile, acc_base)
                b.dep_push(COMPUTE, STORE)
                pending_stores.append(t)
                if len(pending_stores) >= vt:
                    self._emit_store(pending_stores.pop(0), tiles)
        for t in pending_stores:
            self._emit_store(t, tiles)
        b.finish()
        return b

    def _emit_store(self, t: int, tiles: list[Tile]) -> None:
        vt = self.plan.virtual_threads
        self.b.dep_pop(COMPUTE, STORE)
        self.store(tiles[t], (t % vt) * self.acc_half)
        if t + vt < len(tiles):
            self.b.dep_push(STORE, COMPUTE)


def lower(p: Problem, plan: TilePlan, cfg: VTAConfig, img: DramImage, bases: DramBases,
          relu: bool) -> ProgramBuilder:
    """The finished instruction stream of one layer; micro-op kernels are appended to ``img``."""
    check_plan(p, plan, cfg)
    return _Emitter(p, plan, cfg, img, bases, relu).run()


__all__ = ["DramBases", "UopCache", "encode_kernel", "lower"]
