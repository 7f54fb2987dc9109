"""Differential test: random legal programs give the same DRAM image on the C++ simulator
(force_serial: program order) and on the numpy ReferenceMachine; plus reference unit checks."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from accelc.targets.vta import (AluInsn, AluOp, FinishInsn, GemmInsn, MemInsn, MemType, Opcode, Simulator,
                         Uop)
from accelc.targets.vta.isa import encode_program, encode_uops
from accelc.targets.vta.reference import ReferenceMachine, alu, requantize, shr, store, wrap
from vta_testutil import CONFIGS

DRAM_BYTES = 1 << 16
STORE_REGION = 48 << 10  # bytes; loads read below it (and may read it too)
N_UOPS = 16


def test_reference_semantics():
    assert wrap(2**31, 32) == -2**31 and wrap(-2**31 - 1, 32) == 2**31 - 1
    np.testing.assert_array_equal(store([300, -129, 127, -1], 8), [44, 127, 127, -1])
    np.testing.assert_array_equal(shr([-7, -7, 5, 5, 1], [1, 40, -2, -32, -31], 32), [-4, -1, 20, 0, -2**31])
    assert alu(AluOp.ADD, 2**31 - 1, 1) == -2**31
    assert alu(AluOp.MUL, 2**16, 2**16) == 0
    # round-half-up shift requantization: 95 / 64 = 1.48 -> 1, 96 / 64 = 1.5 -> 2, clipped
    np.testing.assert_array_equal(requantize([95, 96, -96, 10**6, -10**6], 6), [1, 2, -1, 127, -128])


def _program(draw, cfg):
    u = lambda lo, hi: draw(st.integers(lo, hi))  # noqa: E731
    insns = [MemInsn(memory_type=MemType.UOP, sram_base=0, dram_base=0, y_size=1, x_size=N_UOPS,
                     x_stride=N_UOPS)]
    for _ in range(u(1, 10)):
        kind = draw(st.sampled_from(["load", "gemm", "alu", "store"]))
        if kind == "load":
            mem = draw(st.sampled_from([MemType.INP, MemType.WGT, MemType.ACC, MemType.ACC_8BIT]))
            x = u(0, 4)
            insns.append(MemInsn(memory_type=mem, sram_base=u(0, 15), dram_base=u(1, 40), y_size=u(1, 3),
                                 x_size=x, x_stride=x + u(0, 3), y_pad_0=u(0, 2), y_pad_1=u(0, 2),
                                 x_pad_0=u(0, 2), x_pad_1=u(0, 2)))
        elif kind == "store":
            x = u(1, 4)
            insns.append(MemInsn(opcode=Opcode.STORE, memory_type=MemType.OUT, sram_base=u(0, 31),
                                 dram_base=STORE_REGION // cfg.out_elem_bytes + u(0, 200),
                                 y_size=u(1, 3), x_size=x, x_stride=x + u(0, 3)))
        else:
            bgn = u(0, N_UOPS)
            loop = dict(uop_bgn=bgn, uop_end=u(bgn, N_UOPS), iter_out=u(0, 3), iter_in=u(1, 3),
                        dst_factor_out=u(0, 4), dst_factor_in=u(0, 4), src_factor_out=u(0, 4),
                        src_factor_in=u(0, 4))
            if kind == "gemm":
                insns.append(GemmInsn(reset=draw(st.booleans()), wgt_factor_out=u(0, 4),
                                      wgt_factor_in=u(0, 4), **loop))
            else:
                use_imm = draw(st.booleans())
                insns.append(AluInsn(alu_opcode=draw(st.sampled_from(list(AluOp))), use_imm=use_imm,
                                     imm=u(-2**15, 2**15 - 1), **loop))
    return insns + [FinishInsn()]


@pytest.mark.parametrize("name", ["1x16_i8w8a32", "2x8_i8w8a32", "1x16_i16w16a32"])
def test_random_programs_match_reference(name):
    cfg = CONFIGS[name]
    sim = Simulator(cfg)

    @settings(max_examples=40, deadline=None)
    @given(st.data(), st.integers(0, 2**32 - 1))
    def check(data, seed):
        rng = np.random.default_rng(seed)
        dram = rng.integers(0, 256, DRAM_BYTES, dtype=np.uint8)
        uops = [Uop(int(rng.integers(0, 32)), int(rng.integers(0, 32)), int(rng.integers(0, 16)))
                for _ in range(N_UOPS)]
        dram[:4 * N_UOPS] = encode_uops(uops, cfg).view(np.uint8)
        insns = _program(data.draw, cfg)
        got = sim.run(encode_program(insns, cfg), dram, force_serial=True).dram
        want = ReferenceMachine(cfg).run(insns, dram)
        np.testing.assert_array_equal(got, want)

    check()
