"""accelc tune end to end on a one-kernel model: it speeds the kernel up, resumes, survives
kill -9 and Ctrl-C, shares a log with a second tuner, and compile applies the records."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest

from accelc.tuning.records import TuningLog
from accelc.tuning.tuner import TuneOptions, tune
from accelc.tuning.builder import MeasureConfig

from tuning_models import matmul_relu_model

# Small and quick: a handful of trials, a small search population, short measurements.
FAST = dict(opt_level=1, batch=4, population=16, cost_model="random",
            measure=MeasureConfig(repeat=2, min_repeat_ms=5))
FAST_CLI = ["-O", "1", "--batch", "4", "--population", "16", "--cost-model", "random",
            "--repeat", "2", "--min-repeat-ms", "5", "--progress", "lines"]


def accelc(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "accelc", *map(str, args)], capture_output=True, text=True,
                          timeout=300, **kwargs)


def start_accelc(*args):
    return subprocess.Popen([sys.executable, "-m", "accelc", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def trial_lines(path):
    return [r for r in TuningLog.load(path, warn=False).records if r.kind == "trial"]


def wait_for_trials(path, n, proc, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and len(trial_lines(path)) >= n:
            return
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    raise AssertionError(f"no {n} trials in {path} after {timeout} s")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tune") / "mm.onnx"
    onnx.save(matmul_relu_model(), path)
    return path


@pytest.fixture(scope="module")
def tuned(model_path, tmp_path_factory):
    """An 8-trial log, tuned in this process; returns (log path, TuneResult, seconds)."""
    log = tmp_path_factory.mktemp("tune") / "mm.jsonl"
    start = time.perf_counter()
    result = tune(TuneOptions(log=str(log), model=str(model_path), trials=8, **FAST))
    return log, result, time.perf_counter() - start


def test_tuning_a_tiny_model_is_quick_and_speeds_it_up(tuned):
    log, result, seconds = tuned
    assert seconds < 60, f"tuning 8 trials took {seconds:.0f} s"
    assert result.session_trials == 8 and result.stop_reason == "trial budget reached"
    (state,) = result.states
    assert state.trials == 8 and state.baseline_s is not None and state.best_s is not None
    assert result.estimate_s < result.baseline_estimate_s / 3  # naive loops vs any tiled schedule
    records = TuningLog.load(log).records
    assert [r.kind for r in records].count("baseline") == 1
    assert len({r.sch_hash for r in records if r.kind == "trial"}) == 8  # no schedule measured twice
    assert result.trials_per_second > 0


def test_compile_with_records_is_faster_and_still_matches_onnxruntime(tuned, model_path):
    import onnxruntime as ort

    import accelc

    log, _, _ = tuned
    plain = accelc.compile(str(model_path), opt_level=1)
    fast = accelc.compile(str(model_path), opt_level=1, tuning_records=str(log))
    assert fast.tuning is not None and list(fast.tuning.tuned) == ["fused_matmul_relu"]
    assert not fast.tuning.fallback
    x = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    ref = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(fast.run({"x": x})["y"], ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(plain.run({"x": x})["y"], ref, rtol=1e-4, atol=1e-4)
    untuned_ms = np.median(plain.benchmark({"x": x}, repeat=15, warmup=2))
    tuned_ms = np.median(fast.benchmark({"x": x}, repeat=15, warmup=2))
    assert tuned_ms < untuned_ms / 2, (tuned_ms, untuned_ms)


def test_resume_adds_trials_without_repeating_finished_ones(tuned, model_path, tmp_path):
    log = tmp_path / "resume.jsonl"
    shutil.copy(tuned[0], log)
    before = trial_lines(log)
    result = tune(TuneOptions(log=str(log), model=str(model_path), trials=12, **FAST))
    assert result.session_trials == 4  # the 8 logged trials count toward the 12
    after = trial_lines(log)
    assert len(after) == 12 and [r.data for r in after[:8]] == [r.data for r in before]
    assert len({r.sch_hash for r in after}) == 12
    assert sum(r.kind == "baseline" for r in TuningLog.load(log).records) == 1  # baseline reused
    again = tune(TuneOptions(log=str(log), model=str(model_path), trials=12, **FAST))
    assert again.session_trials == 0 and len(trial_lines(log)) == 12


def test_a_damaged_log_still_loads_and_applies(tuned, model_path, tmp_path):
    import accelc

    log = tmp_path / "damaged.jsonl"
    lines = tuned[0].read_text().splitlines(keepends=True)
    lines.insert(2, "{ not json\n")
    lines.insert(4, json.dumps({"input": ["llvm", "dense"], "result": [[1.0], 0]}) + "\n")  # AutoTVM
    log.write_text("".join(lines) + lines[-1][:25])  # and a torn last line
    loaded = TuningLog.load(log, warn=False)
    assert len(loaded.skipped) == 3 and len(loaded.records) == 9
    compiled = accelc.compile(str(model_path), opt_level=1, tuning_records=str(log))
    assert list(compiled.tuning.tuned) == ["fused_matmul_relu"]


def test_compile_cli_reports_tuned_kernels_and_refuses_another_target(tuned, model_path, tmp_path):
    log = tuned[0]
    ok = accelc("compile", model_path, "-O", "1", "--tuning-records", log, "-o", tmp_path / "m.so")
    assert ok.returncode == 0, ok.stderr
    assert "tuning records from" in ok.stdout and "1 of 1 kernel(s) tuned" in ok.stdout
    bad = accelc("compile", model_path, "-O", "1", "--tuning-records", log, "--mcpu", "skylake",
                 "-o", tmp_path / "m2.so")
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: tuning records") and "tuned for target" in lines[0]
    assert "Traceback" not in bad.stderr
    # Default schedules (O3) fall back cleanly: another kernel set, nothing tuned, all reported.
    o3 = accelc("compile", model_path, "--tuning-records", log, "-o", tmp_path / "m3.so")
    assert o3.returncode == 0 and "0 of" in o3.stdout and "no record" in o3.stdout, o3.stdout + o3.stderr


def test_kill_9_during_tuning_leaves_a_loadable_log(model_path, tmp_path):
    log = tmp_path / "killed.jsonl"
    proc = start_accelc("tune", model_path, "-o", log, "--trials", "200", *FAST_CLI)
    try:
        wait_for_trials(log, 4, proc)
        time.sleep(0.7)  # somewhere inside the next batch
    finally:
        proc.kill()
        proc.wait(30)
    loaded = TuningLog.load(log)
    assert len(loaded.skipped) <= 1  # at worst the batch being written, never anything before it
    n = len(trial_lines(log))
    assert n >= 4
    result = accelc("tune", model_path, "-o", log, "--trials", n + 4, *FAST_CLI)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"resuming: {n} trial(s)" in result.stdout
    assert len(trial_lines(log)) == n + 4


def test_ctrl_c_stops_cleanly_and_keeps_the_records(model_path, tmp_path):
    log = tmp_path / "interrupted.jsonl"
    proc = start_accelc("tune", model_path, "-o", log, "--trials", "200", *FAST_CLI)
    wait_for_trials(log, 4, proc)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "stopped: interrupted" in out and "run the same command again to resume" in out
    assert "tuning result" in out and "Traceback" not in out
    assert not TuningLog.load(log).skipped and len(trial_lines(log)) >= 4


def test_two_tuners_share_one_log(model_path, tmp_path):
    log = tmp_path / "shared.jsonl"
    procs = [start_accelc("tune", model_path, "-o", log, "--trials", "8", "--seed", str(seed), *FAST_CLI)
             for seed in (1, 2)]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out
    loaded = TuningLog.load(log)
    assert not loaded.skipped
    sessions = {r.data["session"] for r in loaded.records}
    assert len(sessions) == 2
    # Each started from an empty log, so each measured its own 8 trials.
    assert len(trial_lines(log)) == 16


@pytest.mark.slow
def test_digits_model_with_xgboost_at_o3(tmp_path):
    """The embedded model at O3 (packed layouts, default schedules): every kernel is either
    tuned or reported as falling back, outputs still equal onnxruntime's."""
    import onnxruntime as ort

    import accelc
    from accelc.models import default_model_path, load_digits_test

    log = tmp_path / "digits.jsonl"
    result = tune(TuneOptions(log=str(log), trials=24, batch=4, cost_model="xgb"))
    assert result.session_trials >= 16 and all(s.baseline_s for s in result.states)
    assert result.estimate_s <= result.baseline_estimate_s
    shapes = {"input": [1, 1, 8, 8]}
    compiled = accelc.compile(str(default_model_path()), input_shapes=shapes, tuning_records=str(log))
    report = compiled.tuning
    assert len(report.tuned) + len(report.fallback) == len(result.states)
    images, _ = load_digits_test()
    session = ort.InferenceSession(str(default_model_path()), providers=["CPUExecutionProvider"])
    for image in images[:20]:
        x = image[None]
        ref = session.run(None, {"input": x})[0]
        np.testing.assert_allclose(compiled.run({"input": x})["logits"], ref, rtol=1e-4, atol=1e-4)


def test_cold_measurement_flushes_weights_and_times_single_runs():
    """--cache-flush: every repeat is one run after the weights and output left the caches
    (TVM's cache_flush_cpu_non_first_arg, before each repeat); hot timing grows ``number`` to
    ``min_repeat_ms``. Checked on the evaluator's arguments (timings are benchmark business),
    with a real kernel whose results stay right."""
    import tvm
    from tvm import te

    from accelc.targets.llvm_cpu.config import host_target
    from accelc.tuning.worker import _time

    a = te.placeholder((8, 64), name="a")
    w = te.placeholder((64, 32), name="w")
    k = te.reduce_axis((0, 64), "k")
    c = te.compute((8, 32), lambda i, j: te.sum(a[i, k] * w[k, j], axis=k), name="c")
    func = te.create_prim_func([a, w, c]).with_attr("global_symbol", "main")
    built = tvm.compile(tvm.IRModule({"main": func}), host_target(1))
    built = built.mod if hasattr(built, "mod") else built
    calls = []

    class Spy:
        def __getitem__(self, name):
            return built[name]

        def time_evaluator(self, name, dev, **kwargs):
            calls.append(kwargs)
            return built.time_evaluator(name, dev, **kwargs)

    arrays = [tvm.runtime.tensor(np.ones(s, "float32")) for s in ((8, 64), (64, 32), (8, 32))]
    cold = _time(Spy(), tvm.cpu(), arrays, number=4, repeat=7, min_repeat_ms=20, cache_flush=True)
    hot = _time(Spy(), tvm.cpu(), arrays, number=4, repeat=3, min_repeat_ms=20)
    assert calls[0] == {"number": 1, "repeat": 7, "min_repeat_ms": 0, "f_preproc": "cache_flush_cpu_non_first_arg"}
    assert calls[1] == {"number": 4, "repeat": 3, "min_repeat_ms": 20}
    assert len(cold) == 7 and len(hot) == 3 and min(cold) > 0
    np.testing.assert_array_equal(arrays[2].numpy(), np.full((8, 32), 64, "float32"))

    import argparse

    from accelc.tuning.cli import add_tune_parser

    parser = argparse.ArgumentParser()
    add_tune_parser(parser.add_subparsers(dest="cmd"))
    assert parser.parse_args(["tune", "m.onnx", "--cache-flush", "-o", "l"]).cache_flush
