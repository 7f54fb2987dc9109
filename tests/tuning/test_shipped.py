"""Shipped tuning logs: the structural fingerprint, the lookup `accelc compile` does, and the
fallback to default schedules (with a note, never an error) for another target."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from accelc.tuning import shipped

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_models  # noqa: E402


def test_fingerprint_ignores_weight_values_but_not_structure():
    import zoo

    a = bench_models.bert_encoder(seq=8, hidden=32, heads=2, ffn=64, seed=0)
    b = bench_models.bert_encoder(seq=8, hidden=32, heads=2, ffn=64, seed=1)
    c = bench_models.bert_encoder(seq=16, hidden=32, heads=2, ffn=64, seed=0)
    assert shipped.model_fingerprint(a) == shipped.model_fingerprint(b)
    assert shipped.model_fingerprint(a) != shipped.model_fingerprint(c)
    # the light zoo's ConstantOfShape weights and the same model with real initializers
    raw = zoo.load_light_model("squeezenet")
    assert shipped.model_fingerprint(raw) == shipped.model_fingerprint(zoo.randomize_weights(raw, 0))
    assert shipped.model_fingerprint(raw) != shipped.model_fingerprint(zoo.load_light_model("shufflenet"))


def test_symbolic_batch_is_keyed_by_the_compiled_shape():
    from accelc.models import default_model_path

    fixed = bench_models.digits(batch=1)
    path = str(default_model_path())
    assert shipped.model_fingerprint(path, {"input": [1, 1, 8, 8]}) == shipped.model_fingerprint(fixed)
    assert shipped.model_fingerprint(path, {"input": [4, 1, 8, 8]}) != shipped.model_fingerprint(fixed)


@pytest.fixture()
def logs_dir(tmp_path, monkeypatch):
    """A shipped-logs directory with one (hand-written) log for a small matmul model."""
    from tuning_models import matmul_relu_model

    import accelc
    from accelc.tuning.records import TuningLog, make_record
    from accelc.tuning.tasks import extract_tasks

    model = matmul_relu_model(m=8, k=32, n=32)
    mt = extract_tasks(model, "llvm")
    task = mt.tasks[0]
    work = tmp_path / "work.jsonl"
    TuningLog(work).append([make_record("baseline", mt.target, workload=task.workload, task=task.name,
                                        session="s", schedule="", sch_hash="0", latency_s=1e-3, run_secs=[1e-3])])
    root = tmp_path / "tuning_logs"
    entry = shipped.add_log("matmul", model, work, ship_to=root)
    assert (root / "matmul.jsonl").is_file() and entry["targets"]
    monkeypatch.setattr(shipped, "logs_dir", lambda: root)
    assert accelc is not None
    return root, model


def test_compile_finds_the_shipped_log_and_says_so(logs_dir, tmp_path, capsys):
    from accelc import driver

    root, model = logs_dir
    import onnx

    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    compiled, _ = driver.compile_model(driver.CompileOptions(model=str(path), output=str(tmp_path / "m.so"),
                                                             tuning_records="auto"))
    assert compiled.tuning is not None
    out = capsys.readouterr().out
    assert "using shipped tuning log" in out and "matmul.jsonl" in out
    # opting out: no lookup
    compiled, _ = driver.compile_model(driver.CompileOptions(model=str(path), output=str(tmp_path / "m2.so")))
    assert compiled.tuning is None and compiled.tuning_note is None


def test_another_target_falls_back_with_a_note(logs_dir):
    import accelc

    _, model = logs_dir
    compiled = accelc.compile(model, target_options={"num-cores": 1, "mcpu": "skylake"}, tuning_records="auto")
    assert compiled.tuning is None
    assert "not used" in compiled.tuning_note and "default schedules" in compiled.tuning_note


def test_unknown_model_is_silent(logs_dir):
    import accelc
    from tuning_models import matmul_relu_model

    compiled = accelc.compile(matmul_relu_model(m=4, k=32, n=32), tuning_records="auto")
    assert compiled.tuning is None and compiled.tuning_note is None


def test_shipped_index_is_consistent():
    """Every entry of the repository's tuning_logs/index.json names a log that loads."""
    from accelc.tuning.records import TuningLog

    root = Path(__file__).resolve().parents[2] / "tuning_logs"
    if not (root / "index.json").is_file():
        pytest.skip("no shipped logs in this checkout")
    for entry in json.loads((root / "index.json").read_text())["logs"]:
        log = TuningLog.load(root / entry["log"], missing_ok=False, warn=False)
        assert not log.skipped, entry["log"]
        assert set(entry["targets"]) <= set(log.target_keys()), entry["log"]


def test_shipped_digits_log_matches_todays_kernels():
    """A shipped log goes stale when a kernel template changes (its records then match no
    kernel): the embedded model's log must still tune some of its kernels here. The other
    benchmark models: ``benchmarks/results_table.py`` prints tuned / all per model."""
    import accelc
    from accelc.models import DEFAULT_INPUT_SHAPE, default_model_path
    from accelc.tuning.records import target_key

    root = Path(__file__).resolve().parents[2] / "tuning_logs"
    entry = next((e for e in json.loads((root / "index.json").read_text())["logs"] if e["model"] == "digits"), None)
    if entry is None:
        pytest.skip("no shipped digits log")
    compiled = accelc.compile(str(default_model_path()), input_shapes=DEFAULT_INPUT_SHAPE, tuning_records="auto")
    import tvm

    if target_key(tvm.target.Target(compiled.signature.target)) not in entry["targets"]:
        pytest.skip("the shipped log is for another machine kind")
    report = compiled.tuning
    assert report is not None, compiled.tuning_note
    # matched: tuned, or a record found and judged (not "no record": that is a stale log)
    matched = list(report.tuned) + [k for k, why in report.fallback.items() if why != "no record"]
    assert len(matched) >= 4, report.fallback
