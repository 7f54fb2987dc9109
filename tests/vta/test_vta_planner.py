"""Tile planner: every plan it proposes fits every buffer and field (checked by lowering,
encoding and simulating random shapes), and hand-made illegal plans are refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accelc.errors import AccelcError
from accelc.targets.vta import PRESETS, Simulator, VTAConfig
from accelc.targets.vta.isa import GemmInsn, MemInsn, encode_program, sram_depth
from accelc.targets.vta.layer import LayerSpec, compile_layer, reference_layer, run_layer
from accelc.targets.vta.planner import (Problem, TilePlan, TilingError, candidate_plans, check_plan,
                                        default_plan)

CONFIGS = [VTAConfig(), PRESETS["2x8_i8w8a32_15_15_16_17"],
           VTAConfig(LOG_INP_BUFF_SIZE=12, LOG_WGT_BUFF_SIZE=14, LOG_ACC_BUFF_SIZE=12, LOG_UOP_BUFF_SIZE=10)]


@st.composite
def conv_specs(draw, max_hw=30, max_c=200):
    k = draw(st.sampled_from([(1, 1), (3, 3), (5, 5), (7, 7), (1, 3), (3, 1)]))
    s = draw(st.sampled_from([(1, 1), (2, 2), (1, 2)]))
    pad = tuple(draw(st.integers(0, k[i % 2] - 1)) for i in range(4))
    h = draw(st.integers(k[0], max_hw))
    w = draw(st.integers(k[1], max_hw))
    return LayerSpec("conv2d", draw(st.integers(1, 3)), draw(st.integers(1, max_c)), draw(st.integers(1, max_c)),
                     h, w, k, s, pad, draw(st.booleans()))


def _program_fits(compiled, cfg):
    """Every memory instruction stays inside its buffer and the stream encodes (all fields fit)."""
    encode_program(compiled.program, cfg)
    for insn in compiled.program:
        if isinstance(insn, MemInsn) and not insn.is_nop:
            assert insn.sram_base + insn.sram_extent <= sram_depth(cfg, insn.memory_type)
        if isinstance(insn, GemmInsn):
            assert insn.uop_end <= cfg.uop_depth


def _check_planned_programs_fit(spec, cfg_index, pick):
    """The default plan and a random candidate lower to programs within every limit."""
    cfg = CONFIGS[cfg_index]
    w = np.ones(spec.weight_shape, np.int8)
    try:
        plans = candidate_plans(spec, cfg)
    except TilingError:
        return  # a layer-level limit: refused, not mis-planned
    if not plans:  # e.g. a 7x7 kernel over many channels on the tiny config
        with pytest.raises(TilingError, match="no tile plan"):
            default_plan(spec, cfg)
        return
    for plan in {plans[0], plans[pick % len(plans)]}:
        check_plan(Problem.from_spec(spec, cfg), plan, cfg)
        _program_fits(compile_layer(spec, w, None, 4, cfg, plan), cfg)


_ARGS = dict(cfg_index=st.integers(0, len(CONFIGS) - 1), pick=st.integers(0, 10_000))


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(spec=conv_specs(max_hw=24, max_c=160), **_ARGS)
def test_planned_programs_fit(spec, cfg_index, pick):
    _check_planned_programs_fit(spec, cfg_index, pick)


@pytest.mark.slow
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=conv_specs(max_hw=64, max_c=600), **_ARGS)
def test_planned_programs_fit_sweep(spec, cfg_index, pick):
    _check_planned_programs_fit(spec, cfg_index, pick)


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(spec=conv_specs(max_hw=12, max_c=40), cfg_index=st.integers(0, len(CONFIGS) - 1), pick=st.integers(0, 10_000))
def test_random_plans_bit_exact(spec, cfg_index, pick):
    cfg = CONFIGS[cfg_index]
    try:
        plans = candidate_plans(spec, cfg)
    except TilingError:
        return
    if not plans:
        return
    rng = np.random.default_rng(pick)
    x = rng.integers(-128, 128, spec.input_shape).astype(np.int8)
    w = rng.integers(-128, 128, spec.weight_shape).astype(np.int8)
    b = rng.integers(-1000, 1000, spec.out_channels).astype(np.int32)
    compiled = compile_layer(spec, w, b, 7, cfg, plans[pick % len(plans)])
    y, stats = run_layer(compiled, x, simulator=Simulator(cfg))
    np.testing.assert_array_equal(y, reference_layer(spec, x, w, b, 7))
    assert stats.gemm_counter == compiled.gemm_ops


def test_default_plan_is_hazard_free_and_fills_buffers():
    cfg = VTAConfig()
    spec = LayerSpec("conv2d", 1, 64, 64, 56, 56, (3, 3), padding=(1, 1, 1, 1))
    plan = default_plan(spec, cfg)
    p = Problem.from_spec(spec, cfg)
    assert plan.virtual_threads == 2
    # Big tiles: the accumulator half is mostly used.
    assert plan.oc_tile * plan.oh_tile * plan.ow_tile >= cfg.acc_depth // 2 // 8
    plans = candidate_plans(spec, cfg)
    assert plans[0] == plan and len(set(plans)) == len(plans)
    for pl in plans:
        check_plan(p, pl, cfg)


ILLEGAL = {
    "weights exceed half": (LayerSpec("conv2d", 1, 512, 512, 7, 7, (3, 3), padding=(1, 1, 1, 1)),
                            TilePlan(32, 32, 1, 1), "weight tile"),
    "inputs exceed half": (LayerSpec("conv2d", 1, 64, 64, 56, 56, (3, 3), padding=(1, 1, 1, 1)),
                           TilePlan(1, 4, 56, 56), "input tile"),
    "acc exceeds half": (LayerSpec("conv2d", 1, 16, 256, 32, 32), TilePlan(16, 1, 8, 8), "accumulator"),
    "tile larger than layer": (LayerSpec("conv2d", 1, 16, 16, 8, 8), TilePlan(2, 1, 8, 8), "oc_tile"),
    "zero tile": (LayerSpec("conv2d", 1, 16, 16, 8, 8), TilePlan(1, 1, 0, 8), "oh_tile"),
    "bad order": (LayerSpec("conv2d", 1, 16, 16, 8, 8), TilePlan(1, 1, 8, 8, "ic_outer"), "order"),
    "three threads": (LayerSpec("conv2d", 1, 16, 16, 8, 8), TilePlan(1, 1, 8, 8, virtual_threads=3), "virtual"),
    "uop kernel": (LayerSpec("conv2d", 1, 32, 32, 8, 64, (7, 7), padding=(3, 3, 3, 3)),
                   TilePlan(2, 2, 1, 64, virtual_threads=1), "micro-op"),
}


@pytest.mark.parametrize("name", ILLEGAL)
def test_illegal_plans_rejected(name):
    spec, plan, match = ILLEGAL[name]
    cfg = VTAConfig()
    with pytest.raises(TilingError, match=match) as e:
        check_plan(Problem.from_spec(spec, cfg), plan, cfg)
    assert isinstance(e.value, AccelcError) and "\n" not in str(e.value)
    with pytest.raises(TilingError):
        compile_layer(spec, np.zeros(spec.weight_shape, np.int8), None, 0, cfg, plan)


def test_untileable_layers_rejected():
    cfg = VTAConfig()
    for spec, match in ((LayerSpec("conv2d", 1, 4, 4, 40, 40, (17, 17), padding=(16,) * 4), "pad field"),
                        (LayerSpec("conv2d", 1, 4, 4, 9, 9, (3, 3), padding=(3, 0, 0, 0)), "padding"),
                        (LayerSpec("conv2d", 1, 4, 4, 8, 70000), "stride")):
        with pytest.raises(TilingError, match=match):
            default_plan(spec, cfg)
    tiny = VTAConfig(LOG_INP_BUFF_SIZE=8, LOG_WGT_BUFF_SIZE=12, LOG_ACC_BUFF_SIZE=9)
    with pytest.raises(TilingError, match="no tile plan"):
        default_plan(LayerSpec("conv2d", 1, 16, 16, 20, 20, (7, 7)), tiny)
    with pytest.raises(TilingError, match="constant rows"):
        default_plan(LayerSpec("dense", 1, 16, 16 * 1024), tiny)


def test_plan_dict_roundtrip():
    plan = TilePlan(2, 3, 4, 5, "spatial_outer", 1)
    assert TilePlan.from_dict(plan.to_dict()) == plan
    with pytest.raises(TilingError):
        TilePlan.from_dict({"oc_tile": 1})
