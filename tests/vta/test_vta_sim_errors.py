"""Illegal programs come back as VTAError with the simulator's code and message (never a
crash or a hang): buffer overflows, DRAM out of range, deadlocks naming the queue, leftover
tokens, bad opcodes and fields."""

import ctypes

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from accelc.targets.vta import (AluInsn, AluOp, DramImage, FinishInsn, GemmInsn, MemInsn, MemType, Opcode,
                         ProgramBuilder, SimStatus, Simulator, Uop, VTAConfig, VTAError)
from accelc.targets.vta.isa import encode, encode_program
from accelc.targets.vta import simulator as simmod
from vta_testutil import COMPUTE, LOAD

DRAM = np.zeros(1 << 16, np.uint8)


def load(mem, sram=0, dram=0, y=1, x=1, stride=None, pads=(0, 0, 0, 0), **flags):
    return MemInsn(opcode=Opcode.LOAD, memory_type=mem, sram_base=sram, dram_base=dram, y_size=y,
                   x_size=x, x_stride=x if stride is None else stride, y_pad_0=pads[0],
                   y_pad_1=pads[1], x_pad_0=pads[2], x_pad_1=pads[3], **flags)


def store(sram=0, dram=0, y=1, x=1, **flags):
    return MemInsn(opcode=Opcode.STORE, memory_type=MemType.OUT, sram_base=sram, dram_base=dram,
                   y_size=y, x_size=x, x_stride=x, **flags)


def expect_error(sim, insns, code, match, dram=DRAM, **kw):
    program = insns if isinstance(insns, bytes) else encode_program(insns, sim.cfg, check=False)
    with pytest.raises(VTAError, match=match) as info:
        sim.run(program, dram, **kw)
    assert info.value.code == code, str(info.value)
    return info.value


UOP0 = load(MemType.UOP)  # micro-op 0 := DRAM word 0 (dst = src = wgt = 0)


def test_sram_overflow_on_padded_load(sim):
    # 2047 + (1 + 1) elements: only the padding crosses the end of the input buffer
    e = expect_error(sim, [load(MemType.INP, sram=2047, pads=(0, 0, 0, 1)), FinishInsn()],
                     SimStatus.SRAM, r"SRAM range \[2047, 2049\).*INP buffer depth 2048")
    assert e.insn_index == 0


def test_gemm_index_overflow_through_factors(sim):
    gemm = GemmInsn(uop_bgn=0, uop_end=1, iter_out=3, iter_in=1, dst_factor_out=1024)
    expect_error(sim, [UOP0, gemm, FinishInsn()], SimStatus.SRAM,
                 r"accumulator index 2048 out of range \[0, 2048\)")
    gemm = GemmInsn(uop_bgn=0, uop_end=1, iter_in=3, src_factor_in=1024)
    expect_error(sim, [UOP0, gemm, FinishInsn()], SimStatus.SRAM, r"input index 2048 out of range")
    gemm = GemmInsn(uop_bgn=0, uop_end=1, iter_out=3, wgt_factor_out=512, iter_in=1)
    e = expect_error(sim, [UOP0, gemm, FinishInsn()], SimStatus.SRAM, r"weight index 1024.*\[0, 1024\)")
    assert e.insn_index == 1
    alu = AluInsn(alu_opcode=AluOp.ADD, uop_bgn=0, uop_end=1, iter_in=3, src_factor_in=1024)
    expect_error(sim, [UOP0, alu, FinishInsn()], SimStatus.SRAM, "ALU source")


def test_uop_errors(sim):
    gemm = GemmInsn(uop_bgn=0, uop_end=2)
    expect_error(sim, [UOP0, gemm, FinishInsn()], SimStatus.SRAM, "micro-op 1 which was never loaded")
    expect_error(sim, [GemmInsn(uop_bgn=8000, uop_end=8193), FinishInsn()], SimStatus.SRAM,
                 "exceeds the micro-op buffer depth 8192")
    expect_error(sim, [GemmInsn(uop_bgn=3, uop_end=2), FinishInsn()], SimStatus.DECODE,
                 "uop_bgn 3 > uop_end 2")


def test_dram_out_of_range(sim):
    small = np.zeros(1000, np.uint8)
    # 2 rows of 4 x 16 B at stride 30: last byte (0 + 30 + 4) * 16 = 544 fits; at base 30 not
    sim.run([load(MemType.INP, y=2, x=4, stride=30), FinishInsn()], small, force_serial=True)
    expect_error(sim, [load(MemType.INP, dram=30, y=2, x=4, stride=30), FinishInsn()],
                 SimStatus.DRAM, r"bytes \[480, 1024\) exceed the DRAM image of 1000 B", dram=small)
    expect_error(sim, [store(dram=62, x=2, pop_prev=False), FinishInsn()], SimStatus.DRAM,
                 "STORE", dram=small)
    expect_error(sim, [load(MemType.UOP, dram=250, x=1), FinishInsn()], SimStatus.DRAM,
                 "LOAD UOP", dram=small)


def test_missing_token_is_a_deadlock_naming_the_queue(sim, cfg):
    # compute pops load->compute, but the load never pushes
    e = expect_error(sim, [load(MemType.INP), GemmInsn(uop_bgn=0, uop_end=0, pop_prev=True),
                           FinishInsn()], SimStatus.DEADLOCK,
                     r"compute engine: insn #1 \(GEMM\) waits for a token on l2g \(load->compute\), "
                     r"which is empty and no remaining instruction pushes it")
    assert e.insn_index == 1 and e.stats.engines["load"].n_insns == 1
    # store waits on compute->store: compute reaches FINISH while the store is stuck
    expect_error(sim, [store(pop_prev=True), FinishInsn()], SimStatus.FINISH,
                 r"store engine: insn #0 \(STORE\) waits for a token on g2s \(compute->store\)")
    # ... and with the synchronization in place it is a deadlock naming both queues
    e = expect_error(sim, [store(pop_prev=True, push_prev=True),
                           GemmInsn(uop_bgn=0, uop_end=0, pop_next=True), FinishInsn()],
                     SimStatus.DEADLOCK, r"g2s \(compute->store\), which is empty")
    assert "waits for a token on s2g (store->compute)" in str(e)
    # the load waits for compute->load while compute waits for load->compute: a cycle
    e = expect_error(sim, [load(MemType.INP, pop_next=True, push_next=True),
                           GemmInsn(uop_bgn=0, uop_end=0, pop_prev=True, push_prev=True), FinishInsn()],
                     SimStatus.DEADLOCK, "g2l")
    assert "l2g" in str(e)


def test_deadlock_when_fetch_blocks_on_a_full_command_queue(cfg):
    """A pop that precedes its push by more than a command queue's depth deadlocks the real
    hardware's in-order fetch: 9 load-engine instructions wait for compute, whose push comes
    after them in the stream."""
    sim = Simulator(cfg)
    insns = [load(MemType.INP, pop_next=True)] + [load(MemType.INP) for _ in range(7)]
    insns += [load(MemType.INP, push_next=True), GemmInsn(uop_bgn=0, uop_end=0, push_prev=True),
              load(MemType.UOP, x=0, pop_prev=True), FinishInsn()]
    expect_error(sim, insns, SimStatus.DEADLOCK, r"compute engine: insn #9 \(GEMM\) is not fetched: "
                 r"fetch is stalled at insn #8 because the load command queue is full \(depth 8\)")
    # a deeper command queue removes it
    Simulator(cfg.replace(CMD_QUEUE_DEPTH=16)).run(encode_program(insns, cfg), DRAM)


def test_tokens_left_at_finish(sim):
    e = expect_error(sim, [GemmInsn(uop_bgn=0, uop_end=0, push_prev=True, push_next=True),
                           GemmInsn(uop_bgn=0, uop_end=0, push_next=True), FinishInsn()],
                     SimStatus.FINISH, r"tokens left in queues at FINISH: g2l \(compute->load\): 1, "
                     r"g2s \(compute->store\): 2")
    assert e.insn_index == 2


def test_finish_without_synchronization(sim):
    # the store is never waited for: FINISH would signal completion before the store ran
    expect_error(sim, [GemmInsn(uop_bgn=0, uop_end=0, push_next=True), store(pop_prev=True),
                       FinishInsn()], SimStatus.FINISH,
                 "store engine .*missing store->compute synchronization")


@pytest.mark.parametrize("raw, code, match", [
    ((7).to_bytes(16, "little"), SimStatus.DECODE, "unknown opcode 7"),
    ((5).to_bytes(16, "little"), SimStatus.DECODE, "unknown opcode 5"),
    ((6 << 7 | 1 << 80).to_bytes(16, "little"), SimStatus.DECODE, "unknown memory type 6"),
], ids=["opcode7", "opcode5", "memtype6"])
def test_bad_encodings(sim, cfg, raw, code, match):
    expect_error(sim, raw + encode(FinishInsn(), cfg), code, match)


@pytest.mark.parametrize("insn, code, match", [
    (AluInsn(alu_opcode=5, uop_bgn=0, uop_end=0), SimStatus.DECODE, "unknown ALU opcode 5"),
    (AluInsn(alu_opcode=AluOp.ADD, uop_bgn=0, uop_end=0, reset=True), SimStatus.DECODE, "reset bit"),
    (MemInsn(opcode=Opcode.STORE, memory_type=MemType.OUT, sram_base=0, dram_base=0, y_size=1,
             x_size=1, x_stride=1, x_pad_0=2), SimStatus.DECODE, "STORE cannot pad"),
    (load(MemType.OUT), SimStatus.DECODE, "LOAD cannot target memory type OUT"),
    (load(MemType.WGT, pop_prev=True), SimStatus.DECODE, "cannot pop/push 'prev'"),
    (store(push_next=True), SimStatus.DECODE, "cannot pop/push 'next'"),
], ids=["alu_op", "alu_reset", "store_pad", "load_out", "load_prev", "store_next"])
def test_illegal_fields(sim, insn, code, match):
    e = expect_error(sim, [insn, FinishInsn()], code, match)
    assert e.insn_index == 0


def test_program_structure(sim, cfg):
    expect_error(sim, b"", SimStatus.PROGRAM, "empty program")
    expect_error(sim, [load(MemType.INP)], SimStatus.PROGRAM, "does not end with FINISH")
    expect_error(sim, [FinishInsn(), load(MemType.INP), FinishInsn()], SimStatus.PROGRAM,
                 r"FINISH at insn #0 is followed by 2")
    expect_error(sim, [FinishInsn(pop_prev=True)], SimStatus.DECODE, "FINISH cannot carry")


def test_work_limit_and_strict_hazards(sim):
    insns = [UOP0, GemmInsn(uop_bgn=0, uop_end=1, iter_out=100, iter_in=100), FinishInsn()]
    expect_error(sim, insns, SimStatus.LIMIT, "work limit exceeded", max_uop_iters=5000)
    e = expect_error(sim, insns, SimStatus.HAZARD, "row 0 is written again", strict_hazards=True)
    assert e.stats.gemm_counter == 0  # detected at the second micro-op, counted before running
    sim.run(insns, DRAM)  # counted, not fatal, by default


def test_token_backpressure_not_loss(cfg):
    """Ten load->compute tokens in flight with an 8-deep queue: the 9th push blocks until compute
    pops (stall), nothing is lost, nothing deadlocks."""
    sim = Simulator(cfg)
    b = ProgramBuilder(cfg)
    b.load(MemType.UOP, 0, 0, 1, 1)
    b.gemm(0, 1, 100, 20)  # keeps compute busy for 2000 cycles while the loads push
    for _ in range(10):
        b.load(MemType.INP, 0, 0, 1, 1)
        b.dep_push(LOAD, COMPUTE)
    for _ in range(10):
        b.dep_pop(LOAD, COMPUTE)
        b.gemm(0, 0)
    b.finish()
    res = sim.run(b, DRAM, trace=True)
    assert res.stats.engines["load"].n_insns == 11 and res.stats.n_gemm == 11
    assert res.stats.engines["load"].stall > 0
    deep = Simulator(cfg.replace(DEP_QUEUE_DEPTH=16)).run(b, DRAM)
    assert deep.stats.engines["load"].stall < res.stats.engines["load"].stall


def test_c_abi_rejects_bad_config_and_null():
    lib = simmod._load()
    bad = simmod._c_config(VTAConfig())
    bad.log_acc_width = 9
    err = ctypes.create_string_buffer(256)
    stats = simmod._Stats()
    code = lib.vta_sim_run(ctypes.byref(bad), None, b"", 0, None, 0, ctypes.byref(stats), err, 256)
    assert code == SimStatus.CONFIG and b"LOG_ACC_WIDTH=9" in err.value
    good = simmod._c_config(VTAConfig())
    code = lib.vta_sim_run(ctypes.byref(good), None, None, 3, None, 0, ctypes.byref(stats), err, 256)
    assert code == SimStatus.ARG and b"null pointer" in err.value
    # a short error buffer truncates the message, it never overflows
    tiny = ctypes.create_string_buffer(8)
    code = lib.vta_sim_run(ctypes.byref(good), None, b"", 0, None, 0, None, tiny, 8)
    assert code == SimStatus.PROGRAM and tiny.value == b"empty p"


def test_dram_image_rejects_out_of_range_values(cfg):
    img = DramImage(cfg)
    with pytest.raises(VTAError, match="outside int8 range"):
        img.put(MemType.INP, np.full((1, 1, 16), 128))
    with pytest.raises(VTAError, match="whole INP elements"):
        img.put(MemType.INP, np.zeros(15))
    assert img.put(MemType.UOP, [Uop(1, 2, 3)]) == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=16, max_size=16), min_size=0, max_size=12), st.integers(0, 2**32 - 1))
def test_random_bytes_never_crash(raw_insns, seed):
    """Arbitrary instruction bits either run or return an error; the process survives."""
    cfg = VTAConfig()
    rng = np.random.default_rng(seed)
    dram = rng.integers(0, 256, 4096, dtype=np.uint8)
    program = b"".join(raw_insns) + encode(FinishInsn(), cfg)
    try:
        Simulator(cfg).run(program, dram, max_uop_iters=20_000)
    except VTAError as e:
        assert e.code in set(SimStatus) - {SimStatus.OK, SimStatus.ARG}, str(e)
