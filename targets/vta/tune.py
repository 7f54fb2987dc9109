"""Tile-plan search against the simulator's cycle model, with a resumable JSON-lines log.

The search space is :func:`planner.candidate_plans` (legal maximal tilings in both loop
orders), ranked by :func:`planner.estimate_cycles`; ``tune_layer`` measures the default plan
and then the best-ranked unmeasured candidates until ``trials`` plans of this layer have been
measured, checking each output bit for bit against the default plan's. The simulator is
deterministic, so one run per plan is the measurement.

Log format (one JSON object per line, append-only; written with
``accelc.tuning.records.append_lines``: one ``O_APPEND`` write + fsync under a file lock, a
torn last line never swallows the next record; reading skips torn, corrupt and foreign lines):

    accelc_vta_tuning 1          format version
    config            VTAConfig.name (the ISA; plans are legal for every config with that name)
    layer             LayerSpec.key
    spec              LayerSpec as a dict
    plan              TilePlan as a dict
    cycles            simulated cycles (null when the plan failed)
    gemm_utilization  gemm_counter / cycles
    error             null, or why the plan failed
    time, session     UNIX time, id of the tuning session

Resuming = loading the log first: plans already measured for (config, layer) are not run
again and count towards ``trials``.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from accelc.tuning.records import append_lines

from .config import VTAConfig, VTAError
from .layer import LayerSpec, compile_layer, run_layer
from .planner import Problem, TilePlan, candidate_plans, default_plan
from .simulator import Simulator

FORMAT_VERSION = 1

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TrialResult:
    plan: TilePlan
    cycles: int | None  # None: the plan failed (error says why)
    gemm_utilization: float
    error: str | None = None
    resumed: bool = False  # loaded from the log, not measured in this call


def _load_lines(path: Path) -> list[dict]:
    """Records of the log; torn, corrupt and foreign lines are skipped."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    if not raw.endswith(b"\n"):
        lines = lines[:-1]  # incomplete last line: a writer was killed or is mid-write
    out = []
    for line in lines:
        try:
            d = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            continue
        if (isinstance(d, dict) and d.get("accelc_vta_tuning") == FORMAT_VERSION
                and isinstance(d.get("plan"), dict) and isinstance(d.get("layer"), str)
                and isinstance(d.get("config"), str)):
            out.append(d)
    return out


def _trial_of(d: dict) -> TrialResult | None:
    try:
        plan = TilePlan.from_dict(d["plan"])
    except VTAError:
        return None
    cycles = d.get("cycles")
    ok = isinstance(cycles, int) and cycles > 0
    return TrialResult(plan, cycles if ok else None, float(d.get("gemm_utilization") or 0.0),
                       d.get("error") if not ok else None, resumed=True)


def _record(cfg: VTAConfig, spec: LayerSpec, r: TrialResult, session: str) -> dict:
    return {"accelc_vta_tuning": FORMAT_VERSION, "config": cfg.name, "layer": spec.key,
            "spec": spec.to_dict(), "plan": r.plan.to_dict(), "cycles": r.cycles,
            "gemm_utilization": r.gemm_utilization, "error": r.error,
            "time": round(time.time(), 3), "session": session}


def load_results(path: str | Path, cfg: VTAConfig) -> dict[str, list[TrialResult]]:
    """Every measured plan of ``cfg`` in the log, per layer key."""
    out: dict[str, list[TrialResult]] = {}
    for d in _load_lines(Path(path)):
        if d["config"] != cfg.name:
            continue
        r = _trial_of(d)
        if r is not None:
            out.setdefault(d["layer"], []).append(r)
    return out


def load_best_plans(path: str | Path, cfg: VTAConfig) -> dict[str, TilePlan]:
    """The fastest successful plan per layer key (``LayerSpec.key``) for ``cfg``."""
    best: dict[str, TilePlan] = {}
    for key, results in load_results(path, cfg).items():
        ok = [r for r in results if r.cycles is not None]
        if ok:
            best[key] = min(ok, key=lambda r: (r.cycles, str(r.plan))).plan
    return best


def _measure(spec: LayerSpec, weight, bias, shift, cfg: VTAConfig, plan: TilePlan, x: np.ndarray,
             expect: np.ndarray | None, sim: Simulator) -> tuple[TrialResult, np.ndarray | None]:
    try:
        compiled = compile_layer(spec, weight, bias, shift, cfg, plan)
        y, stats = run_layer(compiled, x, simulator=sim)
    except VTAError as e:
        return TrialResult(plan, None, 0.0, str(e)), None
    if expect is not None and not np.array_equal(y, expect):
        return TrialResult(plan, None, 0.0, "output differs from the default plan's"), None
    return TrialResult(plan, stats.cycles, stats.gemm_utilization), y


def tune_layer(spec: LayerSpec, weight: np.ndarray, bias: np.ndarray | None, shift: Any, cfg: VTAConfig,
               trials: int, *, log_path: str | Path | None = None, virtual_threads: int = 2,
               progress: Progress | None = None, simulator: Simulator | None = None,
               seed: int = 0) -> tuple[TilePlan, list[TrialResult]]:
    """Measure up to ``trials`` plans (the default first); returns the fastest and all results
    (resumed ones included). With ``log_path`` every measurement is appended as it is made."""
    if trials < 1:
        raise VTAError(f"trials must be >= 1, got {trials}")
    sim = simulator or Simulator(cfg)
    log = Path(log_path) if log_path is not None else None
    session = uuid.uuid4().hex[:12]
    results = list(load_results(log, cfg).get(spec.key, [])) if log is not None else []
    done = {r.plan for r in results}
    p = Problem.from_spec(spec, cfg)
    base = default_plan(p, cfg, virtual_threads)
    queue = [base] + [pl for pl in candidate_plans(p, cfg, virtual_threads) if pl != base]
    x = np.random.default_rng(seed).integers(-128, 128, spec.input_shape).astype(np.int8)
    expect = None
    for plan in queue:
        if len(results) >= trials:
            break
        if plan in done and plan != base:
            continue
        r, y = _measure(spec, weight, bias, shift, cfg, plan, x, expect, sim)
        if plan == base:
            expect = y  # the reference output for every other plan
            if plan in done:
                continue
        results.append(r)
        done.add(plan)
        if log is not None:
            append_lines(log, (json.dumps(_record(cfg, spec, r, session)) + "\n").encode())
        if progress is not None:
            what = f"{r.cycles} cycles, GEMM util {100 * r.gemm_utilization:.1f}%" if r.cycles else f"failed: {r.error}"
            progress(f"{spec.key} [{len(results)}/{trials}] {r.plan}: {what}")
    ok = [r for r in results if r.cycles is not None]
    if not ok:
        raise VTAError(f"no tile plan of {spec.key} ran: {results[0].error if results else 'none tried'}")
    return min(ok, key=lambda r: (r.cycles, str(r.plan))).plan, results


def tune_model_layers(layers: Sequence[tuple[LayerSpec, np.ndarray, np.ndarray | None, Any]], cfg: VTAConfig,
                      trials_per_layer: int, log_path: str | Path,
                      progress: Progress | None = None) -> dict[str, TilePlan]:
    """Tune every distinct layer (by ``LayerSpec.key``) of a model; returns the best plan per key
    (``accelc tune --target vta`` entry point). Rerunning resumes from ``log_path``."""
    sim = Simulator(cfg)
    best: dict[str, TilePlan] = {}
    for i, (spec, weight, bias, shift) in enumerate(layers):
        if spec.key in best:
            continue
        if progress is not None:
            progress(f"layer {i + 1}/{len(layers)}: {spec.key}")
        best[spec.key], _ = tune_layer(spec, weight, bias, shift, cfg, trials_per_layer, log_path=log_path,
                                       progress=progress, simulator=sim)
    return best


__all__ = ["TrialResult", "tune_layer", "tune_model_layers", "load_best_plans", "load_results",
           "FORMAT_VERSION"]
