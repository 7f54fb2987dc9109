"""ISA: golden bit positions, Python encode <-> decode and Python encode <-> C++ decode round
trips, legality checks, the builder's dependency-token semantics, the disassembler."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from accelc.targets.vta import (AluInsn, AluOp, FinishInsn, GemmInsn, MemInsn, MemType, Opcode,
                         ProgramBuilder, Simulator, Stage, Uop, VTAError, decode, decode_program,
                         disasm, encode, encode_program, main_disasm)
from accelc.targets.vta.isa import decode_uop, encode_uop, validate
from vta_testutil import CONFIGS

CFG_NAMES = ["1x16_i8w8a32", "2x8_i8w8a32", "1x8x16_i8w8a32"]


def words(data: bytes) -> tuple[int, int]:
    return int.from_bytes(data[:8], "little"), int.from_bytes(data[8:], "little")


def test_golden_load_encoding(cfg):
    insn = MemInsn(opcode=Opcode.LOAD, memory_type=MemType.INP, sram_base=5, dram_base=0x12345,
                   y_size=3, x_size=4, x_stride=7, y_pad_0=1, y_pad_1=2, x_pad_0=3, x_pad_1=4,
                   pop_next=True)
    w0, w1 = words(encode(insn, cfg))
    assert w0 == 0 | 1 << 4 | 2 << 7 | 5 << 10 | 0x12345 << 26
    assert w1 == 3 | 4 << 16 | 7 << 32 | 1 << 48 | 2 << 52 | 3 << 56 | 4 << 60


def test_golden_gemm_alu_uop_encoding(cfg):
    g = GemmInsn(reset=True, uop_bgn=3, uop_end=9, iter_out=5, iter_in=6, dst_factor_out=7,
                 dst_factor_in=8, src_factor_out=9, src_factor_in=10, wgt_factor_out=11,
                 wgt_factor_in=12, push_next=True)
    w0, w1 = words(encode(g, cfg))
    assert w0 == 2 | 1 << 6 | 1 << 7 | 3 << 8 | 9 << 21 | 5 << 35 | 6 << 49
    assert w1 == 7 | 8 << 11 | 9 << 22 | 10 << 33 | 11 << 44 | 12 << 54
    a = AluInsn(alu_opcode=AluOp.SHR, use_imm=True, imm=-2, uop_bgn=0, uop_end=1)
    w0, w1 = words(encode(a, cfg))
    assert w0 == 4 | 0 << 8 | 1 << 21 | 1 << 35 | 1 << 49
    assert w1 == 3 << 44 | 1 << 47 | 0xFFFE << 48
    assert encode_uop(Uop(dst=1, src=2, wgt=3), cfg) == 1 | 2 << 11 | 3 << 22


def _flags():
    return {k: st.booleans() for k in ("pop_prev", "pop_next", "push_prev", "push_next")}


def insn_strategy(cfg):
    u = lambda bits: st.integers(0, (1 << bits) - 1)  # noqa: E731
    mem = st.builds(MemInsn, opcode=st.sampled_from([Opcode.LOAD, Opcode.STORE]),
                    memory_type=st.sampled_from(list(MemType)), sram_base=u(16), dram_base=u(32),
                    y_size=u(16), x_size=u(16), x_stride=u(16), y_pad_0=u(4), y_pad_1=u(4),
                    x_pad_0=u(4), x_pad_1=u(4), **_flags())
    loop = dict(uop_bgn=u(cfg.uop_bgn_bits), uop_end=u(cfg.uop_end_bits), iter_out=u(14),
                iter_in=u(14), dst_factor_out=u(cfg.log_acc_depth), dst_factor_in=u(cfg.log_acc_depth),
                **_flags())
    gemm = st.builds(GemmInsn, reset=st.booleans(), src_factor_out=u(cfg.log_inp_depth),
                     src_factor_in=u(cfg.log_inp_depth), wgt_factor_out=u(cfg.log_wgt_depth),
                     wgt_factor_in=u(cfg.log_wgt_depth), **loop)
    alu = st.builds(AluInsn, alu_opcode=st.sampled_from(list(AluOp)), use_imm=st.booleans(),
                    imm=st.integers(-(1 << 15), (1 << 15) - 1), reset=st.booleans(),
                    src_factor_out=u(cfg.log_acc_depth), src_factor_in=u(cfg.log_acc_depth), **loop)
    return st.one_of(mem, gemm, alu, st.builds(FinishInsn, **_flags()))


def _py_fields(insn) -> dict:
    d = {k: int(v) for k, v in dataclasses.asdict(insn).items()}
    d["opcode"] = int(insn.opcode)
    return d


@pytest.mark.parametrize("name", CFG_NAMES)
def test_round_trip_python_and_cpp(name):
    cfg = CONFIGS[name]
    sim = Simulator(cfg)

    @settings(max_examples=150, deadline=None)
    @given(insn_strategy(cfg))
    def check(insn):
        data = encode(insn, cfg, check=False)
        assert len(data) == 16
        assert decode(data, cfg) == insn
        cpp = sim.decode_fields(data)
        for key, value in _py_fields(insn).items():
            assert cpp[key] == value, key

    check()


@pytest.mark.parametrize("name", CFG_NAMES)
def test_uop_round_trip(name):
    cfg = CONFIGS[name]
    sim = Simulator(cfg)

    @settings(max_examples=100, deadline=None)
    @given(st.integers(0, (1 << cfg.uop_dst_bits) - 1), st.integers(0, (1 << cfg.uop_src_bits) - 1),
           st.integers(0, (1 << cfg.uop_wgt_bits) - 1))
    def check(dst, src, wgt):
        uop = Uop(dst, src, wgt)
        word = encode_uop(uop, cfg)
        assert 0 <= word < 1 << 32
        assert decode_uop(word, cfg) == uop == sim.decode_uop(word)

    check()


def test_field_range_errors(cfg):
    with pytest.raises(VTAError, match="sram_base=65536 does not fit in 16 bits"):
        encode(MemInsn(memory_type=MemType.INP, sram_base=1 << 16, dram_base=0, y_size=1,
                       x_size=1, x_stride=1), cfg, check=False)
    with pytest.raises(VTAError, match="imm=32768"):
        encode(AluInsn(alu_opcode=AluOp.ADD, use_imm=True, imm=1 << 15, uop_bgn=0, uop_end=1), cfg)
    with pytest.raises(VTAError, match="iter_out=16384"):
        encode(GemmInsn(uop_bgn=0, uop_end=1, iter_out=1 << 14), cfg)
    with pytest.raises(VTAError, match="dst=2048"):
        encode_uop(Uop(dst=2048), cfg)
    with pytest.raises(VTAError, match="x_size=-1"):
        encode(MemInsn(memory_type=MemType.INP, sram_base=0, dram_base=0, y_size=1, x_size=-1,
                       x_stride=1), cfg)


@pytest.mark.parametrize("insn, message", [
    (MemInsn(opcode=Opcode.STORE, memory_type=MemType.OUT, sram_base=0, dram_base=0, y_size=1,
             x_size=1, x_stride=1, x_pad_0=1), "STORE cannot pad"),
    (MemInsn(opcode=Opcode.STORE, memory_type=MemType.ACC, sram_base=0, dram_base=0, y_size=1,
             x_size=1, x_stride=1), "memory type OUT"),
    (MemInsn(memory_type=MemType.OUT, sram_base=0, dram_base=0, y_size=1, x_size=1, x_stride=1),
     "LOAD cannot target memory type OUT"),
    (MemInsn(memory_type=MemType.INP, sram_base=2047, dram_base=0, y_size=1, x_size=1, x_stride=1,
             x_pad_1=1), "exceeds depth 2048"),
    (MemInsn(memory_type=MemType.INP, sram_base=0, dram_base=0, y_size=1, x_size=1, x_stride=1,
             pop_prev=True), "cannot pop/push 'prev'"),
    (MemInsn(opcode=Opcode.STORE, memory_type=MemType.OUT, sram_base=0, dram_base=0, y_size=1,
             x_size=1, x_stride=1, push_next=True), "cannot pop/push 'next'"),
    (GemmInsn(uop_bgn=0, uop_end=8193), "micro-op range"),
    (GemmInsn(uop_bgn=5, uop_end=4), "micro-op range"),
    (AluInsn(alu_opcode=AluOp.ADD, uop_bgn=0, uop_end=1, reset=True), "reset bit"),
    (FinishInsn(pop_prev=True), "FINISH cannot carry"),
])
def test_validate_rejects(cfg, insn, message):
    with pytest.raises(VTAError, match=message):
        validate(insn, cfg)
    with pytest.raises(VTAError, match=message):
        encode(insn, cfg)
    encode(insn, cfg, check=False)  # still encodable, for simulator error tests


def test_decode_errors(cfg):
    with pytest.raises(VTAError, match="unknown opcode 7"):
        decode((7).to_bytes(16, "little"), cfg)
    with pytest.raises(VTAError, match="unknown memory type 6"):
        decode((6 << 7).to_bytes(16, "little"), cfg)
    with pytest.raises(VTAError, match="instruction 1: unknown opcode 5"):
        decode_program(bytes(16) + (5).to_bytes(16, "little"), cfg)
    with pytest.raises(VTAError, match="multiple of 16"):
        decode_program(bytes(17), cfg)


def test_builder_token_semantics(cfg):
    b = ProgramBuilder(cfg)
    b.load(MemType.INP, 0, 0, 1, 1)
    b.dep_push(Stage.LOAD, Stage.COMPUTE)   # rides on the load
    b.dep_pop(Stage.LOAD, Stage.COMPUTE)    # pending on compute
    b.dep_pop(Stage.STORE, Stage.COMPUTE)   # a second kind: same instruction pops both
    b.gemm(0, 1, reset=True)
    b.dep_push(Stage.COMPUTE, Stage.STORE)
    b.dep_push(Stage.COMPUTE, Stage.STORE)  # the last insn already pushes: NOP carrier
    b.dep_pop(Stage.COMPUTE, Stage.STORE)
    b.dep_pop(Stage.COMPUTE, Stage.STORE)   # a second pop of the same kind commits a NOP
    b.store(0, 0, 1, 1)
    insns = b.insns
    assert insns[0].push_next and insns[0].stage == Stage.LOAD
    assert insns[1].pop_prev and insns[1].pop_next and isinstance(insns[1], GemmInsn)
    assert insns[1].push_next
    assert insns[2].is_nop and insns[2].stage == Stage.COMPUTE and insns[2].push_next
    assert insns[3].is_nop and insns[3].stage == Stage.STORE and insns[3].pop_prev
    assert insns[4].opcode == Opcode.STORE and insns[4].pop_prev and not insns[4].is_nop
    n = len(b)
    b.finish()
    tail = b.insns[n:]
    # VTASynchronize: push s2g (on the store), push l2g (NOP on load), pop both (NOP), FINISH.
    assert b.insns[n - 1].push_prev
    assert tail[0].stage == Stage.LOAD and tail[0].is_nop and tail[0].push_next
    assert tail[1].stage == Stage.COMPUTE and tail[1].is_nop and tail[1].pop_prev and tail[1].pop_next
    assert isinstance(tail[2], FinishInsn) and not tail[2].pop_prev
    with pytest.raises(VTAError, match="already finished"):
        b.nop(Stage.LOAD)
    with pytest.raises(VTAError, match="no token queue from LOAD to STORE"):
        ProgramBuilder(cfg).dep_push(Stage.LOAD, Stage.STORE)
    assert decode_program(b.encode(), cfg) == b.insns


def test_disasm(cfg, tmp_path):
    b = ProgramBuilder(cfg)
    b.load(MemType.INP, 0, 16, 2, 3, 5, pad=(1, 0, 2, 0))
    b.dep_push(Stage.LOAD, Stage.COMPUTE)
    b.dep_pop(Stage.LOAD, Stage.COMPUTE)
    b.gemm(0, 4, 2, 3, dst_factor=(12, 4), src_factor=(0, 1), wgt_factor=(4, 0))
    b.alu(AluOp.ADD, 0, 4, imm=-5)
    b.alu(AluOp.MAX, 0, 4, src_factor=(0, 1))
    b.finish()
    text = disasm(b.encode(), cfg)
    lines = text.splitlines()
    assert len(lines) == len(b)
    assert "LOAD  INP" in lines[0] and "pad=y[1,0] x[2,0]" in lines[0] and "push l2g" in lines[0]
    assert "l2g=1" in lines[0]
    assert "GEMM" in lines[1] and "uop[0:4] out=2(acc+12 inp+0 wgt+4)" in lines[1]
    assert "pop l2g" in lines[1] and "l2g=0" in lines[1]
    assert "ALU   ADD imm=-5" in lines[2] and "ALU   MAX src" in lines[3]
    assert lines[-1].split()[1] == "FINISH"
    path = tmp_path / "prog.bin"
    path.write_bytes(b.encode())
    assert main_disasm(path) == text
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(cfg.to_json())
    assert main_disasm(path, cfg_path) == text
    assert main_disasm(path, cfg.name) == text
    bad = bytearray(b.encode())
    bad[16] = (bad[16] & ~7) | 7
    assert "ILLEGAL (unknown opcode 7)" in disasm(bytes(bad), cfg).splitlines()[1]
    with pytest.raises(VTAError, match="cannot read"):
        main_disasm(tmp_path / "missing.bin")


def test_encode_program_reports_index(cfg):
    with pytest.raises(VTAError, match="instruction 1: .*FINISH cannot carry") as e:
        encode_program([FinishInsn(), FinishInsn(pop_next=True)], cfg)
    assert e.value.insn_index == 1
    assert np.frombuffer(encode_program([FinishInsn()], cfg), np.uint8)[0] == 3
