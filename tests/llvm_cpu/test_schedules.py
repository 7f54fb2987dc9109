"""Numeric + rule-fired tests of the LLVM CPU layout and schedule passes.

Each case builds a small Relax model, runs accelc's CPU phases (layout_passes ->
FoldConstant -> LegalizeOps -> FuseOps/FuseTIR -> schedule_passes -> tvm.compile) and compares
with numpy at fp32 tolerance, asserting which rules fired and that no PrimFunc was left
unscheduled (a rule that silently does nothing would pass any numeric test).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest


import tvm  # noqa: E402
from tvm import relax  # noqa: E402

try:
    from accelc.targets import llvm_cpu as cpu  # noqa: E402
except ImportError:
    from targets import llvm_cpu as cpu  # noqa: E402
from accelc.targets.llvm_cpu.config import CpuScheduleConfig  # noqa: E402
from accelc.targets.llvm_cpu.convert_conv2d_layout import channel_block  # noqa: E402

RTOL = {"float32": 1e-4}
TARGET = cpu.host_target(2)


def _compile(mod):
    passes = [relax.transform.FoldConstant(), *cpu.layout_passes(TARGET), relax.transform.FoldConstant(),
              relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
              relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR()]
    sched = cpu.schedule_passes(TARGET)
    with TARGET:
        mod = tvm.transform.Sequential(passes + sched)(mod)
    unscheduled = [g.name_hint for g, f in mod.functions_items()
                   if isinstance(f, tvm.tirx.PrimFunc) and not (f.attrs and "accelc.schedule_rule" in f.attrs)]
    vm = relax.VirtualMachine(tvm.compile(mod, TARGET), tvm.cpu())
    return vm, sched[0], unscheduled


def _conv_ref(x, w, stride, pad, groups):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride][:, :, :oh, :ow]
    og = o // groups
    outs = [np.einsum("nchwij,ocij->nohw", win[:, g * cg:(g + 1) * cg], w[g * og:(g + 1) * og]) for g in range(groups)]
    return np.concatenate(outs, axis=1)


def _check(vm, inputs, ref):
    out = vm["main"](*[tvm.runtime.tensor(a) for a in inputs]).numpy()
    np.testing.assert_allclose(out, ref, rtol=RTOL["float32"], atol=RTOL["float32"] * np.abs(ref).max())


CONV_CASES = [
    # C, O, H, W, K, stride, pad, groups, residual
    (16, 32, 9, 9, 3, 1, 1, 1, False),     # 3x3, blocks 16
    (3, 24, 15, 13, 7, 2, 3, 1, False),    # first layer: 3 channels, odd sizes, 7x7 stride 2
    (20, 36, 7, 11, 1, 1, 0, 1, True),     # 1x1, few outputs, no multiple of the lanes: packed (4c), + residual
    (20, 36, 7, 11, 3, 1, 1, 1, True),     # 3x3, channels not divisible by 16 (block 4), + residual
    (64, 1000, 13, 13, 1, 1, 0, 1, False),  # SqueezeNet conv10: 1000 outputs on pixel lanes
    (64, 64, 14, 14, 1, 2, 0, 1, False),   # 1x1 stride 2
    (32, 32, 10, 10, 3, 2, 1, 32, False),  # depthwise stride 2
    (24, 48, 8, 8, 1, 1, 0, 3, False),     # grouped (ShuffleNet-like)
    (136, 136, 7, 9, 1, 1, 0, 4, True),    # ShuffleNet: 34 channels a group -> NCHW GEMM per group
    (12, 60, 5, 5, 1, 1, 0, 3, False),     # 4 in / 20 out a group, 25 pixels (tile padding + crop)
    (48, 48, 6, 6, 3, 1, 1, 3, False),     # grouped 3x3 stays packed
    (16, 40, 13, 13, 3, 1, 1, 1, False),   # 13 wide: register tile padding + crop
    (32, 48, 7, 7, 3, 1, 1, 1, True),      # 3 output-channel blocks in the register tile
    (16, 128, 5, 6, 3, 1, 1, 1, False),    # 8 blocks, tiles of 4 blocks
    (64, 128, 6, 6, 3, 1, 1, 2, False),    # grouped: the tile's blocks stay in one group
    (96, 32, 9, 9, 3, 1, 1, 1, True),      # 6 input-channel passes (3x3: one 16-channel chunk a pass), + residual
    (512, 64, 7, 7, 1, 1, 0, 1, True),     # 1x1 K=512: passes of several chunks, + residual
    (64, 32, 11, 11, 3, 2, 1, 1, False),   # passes with stride 2
    (128, 128, 6, 6, 3, 1, 1, 2, False),   # grouped: passes over the group's input channels
    (64, 48, 13, 13, 3, 1, 1, 1, True),    # passes + a padded register tile cropped in the epilogue
]


@pytest.mark.parametrize("c,o,h,w,k,s,p,g,residual", CONV_CASES)
def test_conv2d_bias_relu(c, o, h, w, k, s, p, g, residual):
    rng = np.random.default_rng(c * 1000 + o)
    wt = rng.standard_normal((o, c // g, k, k)).astype("float32")
    bias = rng.standard_normal((1, o, 1, 1)).astype("float32")
    x = rng.standard_normal((1, c, h, w)).astype("float32")
    ref = _conv_ref(x, wt, s, p, g) + bias
    oh, ow = ref.shape[2:]
    res = rng.standard_normal((1, o, oh, ow)).astype("float32")
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType((1, c, h, w), "float32"))
    rv = relax.Var("r", relax.TensorType((1, o, oh, ow), "float32"))
    params = [xv, rv] if residual else [xv]
    with bb.function("main", params):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(xv, relax.const(wt), strides=s, padding=p, groups=g))
            y = bb.emit(relax.op.add(y, relax.const(bias)))
            if residual:
                y = bb.emit(relax.op.add(y, rv))
            y = bb.emit_output(bb.emit(relax.op.nn.relu(y)))
        bb.emit_func_output(y)
    vm, sched, unscheduled = _compile(bb.get())
    if residual:
        ref = ref + res
    _check(vm, [x, res] if residual else [x], np.maximum(ref, 0))
    lanes = cpu.config_from_target(TARGET).vector_lanes
    narrow = k == 1 and s == 1 and p == 0 and (
        (1 < g < c and ((c // g) % lanes or (o // g) % lanes)) or (g == 1 and o % lanes and o >= 8 * lanes and h * w >= lanes))
    depthwise = g == c == o
    expected = "Conv2d1x1NCHW" if narrow else "DepthwiseConv2dNCHWc" if depthwise else "Conv2dNCHWc"
    assert sched.fired.get(expected) == 1, sched.fired
    assert not sched.failed and not unscheduled, (sched.failed, unscheduled)


@pytest.mark.parametrize("shape,n", [((1, 64), 100), ((37, 48), 70), ((2, 5, 32), 48), ((64, 96), 128)])
def test_matmul_constant_weight(shape, n):
    rng = np.random.default_rng(n)
    k = shape[-1]
    wt = rng.standard_normal((k, n)).astype("float32")
    bias = rng.standard_normal((n,)).astype("float32")
    x = rng.standard_normal(shape).astype("float32")
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(xv, relax.const(wt)))
            y = bb.emit_output(bb.emit(relax.op.add(y, relax.const(bias))))
        bb.emit_func_output(y)
    vm, sched, unscheduled = _compile(bb.get())
    _check(vm, [x], x @ wt + bias)
    assert sched.fired.get("DensePacked") == 1, sched.fired
    assert not sched.failed and not unscheduled, (sched.failed, unscheduled)


def test_dense_register_tile_is_wide():
    """dense_tile: 4 rows x as many 32-column panels as 24 accumulators allow (BERT's 128-row
    matmuls: 4 x 3, measured 1.29x faster in the whole layer than the tall 8 x 1), panels
    dividing the layer's; short M keeps every row; AVX2 (16 columns a panel = 2 ymm, 10
    accumulators) 4 x 1."""
    from accelc.targets.llvm_cpu.schedule_dense import dense_tile

    avx512 = CpuScheduleConfig(vector_lanes=16, dense_max_accum=24)
    assert dense_tile(128, 24, 32, avx512) == (4, 3)   # 768 outputs
    assert dense_tile(128, 96, 32, avx512) == (4, 3)   # 3072
    assert dense_tile(128, 32, 32, avx512) == (4, 2)   # 1024: 3 does not divide 32 panels
    assert dense_tile(6, 24, 32, avx512) == (3, 4)     # 6 rows: 2 tiles of 3
    assert dense_tile(1, 32, 32, avx512) == (1, 8)     # a GEMV row: 8 panels of 32 in flight
    avx2 = CpuScheduleConfig(vector_lanes=8, dense_max_accum=10)
    assert dense_tile(128, 48, 16, avx2) == (4, 1)


def test_pooling_after_packed_conv():
    """max-pool and global average pool run in the packed layout (GenericCpu)."""
    rng = np.random.default_rng(7)
    wt = rng.standard_normal((32, 16, 3, 3)).astype("float32")
    x = rng.standard_normal((1, 16, 15, 15)).astype("float32")
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(x.shape, "float32"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(xv, relax.const(wt), padding=1))
            y = bb.emit(relax.op.nn.max_pool2d(y, pool_size=3, strides=2, padding=1))
            y = bb.emit_output(bb.emit(relax.op.mean(y, axis=[2, 3], keepdims=True)))
        bb.emit_func_output(y)
    vm, sched, unscheduled = _compile(bb.get())
    conv = _conv_ref(x, wt, 1, 1, 1)
    cp = np.pad(conv, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    win = np.lib.stride_tricks.sliding_window_view(cp, (3, 3), axis=(2, 3))[:, :, ::2, ::2]
    ref = win.max(axis=(4, 5)).mean(axis=(2, 3), keepdims=True)
    _check(vm, [x], ref)
    assert sched.fired.get("Conv2dNCHWc") == 1 and sched.fired.get("GenericCpu", 0) >= 2, sched.fired
    assert not sched.failed and not unscheduled, (sched.failed, unscheduled)


def test_packed_pooling_is_vectorized_over_the_channel_block():
    """NCHW16c max-pool: the window loops sit outside a vector loop over the 16 channels of
    the block (it ran as one scalar loop per element, 4-6 GFLOP/s, 5% of SqueezeNet)."""
    from tvm import te, topi

    from accelc.targets.llvm_cpu.schedule_generic import GenericCpu

    x = te.placeholder((1, 4, 15, 15, 16), name="x")
    y = topi.nn.pool2d(x, (3, 3), (2, 2), (1, 1), (0, 0, 0, 0), "max", layout="NCHW16c")
    sch = GenericCpu(cpu.config_from_target(TARGET)).apply(te.create_prim_func([x, y]), TARGET, False)
    text = sch.mod.script()
    assert text.count("T.vectorized(16)") == 2 and "T.parallel" in text, text  # init + update
    assert text.index("for rv0, rv1 in T.grid(3, 3)") < text.rindex("T.vectorized(16)")
    ex = tvm.compile(sch.mod, TARGET)
    data = np.random.default_rng(0).standard_normal((1, 4, 15, 15, 16)).astype("float32")
    out = tvm.runtime.tensor(np.zeros((1, 4, 7, 7, 16), "float32"))
    ex["main"](tvm.runtime.tensor(data), out)
    win = np.lib.stride_tricks.sliding_window_view(data, (3, 3), axis=(2, 3))[:, :, ::2, ::2]
    np.testing.assert_array_equal(out.numpy(), win.max(axis=(5, 6)))


def test_tiny_kernels_run_serially():
    """Kernels of a few kFLOP skip the thread pool (waking and joining it cost more than the
    work: the digits CNN ran 1.9x faster); big ones stay parallel."""
    from accelc.targets.llvm_cpu.apply_cpu_schedules import SERIAL_MAX_FLOPS

    def conv_mod(c, o, hw):
        rng = np.random.default_rng(0)
        bb = relax.BlockBuilder()
        xv = relax.Var("x", relax.TensorType((1, c, hw, hw), "float32"))
        with bb.function("main", [xv]):
            with bb.dataflow():
                w = relax.const(rng.standard_normal((o, c, 3, 3)).astype("float32"))
                y = bb.emit_output(bb.emit(relax.op.nn.relu(bb.emit(relax.op.nn.conv2d(xv, w, padding=1)))))
            bb.emit_func_output(y)
        passes = [*cpu.layout_passes(TARGET), relax.transform.FoldConstant(), relax.transform.LegalizeOps(),
                  relax.transform.AnnotateTIROpPattern(), relax.transform.FuseOps(), relax.transform.FuseTIR(),
                  *cpu.schedule_passes(TARGET)]
        with TARGET:
            mod = tvm.transform.Sequential(passes)(bb.get())
        return [f for g, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc) and "conv2d" in g.name_hint][0]

    assert 2 * 16 * 16 * 9 * 64 < SERIAL_MAX_FLOPS
    assert "T.parallel" not in conv_mod(16, 16, 8).script()
    assert "T.parallel" in conv_mod(32, 32, 28).script()


def test_layout_transforms_store_contiguously():
    """NCHW <-> NCHW16c transforms: the innermost (vector) loop runs along the output's last
    axis, so stores are contiguous (vectorized along w they were a scatter 16 floats apart:
    ShuffleNet's transforms took 1.9 ms, now 1.1), and the values are a plain permutation."""
    from tvm import te, topi

    from accelc.targets.llvm_cpu.schedule_generic import GenericCpu

    for src, dst, shape in [("NCHW", "NCHW16c", (1, 32, 6, 5)), ("NCHW16c", "NCHW", (1, 2, 6, 5, 16))]:
        x = te.placeholder(shape, name="x")
        y = topi.layout_transform(x, src, dst)
        sch = GenericCpu(cpu.config_from_target(TARGET)).apply(te.create_prim_func([x, y]), TARGET, False)
        text = sch.mod.script()
        inner = text[text.rindex("for "):].split("\n")[0]
        expect = "T.vectorized(16)" if dst == "NCHW16c" else "T.vectorized(5)"
        assert expect in inner, (src, dst, inner)
        ex = tvm.compile(sch.mod, TARGET)
        data = np.arange(np.prod(shape), dtype="float32").reshape(shape)
        out = tvm.runtime.tensor(np.zeros([int(d) for d in y.shape], "float32"))
        ex["main"](tvm.runtime.tensor(data), out)
        ref = (data.reshape(1, 2, 16, 6, 5).transpose(0, 1, 3, 4, 2) if dst == "NCHW16c"
               else data.transpose(0, 1, 4, 2, 3).reshape(1, 32, 6, 5))
        np.testing.assert_array_equal(out.numpy(), ref)


def _fused_conv_relu(x_shape, w_shape, padding, seed):
    """The unscheduled fused conv(+relu) PrimFunc of accelc's CPU phases (layout, legalize,
    fuse), for calling one schedule rule on it."""
    rng = np.random.default_rng(seed)
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(x_shape, "float32"))
    w = relax.const(rng.standard_normal(w_shape).astype("float32"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            y = bb.emit_output(bb.emit(relax.op.nn.relu(bb.emit(relax.op.nn.conv2d(xv, w, padding=padding)))))
        bb.emit_func_output(y)
    passes = [*cpu.layout_passes(TARGET), relax.transform.FoldConstant(), relax.transform.LegalizeOps(),
              relax.transform.AnnotateTIROpPattern(), relax.transform.FuseOps(), relax.transform.FuseTIR()]
    with TARGET:
        mod = tvm.transform.Sequential(passes)(bb.get())
    return next(f for g, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc) and "conv" in g.name_hint)


def _loop_names(rule, func, block, **config):
    """Loop variable names around ``block`` after ``rule`` (with config fields overridden)
    schedules ``func``, and the scheduled script."""
    import dataclasses

    sch = rule(dataclasses.replace(cpu.config_from_target(TARGET), **config)).apply(func, TARGET, False)
    return [str(sch.get(l).loop_var) for l in sch.get_loops(sch.get_sblock(block))], sch.mod.script()


def test_conv_runs_input_channels_in_passes():
    """K-blocked conv (MLAS-style): with more input channels than one pass's weights
    (``conv_pass_bytes``), the reduction over input-channel chunks is outside the output rows,
    inside the parallel loop; the epilogue follows the last pass. ``conv_pass_bytes=0`` (or a
    conv that fits one pass) keeps the whole reduction in each register tile."""
    from accelc.targets.llvm_cpu.schedule_conv2d import Conv2dNCHWc

    func = _fused_conv_relu((1, 96, 9, 9), (32, 96, 3, 3), 1, seed=3)
    names, text = _loop_names(Conv2dNCHWc, func, "conv2d_nchwc_update")
    assert names.index("rc_0") < names.index("y_1") and names[0].endswith("fused")  # passes outside the rows
    assert text.count("T.parallel(") == 2  # data_pad, then (oc group, row block)
    names, _ = _loop_names(Conv2dNCHWc, func, "conv2d_nchwc_update", conv_pass_bytes=0)
    assert "rc_0" not in names and names.index("rc") > names.index("x_0")  # whole reduction a tile


def test_conv_parallel_loop_is_cut_by_rows_where_activations_outweigh_weights():
    """rows_outer: an activation-heavy conv (3x3 32->32 @28: 9K weights, 50K activations)
    fuses (batch, row block, oc group) into its parallel loop, so each core writes a band of
    rows (the next layer's core finds them in its own cache); a weight-heavy one (3x3
    256->256 @4: 590K weights, 8K activations) keeps (batch, oc group, row block): cut by rows,
    every core would read every weight. One core: no cut to choose. Both forms are checked
    numerically by test_conv2d_bias_relu (its layers fall on either side)."""
    from accelc.targets.llvm_cpu.schedule_conv2d import Conv2dNCHWc

    light = _fused_conv_relu((1, 32, 28, 28), (32, 32, 3, 3), 1, seed=5)
    heavy = _fused_conv_relu((1, 256, 4, 4), (256, 256, 3, 3), 1, seed=6)
    pointwise = _fused_conv_relu((1, 16, 8, 8), (32, 16, 1, 1), 0, seed=7)  # one pass: the register-tile form
    assert _loop_names(Conv2dNCHWc, light, "conv2d_nchwc_update")[0][0] == "b_y_0_o_0_fused"
    assert _loop_names(Conv2dNCHWc, heavy, "conv2d_nchwc_update")[0][0] == "b_o_0_y_0_fused"
    assert _loop_names(Conv2dNCHWc, pointwise, "conv2d_nchwc_update")[0][0] == "b_y_o_0_fused"
    assert _loop_names(Conv2dNCHWc, light, "conv2d_nchwc_update", num_cores=1)[0][0] == "b_o_0_y_0_fused"
    assert _loop_names(Conv2dNCHWc, pointwise, "conv2d_nchwc_update", num_cores=1)[0][0] == "b_o_0_y_fused"


def test_wide_1x1_gemm_runs_input_channels_in_passes():
    """Conv2d1x1NCHW with K = 256: passes of input channels (a row tile's weights for a pass
    stay in L1 across the pixel tiles), the epilogue after the last pass; numerics of the
    pass form are checked by the conv10 case of test_conv2d_bias_relu (K = 64, 2 passes)."""
    from accelc.targets.llvm_cpu.schedule_conv2d import Conv2d1x1NCHW

    func = _fused_conv_relu((1, 256, 13, 13), (1000, 256, 1, 1), 0, seed=4)
    names, _ = _loop_names(Conv2d1x1NCHW, func, "conv2d_1x1_nchw_update")
    assert names.index("rc_0") < names.index("p_0")  # a pass covers every pixel tile
    names, _ = _loop_names(Conv2d1x1NCHW, func, "conv2d_1x1_nchw_update", conv_pass_bytes=0)
    assert "rc_0" not in names and "rc" in names  # one reduction loop inside each pixel tile


def test_channel_block_and_register_tile():
    assert [channel_block(c, 16) for c in (3, 16, 24, 36, 1000, 64, 58)] == [3, 16, 8, 4, 8, 16, 2]
    avx2 = CpuScheduleConfig(vector_lanes=8, conv_max_accum=12)
    assert avx2.conv_reg_n(56, 16) == 4 and avx2.conv_reg_n(7, 16) == 4 and avx2.conv_reg_n(5, 16) == 5
    avx512 = CpuScheduleConfig(vector_lanes=16, conv_max_accum=28)
    assert avx512.conv_reg_n(56, 16) == 28 and avx512.conv_reg_n(13, 16) == 13
    assert CpuScheduleConfig(vector_lanes=16, conv_max_accum=24).conv_reg_n(55, 16) == 14  # 56 wide, 1 cropped


def test_conv_register_tile_spans_channel_blocks():
    """conv_tile: on AVX-512 (one vector a 16-channel block) the tile takes several blocks,
    so a weight vector serves many pixels and a broadcast pixel many weight vectors; the
    blocks divide the layer's blocks; accumulators stay within the budget."""
    avx512 = CpuScheduleConfig(vector_lanes=16, conv_max_accum=24)
    assert avx512.conv_tile(56, 16, 4) == (8, 2)
    assert avx512.conv_tile(7, 16, 32) == (7, 2)  # deep 7x7 layers: 14 accumulators, not 7
    assert avx512.conv_tile(28, 16, 8) == (4, 4)
    assert avx512.conv_tile(13, 16, 63) == (7, 3)  # 3 divides 63
    assert avx512.conv_tile(55, 16, 1) == (19, 1)  # one block: widest tile (2 columns padded)
    avx2 = CpuScheduleConfig(vector_lanes=8, conv_max_accum=10)
    for width, chunks in [(56, 4), (14, 16), (7, 32), (13, 5), (1, 1)]:
        for cfg in (avx512, avx2):
            pixels, blocks = cfg.conv_tile(width, 16, chunks)
            assert chunks % blocks == 0 and 1 <= pixels <= max(1, width)
            assert pixels * blocks * max(1, 16 // cfg.vector_lanes) <= cfg.conv_max_accum


def test_pointwise_and_unpadded_conv_tiles():
    """conv_tile for 1x1 kernels may use every register but the weights and one broadcast
    (13 x 2 = 26 accumulators for SqueezeNet's 512 -> 64 @13, 7 x 2 before); a conv without
    padding avoids width tiles that would make it pad and crop (squeeze convs @55: 11 x 1,
    not 19 x 1); padded convs and the budget of other kernels are unchanged."""
    avx512 = CpuScheduleConfig(vector_lanes=16, num_vector_regs=32, conv_max_accum=24)
    assert avx512.conv_tile(13, 16, 4) == (7, 2)
    assert avx512.conv_tile(13, 16, 4, pointwise=True, unpadded=True) == (13, 2)
    assert avx512.conv_tile(55, 16, 1) == (19, 1)
    assert avx512.conv_tile(55, 16, 1, pointwise=True, unpadded=True) == (11, 1)
    assert avx512.conv_tile(55, 16, 4, unpadded=False) == (11, 2)
    for width, chunks in [(56, 4), (28, 8), (14, 16), (7, 32), (13, 63)]:
        pixels, blocks = avx512.conv_tile(width, 16, chunks, pointwise=True, unpadded=True)
        assert width % pixels == 0 and chunks % blocks == 0
        assert pixels * blocks + blocks + 1 <= 32  # accumulators + weight vectors + a broadcast


def test_grouped_1x1_tile_and_packed_weight():
    """conv1x1_tile: ShuffleNet's 34 outputs a group get 17-row tiles (a fixed 2-vector pixel
    tile allowed only 2 x 2 accumulators), 28x28 a 7-vector tile that fits 784 pixels
    exactly; the constant weight is legalized pre-packed ([O / rows, cg, rows]: a tile's
    weights for one input channel side by side, its panel contiguous)."""
    cfg = CpuScheduleConfig(vector_lanes=16, conv_max_accum=24, conv1x1_pixel_vecs=8)
    assert cfg.conv1x1_tile(34, 196) == (17, 1)
    assert cfg.conv1x1_tile(34, 784) == (2, 7)
    for og, px in [(34, 196), (68, 49), (1000, 169), (7, 5)]:
        rows, vecs = cfg.conv1x1_tile(og, px)
        assert og % rows == 0 and rows * vecs <= 24 and 1 <= vecs <= 8
    rng = np.random.default_rng(5)
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType((1, 136, 7, 7), "float32"))
    w = rng.standard_normal((136, 34, 1, 1)).astype("float32")
    with bb.function("main", [xv]):
        with bb.dataflow():
            y = bb.emit_output(bb.emit(relax.op.nn.conv2d(xv, relax.const(w), groups=4)))
        bb.emit_func_output(y)
    with TARGET:
        mod = tvm.transform.Sequential(cpu.layout_passes(TARGET))(bb.get())
    calls = [b.value for blk in mod["main"].body.blocks for b in blk.bindings
             if isinstance(b.value, relax.Call) and "call_tir" in str(b.value.op)]
    assert len(calls) == 1
    weight = calls[0].args[1].fields[1].value.numpy()
    rows, _ = cpu.config_from_target(TARGET).conv1x1_tile(34, 49)
    assert weight.shape == (136 // rows, 34, rows)
    np.testing.assert_array_equal(weight.transpose(0, 2, 1).reshape(136, 34), w[:, :, 0, 0])
    func = next(f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc))
    assert "data_flat" in func.script() and "T.int64(34), T.int64(%d)" % rows in func.script()


def test_convert_layout_keeps_narrow_grouped_conv_nchw_after_packed_conv():
    """A grouped 1x1 conv that stays NCHW (ShuffleNet) right after a packed conv: ConvertLayout
    must be told NCHW explicitly, else conv2d's layout inference takes the packed input layout
    and fails on the whole graph (every conv was then packed alone)."""
    from accelc.targets.llvm_cpu.convert_conv2d_layout import ConvertConv2dLayout

    rng = np.random.default_rng(4)
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType((1, 24, 8, 8), "float32"))
    w1 = rng.standard_normal((24, 24, 1, 1)).astype("float32")
    w2 = rng.standard_normal((112, 6, 1, 1)).astype("float32")
    with bb.function("main", [xv]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.relu(bb.emit(relax.op.nn.conv2d(xv, relax.const(w1)))))
            y = bb.emit_output(bb.emit(relax.op.nn.conv2d(y, relax.const(w2), groups=4)))
        bb.emit_func_output(y)
    layout = ConvertConv2dLayout(cpu.config_from_target(TARGET))
    with TARGET:
        layout(bb.get())
    assert layout.fallback is None
    vm, sched, unscheduled = _compile(bb.get())
    x = rng.standard_normal((1, 24, 8, 8)).astype("float32")
    ref = _conv_ref(np.maximum(_conv_ref(x, w1, 1, 0, 1), 0), w2, 1, 0, 4)
    _check(vm, [x], ref)
    assert not unscheduled


def test_layout_pass_packs_weights_at_compile_time():
    """After layout_passes + FoldConstant no layout_transform of a weight is left at run time."""
    rng = np.random.default_rng(3)
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType((1, 16, 8, 8), "float32"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(xv, relax.const(rng.standard_normal((32, 16, 3, 3)).astype("float32"))))
            y = bb.emit_output(bb.emit(relax.op.nn.conv2d(y, relax.const(rng.standard_normal((16, 32, 1, 1)).astype("float32")))))
        bb.emit_func_output(y)
    with TARGET:
        mod = tvm.transform.Sequential([*cpu.layout_passes(TARGET), relax.transform.FoldConstant()])(bb.get())
    text = mod["main"].script()
    # one transform in (x -> NCHW16c), one out (-> NCHW); none on weights, none between convs
    assert text.count("layout_transform") == 2, text
    assert text.count("call_tir") == 2  # the two convolutions
