"""Cycle model: per-instruction costs and counters match the analytic formulas; a
double-buffered program overlaps load/compute/store (fewer cycles) with outputs identical to
the single-buffered and force-serial runs and to numpy."""

import math

import numpy as np
import pytest

from accelc.targets.vta import DramImage, MemType, ProgramBuilder, Simulator, Uop
from accelc.targets.vta.isa import AluOp, FinishInsn, GemmInsn, MemInsn, encode_program
from accelc.targets.vta.reference import gemm, requantize
from vta_testutil import COMPUTE, CONFIGS, LOAD, STORE, rand_int

DRAM = np.zeros(1 << 16, np.uint8)


def dma(cfg, nbytes):
    return cfg.DMA_LATENCY + math.ceil(nbytes / cfg.bus_bytes)


def fetch0(cfg):
    return cfg.DMA_LATENCY + math.ceil(16 / cfg.bus_bytes)


@pytest.mark.parametrize("name", ["1x16_i8w8a32", "2x8_i8w8a32"])
@pytest.mark.parametrize("a, b, u", [(1, 1, 1), (3, 5, 7), (16, 16, 4)])
def test_simple_gemm_loop_matches_formula(name, a, b, u):
    """LOAD UOP; GEMM(a x b x u); FINISH on compute only: everything is analytic."""
    cfg = CONFIGS[name]
    insns = [MemInsn(memory_type=MemType.UOP, sram_base=0, dram_base=0, y_size=1, x_size=u, x_stride=u),
             GemmInsn(uop_bgn=0, uop_end=u, iter_out=a, iter_in=b), FinishInsn()]
    res = Simulator(cfg).run(encode_program(insns, cfg), DRAM, trace=True)
    st = res.stats
    gemm_cycles = cfg.GEMM_PIPELINE_DEPTH + cfg.GEMM_II * a * b * u
    assert st.gemm_counter == a * b * u
    assert st.cycles == fetch0(cfg) + dma(cfg, 4 * u) + gemm_cycles + 1
    assert st.gemm_utilization == pytest.approx(a * b * u / st.cycles)
    assert st.engines["compute"].busy == dma(cfg, 4 * u) + gemm_cycles + 1
    assert st.engines["compute"].stall == fetch0(cfg)
    assert st.uop_load_nbytes == 4 * u and st.insn_load_nbytes == 3 * 16
    assert st.macs == a * b * u * cfg.macs_per_uop
    np.testing.assert_array_equal(np.diff(res.trace, axis=1).ravel(),
                                  [dma(cfg, 4 * u), gemm_cycles, 1])


def test_instruction_costs(cfg):
    """Every kind's duration in force-serial mode: DMA latency + bytes / bus (+1 per padded
    element), GEMM/ALU pipeline depth + II * iterations, NOP/FINISH 1 cycle."""
    b = ProgramBuilder(cfg)
    b.load(MemType.INP, 0, 0, 3, 5, 9, pad=(1, 1, 2, 0))   # 15 elements + 4*7-... padded
    b.load(MemType.WGT, 0, 0, 1, 3)
    b.load(MemType.ACC, 0, 0, 2, 4)
    b.load(MemType.ACC_8BIT, 8, 0, 1, 4)
    b.load(MemType.UOP, 0, 0, 1, 6)
    b.gemm(0, 6, 2, 3)
    b.gemm(0, 6, 1, 2, reset=True)
    b.alu(AluOp.ADD, 0, 6, 2, 1, imm=1)
    b.store(0, 0, 2, 3, 10)
    b.nop(LOAD)
    b.emit(FinishInsn())
    res = Simulator(cfg).run(b, DRAM, trace=True, force_serial=True)
    padded = (3 + 2) * (5 + 2) - 15
    expect = [dma(cfg, 15 * 16) + padded, dma(cfg, 3 * 256), dma(cfg, 8 * 64), dma(cfg, 4 * 16),
              dma(cfg, 6 * 4), 4 + 36, 4 + 12, 4 + 2 * 12, dma(cfg, 6 * 16), 1, 1]
    np.testing.assert_array_equal(np.diff(res.trace, axis=1).ravel(), expect)
    # serial: each instruction starts when the previous one completed
    np.testing.assert_array_equal(res.trace[1:, 0], res.trace[:-1, 1])
    st = res.stats
    assert st.cycles == res.trace[-1, 1] == fetch0(cfg) + sum(expect)
    assert (st.inp_load_nbytes, st.wgt_load_nbytes, st.acc_load_nbytes, st.uop_load_nbytes,
            st.out_store_nbytes) == (15 * 16, 3 * 256, 8 * 64 + 4 * 16, 24, 6 * 16)
    assert (st.n_load, st.n_gemm, st.n_alu, st.n_store, st.n_nop, st.n_finish) == (5, 2, 1, 1, 1, 1)
    assert (st.gemm_counter, st.gemm_reset_counter, st.alu_counter) == (36, 12, 12)
    busy = sum(e.busy for e in st.engines.values())
    assert busy == sum(expect)
    # faster bus and single-issue ALU change exactly the terms they should
    fast = cfg.replace(LOG_BUS_WIDTH=7, ALU_II=1, DMA_LATENCY=10)
    res2 = Simulator(fast).run(b, DRAM, trace=True, force_serial=True)
    d = np.diff(res2.trace, axis=1).ravel()
    assert d[1] == 10 + 3 * 256 // 16 and d[7] == 4 + 12


def tiled_matmul(cfg, tiles, threads, R=8, KB=2, NB=2, shift=6, seed=0):
    """out[t] = requant(sum_kb A[t, kb] @ W[t, :, kb]^T) tile by tile, with `threads` SRAM halves
    (2 = double buffering: VTA's two virtual threads). Returns builder, image, out base, ref."""
    rng = np.random.default_rng(seed)
    A = rand_int(rng, cfg.inp_width, (tiles, KB, R) + cfg.inp_elem_shape)
    W = rand_int(rng, cfg.wgt_width, (tiles, NB, KB) + cfg.wgt_elem_shape)
    img, b = DramImage(cfg), ProgramBuilder(cfg)
    a_base = img.put(MemType.INP, A)
    w_base = img.put(MemType.WGT, W)
    out_base = img.alloc(MemType.OUT, tiles * NB * R)
    G, Z = KB * R, R
    uops = []
    for h in range(threads):
        acc0, inp0, wgt0 = h * NB * R, h * KB * R, h * NB * KB
        uops += [Uop(dst=acc0 + r, src=inp0 + kb * R + r, wgt=wgt0 + kb)
                 for kb in range(KB) for r in range(R)]  # r innermost: no back-to-back acc row
        uops += [Uop(dst=acc0 + r) for r in range(R)]
    b.load(MemType.UOP, 0, img.put(MemType.UOP, uops), 1, len(uops))
    for t in range(tiles):
        h = t % threads
        g0, z0 = h * (G + Z), h * (G + Z) + G
        if t >= threads:
            b.dep_pop(COMPUTE, LOAD)        # WAR: compute released SRAM half h
        b.load(MemType.INP, h * KB * R, a_base + t * KB * R, 1, KB * R)
        b.load(MemType.WGT, h * NB * KB, w_base + t * NB * KB, 1, NB * KB)
        b.dep_push(LOAD, COMPUTE)
        b.dep_pop(LOAD, COMPUTE)            # RAW: inputs are in
        if t >= threads:
            b.dep_pop(STORE, COMPUTE)       # WAR: store drained accumulator half h
        b.gemm(z0, z0 + Z, NB, reset=True, dst_factor=(R, 0))
        b.gemm(g0, g0 + G, NB, dst_factor=(R, 0), wgt_factor=(KB, 0))
        b.dep_push(COMPUTE, LOAD)
        b.alu(AluOp.ADD, z0, z0 + Z, NB, imm=1 << (shift - 1), dst_factor=(R, 0))
        b.alu(AluOp.SHR, z0, z0 + Z, NB, imm=shift, dst_factor=(R, 0))
        b.alu(AluOp.MAX, z0, z0 + Z, NB, imm=-128, dst_factor=(R, 0))
        b.alu(AluOp.MIN, z0, z0 + Z, NB, imm=127, dst_factor=(R, 0))
        b.dep_push(COMPUTE, STORE)
        b.dep_pop(COMPUTE, STORE)           # RAW: results are final
        b.store(h * NB * R, out_base + t * NB * R, 1, NB * R)
        b.dep_push(STORE, COMPUTE)
    for _ in range(min(threads, tiles)):    # balance the WAR tokens of the last tiles
        b.dep_pop(COMPUTE, LOAD)
        b.dep_pop(STORE, COMPUTE)
    b.finish()
    ref = np.zeros((tiles, NB, R) + cfg.out_elem_shape, np.int64)
    for t in range(tiles):
        for nb in range(NB):
            for r in range(R):
                acc = np.zeros(cfg.acc_elem_shape, np.int64)
                for kb in range(KB):
                    acc = gemm(acc, A[t, kb, r], W[t, nb, kb], cfg.acc_width)
                ref[t, nb, r] = requantize(acc, shift)
    return b, img, out_base, ref.reshape((tiles * NB * R,) + cfg.out_elem_shape)


@pytest.mark.parametrize("name", ["1x16_i8w8a32", "2x8_i8w8a32"])
def test_double_buffering_overlaps_and_matches(name):
    cfg = CONFIGS[name]
    tiles = 6
    sim = Simulator(cfg)
    runs = {}
    for label, threads, serial in [("double", 2, False), ("single", 1, False), ("serial", 2, True)]:
        b, img, out_base, ref = tiled_matmul(cfg, tiles, threads)
        res = sim.run(b, img, force_serial=serial, strict_hazards=True)
        out = img.read(MemType.OUT, out_base, ref.shape[0], data=res.dram)
        np.testing.assert_array_equal(out, ref, err_msg=label)
        runs[label] = res.stats
    double, single, serial = runs["double"], runs["single"], runs["serial"]
    assert double.cycles < single.cycles <= serial.cycles
    assert double.cycles < 0.75 * serial.cycles
    # overlap: engines were busy at the same time
    assert sum(e.busy for e in double.engines.values()) > double.cycles
    # same work, same traffic, whatever the schedule
    for st in (single, serial):
        assert st.gemm_counter == double.gemm_counter == tiles * 2 * 2 * 8
        assert st.inp_load_nbytes + st.wgt_load_nbytes == double.inp_load_nbytes + double.wgt_load_nbytes
        assert st.out_store_nbytes == double.out_store_nbytes
    assert serial.load_nbytes == double.load_nbytes  # single-buffered loads half the uops
    assert double.gemm_utilization > serial.gemm_utilization


def test_deterministic(cfg):
    b, img, _, _ = tiled_matmul(cfg, 3, 2)
    sim = Simulator(cfg)
    r1, r2 = sim.run(b, img, trace=True), sim.run(b, img, trace=True)
    assert r1.stats == r2.stats
    np.testing.assert_array_equal(r1.trace, r2.trace)
    np.testing.assert_array_equal(r1.dram, r2.dram)
    assert "GEMM utilization" in r1.stats.summary()
