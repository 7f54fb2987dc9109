"""Numpy reference of VTA's arithmetic and a program-order interpreter of the ISA.

The functions are the specification that operator lowerings are tested against: int8 x int8
products accumulated into int32 with wraparound, ALU ops on int32 with sign-extended 16-bit
immediates, stores that truncate (not saturate). :class:`ReferenceMachine` executes a decoded
program in program order on numpy buffers (dependency tokens and timing are ignored), which is
what the C++ simulator computes for a correctly synchronized program (or any program with
``force_serial``); tests use it as a differential oracle.
"""

from __future__ import annotations

import numpy as np

from .config import VTAConfig, VTAError
from .isa import (AluInsn, AluOp, FinishInsn, GemmInsn, MemInsn, MemType, Opcode, decode_uop,
                  elem_bytes, sram_depth, validate)


def wrap(x, bits: int) -> np.ndarray:
    """Two's-complement wraparound of int64 values to ``bits`` (<= 64), sign-extended."""
    x = np.asarray(x, dtype=np.int64)
    if bits >= 64:
        return x
    shift = np.uint64(64 - bits)
    return ((x.astype(np.uint64) << shift).astype(np.int64)) >> np.int64(64 - bits)


def gemm(acc: np.ndarray, inp: np.ndarray, wgt: np.ndarray, acc_bits: int = 32) -> np.ndarray:
    """One GEMM micro-op: ``acc[b, j] + sum_k inp[b, k] * wgt[j, k]`` wrapped to ``acc_bits``.

    ``acc``: (BATCH, BLOCK_OUT), ``inp``: (BATCH, BLOCK_IN), ``wgt``: (BLOCK_OUT, BLOCK_IN).
    int64 arithmetic wraps modulo 2^64, so the result is exact modulo 2^acc_bits.
    """
    prod = np.asarray(inp, np.int64) @ np.asarray(wgt, np.int64).T
    return wrap(np.asarray(acc, np.int64) + prod, acc_bits)


def shr(a, s, bits: int = 32) -> np.ndarray:
    """ALU SHR: arithmetic ``a >> s`` for ``s >= 0`` (``s >= bits`` gives the sign), ``a << -s``
    (wrapped) for ``s < 0``."""
    a, s = np.broadcast_arrays(np.asarray(a, np.int64), np.asarray(s, np.int64))
    right = a >> np.minimum(np.maximum(s, 0), 63)
    left_amount = np.minimum(np.maximum(-s, 0), 63)
    shifted = (a.astype(np.uint64) << left_amount.astype(np.uint64)).astype(np.int64)
    left = np.where(-s >= bits, 0, wrap(shifted, bits))
    return np.where(s >= 0, right, left).astype(np.int64)


def alu(op: AluOp, a, b, acc_bits: int = 32) -> np.ndarray:
    """ALU lane operation ``op(a, b)``; ``b`` is ``acc[src]`` or the sign-extended immediate."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    if op == AluOp.MIN:
        return np.minimum(a, b)
    if op == AluOp.MAX:
        return np.maximum(a, b)
    if op == AluOp.ADD:
        return wrap(a + b, acc_bits)
    if op == AluOp.MUL:
        return wrap(a * b, acc_bits)
    if op == AluOp.SHR:
        return shr(a, b, acc_bits)
    raise VTAError(f"unknown ALU opcode {op}")


def store(acc, out_bits: int = 8) -> np.ndarray:
    """STORE: keep the low ``out_bits`` of each accumulator value (truncation, not saturation)."""
    return wrap(acc, out_bits).astype(f"int{out_bits}")


def requantize(acc, shift: int, lo: int = -128, hi: int = 127, round_bias: bool = True,
               out_bits: int = 8) -> np.ndarray:
    """The ALU sequence a requantizing layer emits: ``+2^(s-1)``, ``>>s``, ``max lo``, ``min hi``,
    store. Matches Relay's shift-based QuantizeRealize."""
    x = np.asarray(acc, np.int64)
    if round_bias and shift > 0:
        x = wrap(x + (1 << (shift - 1)), 32)
    x = np.minimum(np.maximum(shr(x, shift), lo), hi)
    return store(x, out_bits)


class ReferenceMachine:
    """Executes VTA instructions in program order on numpy buffers (no tokens, no timing)."""

    def __init__(self, cfg: VTAConfig):
        self.cfg = cfg
        c = cfg
        self.uop = np.zeros(c.uop_depth, np.uint32)
        self.inp = np.zeros((c.inp_depth, c.batch, c.block_in), np.int64)
        self.wgt = np.zeros((c.wgt_depth, c.block_out, c.block_in), np.int64)
        self.acc = np.zeros((c.acc_depth, c.batch, c.block_out), np.int64)

    def _dram_elems(self, dram: np.ndarray, mem: MemType, index: int, count: int) -> np.ndarray:
        c = self.cfg
        eb = elem_bytes(c, mem)
        lo, hi = index * eb, (index + count) * eb
        if hi > dram.size:
            raise VTAError(f"DRAM bytes [{lo}, {hi}) beyond the image of {dram.size} B")
        raw = dram[lo:hi]
        if mem == MemType.UOP:
            return raw.view("<u4").copy()
        bits = {MemType.INP: c.inp_width, MemType.WGT: c.wgt_width, MemType.ACC: c.acc_width,
                MemType.ACC_8BIT: c.out_width}[mem]
        shape = {MemType.INP: c.inp_elem_shape, MemType.WGT: c.wgt_elem_shape}.get(mem, c.acc_elem_shape)
        return raw.view(f"<i{bits // 8}").astype(np.int64).reshape((count,) + shape)

    def _buffer(self, mem: MemType) -> np.ndarray:
        return {MemType.UOP: self.uop, MemType.INP: self.inp, MemType.WGT: self.wgt}.get(mem, self.acc)

    def load(self, insn: MemInsn, dram: np.ndarray) -> None:
        if insn.is_nop:
            return
        buf = self._buffer(insn.memory_type)
        xt = insn.x_pad_0 + insn.x_size + insn.x_pad_1
        yt = insn.y_pad_0 + insn.y_size + insn.y_pad_1
        if insn.sram_base + xt * yt > sram_depth(self.cfg, insn.memory_type):
            raise VTAError("LOAD: SRAM overflow")
        tile = np.zeros((yt, xt) + buf.shape[1:], buf.dtype)
        for y in range(insn.y_size):
            row = self._dram_elems(dram, insn.memory_type, insn.dram_base + y * insn.x_stride, insn.x_size)
            tile[insn.y_pad_0 + y, insn.x_pad_0:insn.x_pad_0 + insn.x_size] = row
        buf[insn.sram_base:insn.sram_base + xt * yt] = tile.reshape((xt * yt,) + buf.shape[1:])

    def store(self, insn: MemInsn, dram: np.ndarray) -> None:
        if insn.is_nop:
            return
        c = self.cfg
        eb = c.out_elem_bytes
        for y in range(insn.y_size):
            rows = self.acc[insn.sram_base + y * insn.x_size:insn.sram_base + (y + 1) * insn.x_size]
            if rows.shape[0] != insn.x_size:
                raise VTAError("STORE: SRAM overflow")
            lo = (insn.dram_base + y * insn.x_stride) * eb
            if lo + insn.x_size * eb > dram.size:
                raise VTAError("STORE: DRAM overflow")
            dram[lo:lo + insn.x_size * eb] = store(rows, c.out_width).view(np.uint8).reshape(-1)

    def loop(self, insn: GemmInsn | AluInsn) -> None:
        c = self.cfg
        uops = [decode_uop(self.uop[u], c) for u in range(insn.uop_bgn, insn.uop_end)]
        for o in range(insn.iter_out):
            for i in range(insn.iter_in):
                for u in uops:
                    d = u.dst + o * insn.dst_factor_out + i * insn.dst_factor_in
                    s = u.src + o * insn.src_factor_out + i * insn.src_factor_in
                    if isinstance(insn, GemmInsn):
                        if insn.reset:
                            self.acc[d] = 0
                            continue
                        w = u.wgt + o * insn.wgt_factor_out + i * insn.wgt_factor_in
                        self.acc[d] = gemm(self.acc[d], self.inp[s], self.wgt[w], c.acc_width)
                    else:
                        b = wrap(insn.imm, c.acc_width) if insn.use_imm else self.acc[s]
                        self.acc[d] = alu(insn.alu_opcode, self.acc[d], b, c.acc_width)

    def run(self, insns, dram: np.ndarray) -> np.ndarray:
        """Execute ``insns`` (decoded instructions) on a copy of ``dram``; returns the new image."""
        dram = np.array(dram, dtype=np.uint8).reshape(-1)
        for insn in insns:
            validate(insn, self.cfg)
            if isinstance(insn, MemInsn):
                (self.load if insn.opcode == Opcode.LOAD else self.store)(insn, dram)
            elif isinstance(insn, (GemmInsn, AluInsn)):
                self.loop(insn)
            elif isinstance(insn, FinishInsn):
                break
        return dram


__all__ = ["wrap", "gemm", "shr", "alu", "store", "requantize", "ReferenceMachine"]
