"""Instruction-level bit-exactness of the C++ simulator against numpy int references
(ports of VTA's test_vta_insn.py): padded loads, GEMM (reset, accumulate, wraparound), every
ALU op with and without immediate, store truncation; over several configs."""

import numpy as np
import pytest

from accelc.targets.vta import DramImage, MemType, ProgramBuilder, Simulator, Uop
from accelc.targets.vta.isa import AluOp
from accelc.targets.vta.reference import alu, gemm, store, wrap
from vta_testutil import COMPUTE, CONFIGS, LOAD, STORE, ExactReadback, rand_int, sync

ALL_CONFIGS = list(CONFIGS)


def _run(cfg, b, img, **kw):
    b.finish()
    return Simulator(cfg).run(b, img, strict_hazards=False, **kw)


@pytest.mark.parametrize("name", ALL_CONFIGS)
@pytest.mark.parametrize("mem", [MemType.ACC, MemType.ACC_8BIT, MemType.INP, MemType.WGT],
                         ids=lambda m: m.name)
def test_padded_2d_load(name, mem):
    """Load a strided 2-D window with zero padding, then read the SRAM back exactly."""
    cfg = CONFIGS[name]
    rng = np.random.default_rng(1)
    img, b = DramImage(cfg), ProgramBuilder(cfg)
    rows, cols, stride, x0 = 3, 4, 7, 2           # window columns [x0, x0+cols) of a 3x7 matrix
    pad = (1, 2, 3, 1)                            # y_pad_0, y_pad_1, x_pad_0, x_pad_1
    yt, xt = rows + pad[0] + pad[1], cols + pad[2] + pad[3]
    elem = img.elem_shape(mem)
    bits = {MemType.ACC: cfg.acc_width, MemType.ACC_8BIT: cfg.out_width,
            MemType.INP: cfg.inp_width, MemType.WGT: cfg.wgt_width}[mem]
    matrix = rand_int(rng, bits, (rows, stride) + elem)
    base = img.put(mem, matrix)
    expect = np.pad(matrix[:, x0:x0 + cols], [(pad[0], pad[1]), (pad[2], pad[3])] + [(0, 0)] * len(elem))
    expect = expect.reshape((yt * xt,) + elem)
    sram = 5
    rb = ExactReadback(cfg, img, b)
    if mem in (MemType.ACC, MemType.ACC_8BIT):
        b.load(mem, sram, base + x0, rows, cols, stride, pad)
        planes = rb.emit(sram, yt * xt)
        result = _run(cfg, b, img)
        np.testing.assert_array_equal(rb.read(planes, yt * xt, result.dram), expect)
        assert result.stats.acc_load_nbytes == rows * cols * np.prod(elem) * bits // 8
        return
    # INP / WGT: observe through a GEMM against one-hot operands: acc = inp @ e_k^T picks lane k.
    b.load(mem, sram, base + x0, rows, cols, stride, pad)
    n = yt * xt
    if mem == MemType.INP:
        # one weight element per input lane k: wgt[j, k'] = (k' == k) for j == 0 only.
        eye = np.zeros((cfg.block_in, cfg.block_out, cfg.block_in), np.int64)
        eye[np.arange(cfg.block_in), 0, np.arange(cfg.block_in)] = 1
        b.load(MemType.WGT, 0, img.put(MemType.WGT, eye), 1, cfg.block_in)
        # acc row (k, e) = inp[e] . eye[k]^T: lane [b, 0] holds inp[e][b, k]
        uops = [Uop(dst=0, src=sram, wgt=0)]
        gemm_args = dict(iter_out=cfg.block_in, iter_in=n, dst_factor=(n, 1), src_factor=(0, 1),
                         wgt_factor=(1, 0))
        expect_acc = np.zeros((cfg.block_in, n) + cfg.acc_elem_shape, np.int64)
        for k in range(cfg.block_in):
            expect_acc[k, :, :, 0] = expect[:, :, k]
    else:
        # one-hot inputs: inp[k][b, k'] = (k' == k) gives acc[b, j] = wgt[j, k]
        onehot = np.zeros((cfg.block_in, cfg.batch, cfg.block_in), np.int64)
        onehot[np.arange(cfg.block_in), :, np.arange(cfg.block_in)] = 1
        b.load(MemType.INP, 0, img.put(MemType.INP, onehot), 1, cfg.block_in)
        uops = [Uop(dst=0, src=0, wgt=sram)]
        gemm_args = dict(iter_out=cfg.block_in, iter_in=n, dst_factor=(n, 1), src_factor=(1, 0),
                         wgt_factor=(0, 1))
        expect_acc = np.zeros((cfg.block_in, n) + cfg.acc_elem_shape, np.int64)
        for k in range(cfg.block_in):
            expect_acc[k] = expect[:, None, :, k]
    sync(b, LOAD, COMPUTE)
    b.load(MemType.UOP, 0, img.put(MemType.UOP, uops), 1, 1)
    b.gemm(0, 1, gemm_args["iter_out"], n, reset=True, dst_factor=gemm_args["dst_factor"])
    b.gemm(0, 1, **gemm_args)
    total = cfg.block_in * n
    planes = rb.emit(0, total)
    result = _run(cfg, b, img)
    got = rb.read(planes, total, result.dram).reshape(expect_acc.shape)
    np.testing.assert_array_equal(got, expect_acc)


def gemm_program(cfg, rng, inp, wgt, acc0):
    """reset + ACC preload + two accumulating GEMM passes with outer/inner loops and factors."""
    img, b = DramImage(cfg), ProgramBuilder(cfg)
    n_in, n_w = inp.shape[0], wgt.shape[0]
    b.load(MemType.INP, 0, img.put(MemType.INP, inp), 1, n_in)
    b.load(MemType.WGT, 0, img.put(MemType.WGT, wgt), 1, n_w)
    sync(b, LOAD, COMPUTE)
    # acc layout: rows d = o*8 + i*2 + u for o < 2 (outer), i < 3 (inner), u < 2 (uops)
    uops = [Uop(dst=0, src=0, wgt=0), Uop(dst=1, src=3, wgt=1)]
    b.load(MemType.UOP, 0, img.put(MemType.UOP, uops), 1, len(uops))
    b.load(MemType.ACC, 0, img.put(MemType.ACC, acc0), 1, acc0.shape[0])
    b.gemm(0, 2, 1, 1, reset=True, dst_factor=(0, 0))           # rows 0, 1 reset after preload
    loop = dict(dst_factor=(8, 2), src_factor=(1, 2), wgt_factor=(2, 0))
    b.gemm(0, 2, 2, 3, **loop)
    b.gemm(0, 2, 2, 3, **loop)                                  # accumulate twice
    rb = ExactReadback(cfg, img, b)
    planes = rb.emit(0, acc0.shape[0])
    result = _run(cfg, b, img)
    # numpy reference of the same loop nest
    acc = acc0.astype(np.int64).copy()
    acc[0:2] = 0
    for _ in range(2):
        for o in range(2):
            for i in range(3):
                for u in uops:
                    d, s, w = u.dst + 8 * o + 2 * i, u.src + o + 2 * i, u.wgt + 2 * o
                    acc[d] = gemm(acc[d], inp[s], wgt[w], cfg.acc_width)
    return rb.read(planes, acc0.shape[0], result.dram), acc, result.stats


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_gemm_bit_exact(name):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(2)
    inp = rand_int(rng, cfg.inp_width, (10,) + cfg.inp_elem_shape)
    wgt = rand_int(rng, cfg.wgt_width, (4,) + cfg.wgt_elem_shape)
    acc0 = rand_int(rng, 20, (16,) + cfg.acc_elem_shape)
    got, ref, stats = gemm_program(cfg, rng, inp, wgt, acc0)
    np.testing.assert_array_equal(got, ref)
    assert stats.gemm_counter == 2 * 2 * 3 * 2 and stats.gemm_reset_counter == 2
    assert stats.macs == stats.gemm_counter * cfg.batch * cfg.block_in * cfg.block_out


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_gemm_int32_wraparound(name):
    """Extreme operands on an accumulator preloaded near INT_MAX/INT_MIN must wrap, not saturate."""
    cfg = CONFIGS[name]
    lo_i, hi_i = -(1 << (cfg.inp_width - 1)), (1 << (cfg.inp_width - 1)) - 1
    lo_w = -(1 << (cfg.wgt_width - 1))
    inp = np.full((10,) + cfg.inp_elem_shape, lo_i, np.int64)
    inp[1::2] = hi_i
    wgt = np.full((4,) + cfg.wgt_elem_shape, lo_w, np.int64)
    amax = (1 << (cfg.acc_width - 1)) - 1
    acc0 = np.full((16,) + cfg.acc_elem_shape, amax - 5, np.int64)
    acc0[1::2] = -amax + 5
    got, ref, _ = gemm_program(cfg, np.random.default_rng(0), inp, wgt, acc0)
    np.testing.assert_array_equal(got, ref)
    assert (ref[2:] < 0).any() and (ref[2:] > 0).any()  # wrapped across the sign


def test_gemm_long_accumulation_wraps(cfg, sim):
    """10^4 accumulations of 16 * (-128)^2 exceed 2^31: the int32 accumulator wraps."""
    img, b = DramImage(cfg), ProgramBuilder(cfg)
    b.load(MemType.INP, 0, img.put(MemType.INP, np.full((1, 1, 16), -128)), 1, 1)
    b.load(MemType.WGT, 0, img.put(MemType.WGT, np.full((1, 16, 16), -128)), 1, 1)
    sync(b, LOAD, COMPUTE)
    b.load(MemType.UOP, 0, img.put(MemType.UOP, [Uop(0, 0, 0)]), 1, 1)
    b.gemm(0, 1, reset=True)
    b.gemm(0, 1, 100, 100)
    rb = ExactReadback(cfg, img, b)
    planes = rb.emit(0, 1)
    b.finish()
    result = sim.run(b, img)
    expect = wrap(np.int64(10_000 * 16 * 128 * 128), 32)
    assert expect < 0
    np.testing.assert_array_equal(rb.read(planes, 1, result.dram), np.full((1, 1, 16), expect))
    assert result.stats.gemm_counter == 10_000
    assert result.stats.acc_raw_hazards == 10_000 - 1  # one row rewritten back to back


SHIFT_OPERANDS = np.array([0, 1, 7, 31, 32, 40, -1, -8, -31, -32, -40, 3, 15, -3, 5, 2])


@pytest.mark.parametrize("name", ["1x16_i8w8a32", "2x8_i8w8a32"])
@pytest.mark.parametrize("use_imm", [False, True], ids=["src", "imm"])
@pytest.mark.parametrize("op", list(AluOp), ids=lambda op: op.name)
def test_alu_bit_exact(name, op, use_imm):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(int(op) * 2 + use_imm)
    n = 6
    shape = (n,) + cfg.acc_elem_shape
    a = rand_int(rng, cfg.acc_width, shape)
    a[0] = np.iinfo(np.int32).max
    a[1] = np.iinfo(np.int32).min
    if op == AluOp.SHR:
        b_src = rng.choice(SHIFT_OPERANDS, size=shape)
        imms = [0, 5, 31, 33, -3, -32, -32768, 32767]
    elif op == AluOp.MUL:
        b_src = rand_int(rng, 20, shape)
        imms = [-1, 3, 32767, -32768]
    else:
        b_src = rand_int(rng, cfg.acc_width, shape)
        imms = [-1, 1, 127, -128, 32767, -32768]  # 16-bit immediates are sign-extended
    img, b = DramImage(cfg), ProgramBuilder(cfg)
    b.load(MemType.UOP, 0, img.put(MemType.UOP, [Uop(dst=0, src=n)]), 1, 1)
    rb = ExactReadback(cfg, img, b)
    cases = []
    for imm in (imms if use_imm else [None]):
        b.load(MemType.ACC, 0, img.put(MemType.ACC, np.concatenate([a, b_src])), 1, 2 * n)
        # one uop, inner loop over the n rows: dst = i, src = n + i
        b.alu(op, 0, 1, 1, n, imm=imm, dst_factor=(0, 1), src_factor=(0, 1))
        cases.append((imm, rb.emit(0, n)))
        sync(b, COMPUTE, LOAD)  # keep stages ordered between cases (no effect on compute-only)
        sync(b, LOAD, COMPUTE)
    result = _run(cfg, b, img)
    for imm, planes in cases:
        operand = b_src if imm is None else np.int64(imm)
        np.testing.assert_array_equal(rb.read(planes, n, result.dram), alu(op, a, operand, cfg.acc_width),
                                      err_msg=f"{op.name} imm={imm}")
    assert result.stats.alu_counter == len(cases) * (n + (rb.planes - 1) * n)


@pytest.mark.parametrize("name", ["1x16_i8w8a32", "1x16_i16w16a32"])
def test_store_truncates(name):
    """STORE keeps the low OUT-width bits (wraps), including a strided 2-D store that must leave
    the gaps untouched."""
    cfg = CONFIGS[name]
    rng = np.random.default_rng(3)
    special = np.array([300, -129, 128, -128, 127, 255, 256, 2**31 - 1, -2**31, 65535, 65536, -1])
    acc = rand_int(rng, cfg.acc_width, (6,) + cfg.acc_elem_shape)
    acc.reshape(-1)[:special.size] = special
    img, b = DramImage(cfg), ProgramBuilder(cfg)
    b.load(MemType.ACC, 0, img.put(MemType.ACC, acc), 1, 6)
    sentinel = np.full((2, 5) + cfg.out_elem_shape, 77)
    out = img.put(MemType.OUT, sentinel)
    sync(b, COMPUTE, STORE)
    b.store(0, out + 1, 2, 3, 5)          # rows 0..2 -> [0, 1:4], rows 3..5 -> [1, 1:4]
    result = _run(cfg, b, img)
    got = img.read(MemType.OUT, out, 10, data=result.dram).reshape(sentinel.shape)
    expect = sentinel.copy()
    expect[:, 1:4] = store(acc, cfg.out_width).reshape((2, 3) + cfg.out_elem_shape)
    np.testing.assert_array_equal(got, expect)
    assert result.stats.out_store_nbytes == 6 * cfg.out_elem_bytes
