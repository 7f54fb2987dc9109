"""Layers on the VTA simulator: bit-exact against the CPU int8 semantics, exact GEMM counts,
pipelined vs serial, serialization, and the errors a caller can cause."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from accelc.errors import AccelcError, InputMismatchError
from accelc.quantize.fixed_point import requantize_reference
from accelc.targets.vta import PRESETS, Simulator, VTAConfig, VTAError
from accelc.targets.vta.layer import CompiledLayer, LayerSpec, compile_layer, reference_layer, run_layer
from accelc.targets.vta.planner import Problem, TilePlan, hazard_free

DEFAULT = VTAConfig()
SMALL = PRESETS["2x8_i8w8a32_15_15_16_17"]


def rand_layer(spec: LayerSpec, seed: int = 0, per_channel: bool = True):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, spec.input_shape).astype(np.int8)
    w = rng.integers(-128, 128, spec.weight_shape).astype(np.int8)
    b = rng.integers(-20000, 20000, spec.out_channels).astype(np.int32)
    s = rng.integers(0, 14, spec.out_channels) if per_channel else np.int64(9)
    return x, w, b, s


def expected_gemm_ops(spec: LayerSpec, cfg: VTAConfig) -> int:
    oh, ow = spec.out_hw()
    blocks = math.ceil(spec.out_channels / cfg.block_out) * math.ceil(spec.in_channels / cfg.block_in)
    if spec.kind == "dense":
        return blocks * math.ceil(spec.batch / cfg.batch)
    return math.ceil(spec.batch / cfg.batch) * blocks * oh * ow * spec.kernel[0] * spec.kernel[1]


def run_and_check(spec, cfg, plan=None, seed=0, **kw):
    x, w, b, s = rand_layer(spec, seed)
    compiled = compile_layer(spec, w, b, s, cfg, plan, **kw)
    y, stats = run_layer(compiled, x)
    np.testing.assert_array_equal(y, reference_layer(spec, x, w, b, s))
    assert y.shape == spec.output_shape and y.dtype == np.int8
    assert stats.gemm_counter == compiled.gemm_ops == expected_gemm_ops(spec, cfg)
    p = Problem.from_spec(spec, cfg)
    assert stats.out_store_nbytes == p.n_blocks * p.oc_blocks * p.oh * p.ow * cfg.out_elem_bytes
    if hazard_free(p, compiled.plan):
        assert stats.acc_raw_hazards == 0
    return compiled, stats


CONV_CASES = {
    "1x1": LayerSpec("conv2d", 1, 32, 48, 6, 6),
    "1x1_s2": LayerSpec("conv2d", 1, 32, 48, 9, 9, stride=(2, 2)),
    "3x3_pad_relu": LayerSpec("conv2d", 1, 16, 16, 8, 8, (3, 3), padding=(1, 1, 1, 1), relu=True),
    "3x3_s2_odd_channels": LayerSpec("conv2d", 1, 20, 36, 9, 11, (3, 3), (2, 2), (1, 1, 1, 1)),
    "3x3_asym_pad": LayerSpec("conv2d", 1, 7, 5, 7, 6, (3, 3), (1, 2), (0, 2, 2, 1)),
    "7x7_s2_pad3": LayerSpec("conv2d", 1, 3, 24, 15, 15, (7, 7), (2, 2), (3, 3, 3, 3), relu=True),
    "5x3_rect": LayerSpec("conv2d", 1, 17, 33, 10, 8, (5, 3), (1, 2), (2, 1, 2, 1)),
    "batch3": LayerSpec("conv2d", 3, 18, 20, 5, 5, (3, 3), padding=(1, 1, 1, 1)),
}


@pytest.mark.parametrize("name", CONV_CASES)
def test_conv_bit_exact(name):
    run_and_check(CONV_CASES[name], DEFAULT)


@pytest.mark.parametrize("spec", [LayerSpec("dense", 1, 100, 50, relu=True), LayerSpec("dense", 5, 64, 130)],
                         ids=["dense_b1", "dense_b5"])
def test_dense_bit_exact(spec):
    run_and_check(spec, DEFAULT)


def test_multi_tile_ic_oc_and_spatial():
    """Forced small tiles: 3 reduction steps, 3 output-channel tiles, edge tiles in every dim."""
    spec = LayerSpec("conv2d", 1, 40, 40, 9, 10, (3, 3), padding=(1, 1, 1, 1), relu=True)
    for order in ("oc_outer", "spatial_outer"):
        compiled, stats = run_and_check(spec, DEFAULT, TilePlan(1, 1, 4, 3, order))
        assert stats.n_gemm > 3 * 3 * 3


@pytest.mark.parametrize("cfg", [SMALL, VTAConfig(LOG_BLOCK_IN=3, LOG_INP_BUFF_SIZE=14, LOG_WGT_BUFF_SIZE=17)],
                         ids=["2x8", "1x8x16"])
def test_non_default_configs(cfg):
    run_and_check(LayerSpec("conv2d", 3, 20, 36, 9, 11, (3, 3), (2, 2), (1, 1, 1, 1), relu=True), cfg)
    run_and_check(LayerSpec("conv2d", 2, 12, 10, 6, 6, (3, 3), padding=(1, 1, 1, 1)), cfg, TilePlan(1, 1, 2, 4))
    run_and_check(LayerSpec("dense", 5, 30, 19), cfg)


def test_reference_matches_cpu_requantize():
    """reference_layer == accelc's CPU requantize (fixed_point.requantize_reference, M0 = 1)
    applied to a naive int64 convolution."""
    spec = LayerSpec("conv2d", 2, 5, 4, 6, 5, (3, 2), (2, 1), (1, 0, 2, 1), relu=True)
    x, w, b, s = rand_layer(spec)
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (1, 2), (0, 1)))
    oh, ow = spec.out_hw()
    acc = np.zeros(spec.output_shape, np.int64)
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, 2 * i:2 * i + 3, j:j + 2]
            acc[:, :, i, j] = np.einsum("nckl,ockl->no", patch, w.astype(np.int64))
    acc = np.maximum(acc + b[None, :, None, None], 0)
    cpu = requantize_reference(acc, np.ones((1, 4, 1, 1), np.int64), s.reshape(1, 4, 1, 1))
    np.testing.assert_array_equal(reference_layer(spec, x, w, b, s), cpu)


def test_pipelined_matches_serial_and_is_faster():
    spec = LayerSpec("conv2d", 1, 64, 64, 14, 14, (3, 3), padding=(1, 1, 1, 1), relu=True)
    x, w, b, s = rand_layer(spec)
    compiled = compile_layer(spec, w, b, s, DEFAULT)
    sim = Simulator(DEFAULT)
    y, piped = run_layer(compiled, x, simulator=sim)
    y_serial, serial = run_layer(compiled, x, force_serial=True, simulator=sim)
    np.testing.assert_array_equal(y, y_serial)
    assert piped.cycles < serial.cycles
    assert piped.acc_raw_hazards == 0
    # The same tiles with one virtual thread: a serial stream, slower than double buffering.
    one = compile_layer(spec, w, b, s, DEFAULT, dataclasses.replace(compiled.plan, virtual_threads=1))
    y_one, one_stats = run_layer(one, x, simulator=sim)
    np.testing.assert_array_equal(y, y_one)
    assert one_stats.cycles > piped.cycles
    assert compile_layer(spec, w, b, s, DEFAULT, virtual_threads=1).plan.virtual_threads == 1


def test_uniform_shift_and_no_bias():
    spec = LayerSpec("conv2d", 1, 16, 24, 5, 5, (3, 3), padding=(1, 1, 1, 1))
    x, w, _, _ = rand_layer(spec)
    for bias, shift in ((None, 8), (None, 0), (np.full(24, -7, np.int32), np.full(24, 3))):
        y, _ = run_layer(compile_layer(spec, w, bias, shift, DEFAULT), x)
        np.testing.assert_array_equal(y, reference_layer(spec, x, w, bias, shift))


def test_serialization_roundtrip():
    spec = CONV_CASES["3x3_s2_odd_channels"]
    x, w, b, s = rand_layer(spec)
    compiled = compile_layer(spec, w, b, s, DEFAULT)
    data = compiled.to_bytes()
    again = CompiledLayer.from_bytes(data, DEFAULT)
    assert again.spec == spec and again.plan == compiled.plan and again.program == compiled.program
    assert again.to_bytes() == data
    np.testing.assert_array_equal(run_layer(again, x)[0], run_layer(compiled, x)[0])
    with pytest.raises(VTAError, match="config"):
        CompiledLayer.from_bytes(data, SMALL)
    with pytest.raises(VTAError, match="truncated"):
        CompiledLayer.from_bytes(data[:-1], DEFAULT)
    with pytest.raises(VTAError, match="magic"):
        CompiledLayer.from_bytes(b"x" * 64, DEFAULT)


def test_user_errors_are_one_line_accelc_errors():
    spec = LayerSpec("conv2d", 1, 16, 16, 4, 4, (3, 3), padding=(1, 1, 1, 1))
    x, w, b, s = rand_layer(spec)
    compiled = compile_layer(spec, w, b, s, DEFAULT)
    with pytest.raises(InputMismatchError):
        run_layer(compiled, x.astype(np.int16))
    with pytest.raises(InputMismatchError):
        run_layer(compiled, x[:, :8])
    with pytest.raises(VTAError, match="overflow"):
        compile_layer(spec, w, np.full(16, 2**31 - 1000, np.int64), s, DEFAULT)
    with pytest.raises(VTAError, match="shift"):
        compile_layer(spec, w, b, -1, DEFAULT)
    for bad in (dict(kind="pool"), dict(kernel=(9, 9)), dict(stride=(0, 1)), dict(batch=0)):
        with pytest.raises(AccelcError):
            LayerSpec(**{**dict(kind="conv2d", batch=1, in_channels=4, out_channels=4, height=4, width=4), **bad})
    with pytest.raises(AccelcError):
        LayerSpec("dense", 1, 4, 4, kernel=(3, 3))
