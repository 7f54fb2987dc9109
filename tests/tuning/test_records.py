"""The tuning log: format, crash safety, concurrent writers, bad lines, target checks."""

import json
import multiprocessing

import pytest

from accelc.errors import AccelcError
from accelc.tuning.apply_tuning_records import TuningRecords
from accelc.tuning.cli import parse_duration
from accelc.tuning.records import TuningLog, index_by_workload, make_record, target_key
from accelc.tuning.tasks import Task, select_tasks


@pytest.fixture(scope="module")
def target():
    import tvm

    return tvm.target.Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 2})


def trial(target, workload="w0", latency=1e-3, sch_hash="h0", session="s"):
    return make_record("trial", target, workload=workload, task="t", session=session, trace=[[], []],
                       sch_hash=sch_hash, latency_s=latency, run_secs=[latency])


def test_records_round_trip_and_index(tmp_path, target):
    log = TuningLog(tmp_path / "log.jsonl")
    log.append([trial(target, latency=3e-3, sch_hash="a"), trial(target, latency=1e-3, sch_hash="b"),
                trial(target, latency=None, sch_hash="c")])
    log.append([make_record("baseline", target, workload="w0", task="t", session="s", latency_s=2e-3,
                            run_secs=[2e-3], sch_hash="d")])
    loaded = TuningLog.load(log.path)
    assert not loaded.skipped and len(loaded.records) == 4
    entry = index_by_workload(loaded.for_target(target_key(target)))["w0"]
    assert entry.trials == 3  # a failed trial still counts toward --trials
    assert entry.best.latency_s == 1e-3 and entry.baseline.latency_s == 2e-3
    assert entry.sch_hashes == {"a", "b", "c"}
    first = json.loads(log.path.read_text().splitlines()[0])
    assert first["accelc_tuning"] == 1 and first["target"]["mcpu"] == "znver3"
    assert first["target_key"].startswith("llvm-znver3-2c-")


def test_torn_last_line_is_skipped_and_the_next_append_starts_a_new_line(tmp_path, target, caplog):
    path = tmp_path / "log.jsonl"
    log = TuningLog(path)
    log.append([trial(target, sch_hash="a")])
    with open(path, "ab") as f:  # a writer killed mid-write
        f.write(json.dumps(trial(target, sch_hash="torn")).encode()[:40])
    loaded = TuningLog.load(path)
    assert len(loaded.records) == 1 and loaded.skipped == [(2, "incomplete last line (interrupted write)")]
    assert "skipped 1 unreadable line" in caplog.text
    TuningLog(path).append([trial(target, sch_hash="b")])
    loaded = TuningLog.load(path, warn=False)
    assert [r.sch_hash for r in loaded.records] == ["a", "b"]  # the torn line did not eat "b"
    assert len(loaded.skipped) == 1


def test_corrupted_and_foreign_lines_are_skipped_and_counted(tmp_path, target):
    path = tmp_path / "log.jsonl"
    TuningLog(path).append([trial(target, sch_hash="a")])
    with open(path, "a") as f:
        f.write("this is not json\n")
        f.write('{"input": ["llvm", "dense"], "config": {}, "result": [[0.1], 0]}\n')  # an AutoTVM line
        f.write('{"accelc_tuning": 99, "kind": "trial"}\n')
        f.write("\x00\x00garbage\n")
    TuningLog(path).append([trial(target, sch_hash="b")])
    loaded = TuningLog.load(path, warn=False)
    assert [r.sch_hash for r in loaded.records] == ["a", "b"]
    reasons = [why for _, why in loaded.skipped]
    assert len(reasons) == 4
    assert reasons[0] == "corrupted line (not JSON)" and reasons[1].startswith("foreign line")
    assert "unknown format version" in reasons[2]


def _append_many(path, worker, batches):
    import tvm

    target = tvm.target.Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 2})
    log = TuningLog(path)
    for b in range(batches):
        log.append([trial(target, sch_hash=f"{worker}-{b}-{i}", session=str(worker)) for i in range(5)])


def test_concurrent_writers_never_corrupt_the_log(tmp_path):
    path = tmp_path / "log.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(path, w, 20)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    loaded = TuningLog.load(path)
    assert not loaded.skipped
    assert len(loaded.records) == 4 * 20 * 5
    assert len({r.sch_hash for r in loaded.records}) == 400


def test_records_for_another_target_are_refused(tmp_path, target):
    import tvm

    path = tmp_path / "log.jsonl"
    TuningLog(path).append([trial(target)])
    other = tvm.target.Target({"kind": "llvm", "mcpu": "skylake", "num-cores": 2})
    with pytest.raises(AccelcError, match="tuned for target llvm-znver3-2c-.*not for this compile's target "
                                          "llvm-skylake-2c-.*differs in mcpu 'znver3' vs 'skylake'"):
        TuningRecords.load(path, other)
    assert len(TuningRecords.load(path, target)) == 1
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(AccelcError, match="hold no records"):
        TuningRecords.load(empty, target)
    with pytest.raises(AccelcError, match="not found"):
        TuningRecords.load(tmp_path / "missing.jsonl", target)


def test_target_key_tracks_what_changes_code():
    import tvm

    a = target_key(tvm.target.Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 2}))
    assert a == target_key(tvm.target.Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 2}))
    assert a != target_key(tvm.target.Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 4}))
    assert a != target_key(tvm.target.Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 2, "mattr": ["-avx2"]}))


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("10m", 600), ("1h30m", 5400), ("1.5h", 5400), ("45", 45)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10x", "m", "-5s", "0s"])
def test_parse_duration_rejects(text):
    with pytest.raises(AccelcError):
        parse_duration(text)


def test_select_tasks():
    tasks = [Task(i, f"k{i}", f"w{i}", None, 1, 0.0, [f"k{i}"]) for i in range(8)]
    assert select_tasks("all", tasks) == tasks
    assert [t.index for t in select_tasks("0,2,5-7", tasks)] == [0, 2, 5, 6, 7]
    assert [t.index for t in select_tasks("k3,1", tasks)] == [1, 3]
    for bad in ("9", "3-1", "x", ",", "2-9"):
        with pytest.raises(AccelcError):
            select_tasks(bad, tasks)


def test_cli_has_no_tvm_import_cost():
    """`accelc tune --help` must not pay for TVM (nor MetaSchedule's 40 s intrinsic import)."""
    import subprocess
    import sys

    code = "import sys; from accelc.cli import build_parser; build_parser(); print('tvm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
