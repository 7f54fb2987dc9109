"""Tile-plan search: never worse than the default plan, resumable from its append-only log,
tolerant of torn and foreign lines."""

from __future__ import annotations

import json

import numpy as np
import pytest

from accelc.targets.vta import PRESETS, VTAConfig, VTAError
from accelc.targets.vta.layer import LayerSpec, compile_layer, run_layer
from accelc.targets.vta.planner import default_plan
from accelc.targets.vta.tune import load_best_plans, load_results, tune_layer, tune_model_layers

CFG = VTAConfig()
SPEC = LayerSpec("conv2d", 1, 32, 48, 12, 12, (3, 3), padding=(1, 1, 1, 1), relu=True)


def layer(spec=SPEC, seed=0):
    rng = np.random.default_rng(seed)
    return (spec, rng.integers(-128, 128, spec.weight_shape).astype(np.int8),
            rng.integers(-500, 500, spec.out_channels).astype(np.int32), 8)


def test_tune_improves_or_equals_default_and_resumes(tmp_path):
    log = tmp_path / "vta.jsonl"
    spec, w, b, s = layer()
    messages = []
    best, results = tune_layer(spec, w, b, s, CFG, 4, log_path=log, progress=messages.append)
    assert len(results) == 4 and len(messages) == 4
    default = default_plan(spec, CFG)
    assert results[0].plan == default
    cycles = {r.plan: r.cycles for r in results}
    assert all(c is not None for c in cycles.values())
    assert cycles[best] == min(cycles.values()) <= cycles[default]
    x = np.random.default_rng(1).integers(-128, 128, spec.input_shape).astype(np.int8)
    assert run_layer(compile_layer(spec, w, b, s, CFG, best), x)[1].cycles == cycles[best]
    lines = log.read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line)["config"] == CFG.name for line in lines)

    # Resume: nothing is measured again; asking for more measures only the new ones.
    best2, results2 = tune_layer(spec, w, b, s, CFG, 4, log_path=log)
    assert best2 == best and all(r.resumed for r in results2)
    assert len(log.read_text().splitlines()) == 4
    _, results3 = tune_layer(spec, w, b, s, CFG, 6, log_path=log)
    assert sum(not r.resumed for r in results3) == 2
    assert len({r.plan for r in results3}) == 6
    assert load_best_plans(log, CFG)[spec.key] == min(
        (r for r in results3 if r.cycles), key=lambda r: (r.cycles, str(r.plan))).plan


def test_log_tolerates_torn_and_foreign_lines(tmp_path):
    log = tmp_path / "vta.jsonl"
    spec, w, b, s = layer(LayerSpec("dense", 2, 40, 70))
    tune_layer(spec, w, b, s, CFG, 2, log_path=log)
    with open(log, "ab") as f:
        f.write(b'{"accelc_tuning": 1, "kind": "trial"}\nnot json\n{"accelc_vta_tuning": 1, "config": "x", "lay')
    assert len(load_results(log, CFG)[spec.key]) == 2
    _, results = tune_layer(spec, w, b, s, CFG, 3, log_path=log)  # appends after the torn line
    assert len(results) == 3
    assert len(load_results(log, CFG)[spec.key]) == 3
    assert load_best_plans(log, PRESETS["2x8_i8w8a32_15_15_16_17"]) == {}


def test_tune_model_layers_dedupes_by_key(tmp_path):
    log = tmp_path / "model.jsonl"
    a = layer()
    relu_twin = layer(LayerSpec("conv2d", 1, 32, 48, 12, 12, (3, 3), padding=(1, 1, 1, 1)), seed=1)
    small = layer(LayerSpec("conv2d", 1, 8, 8, 5, 5))
    messages = []
    best = tune_model_layers([a, relu_twin, small], CFG, 2, log, progress=messages.append)
    assert set(best) == {SPEC.key, small[0].key}
    assert sum("layer" in m for m in messages) == 2
    assert load_best_plans(log, CFG) == best


def test_bad_trials():
    spec, w, b, s = layer(LayerSpec("conv2d", 1, 8, 8, 5, 5))
    with pytest.raises(VTAError):
        tune_layer(spec, w, b, s, CFG, 0)
