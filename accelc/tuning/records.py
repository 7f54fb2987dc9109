"""The tuning log: append-only JSON lines, one measured schedule per line.

Why our own format: MetaSchedule's JSON database is not target-aware (apache/tvm#15549) and
splits each record over two files; a log that many tuners append to, that survives kill -9,
and that ``accelc compile`` can check against its target needs every line to stand alone.
When records are applied they are replayed directly (see ``apply_tuning_records.py``);
while tuning they are loaded into a ``MemoryDatabase`` for the search.

Format (version 1). Every line is one JSON object with these keys:

    accelc_tuning  1 (the format version; a line without it is foreign and skipped)
    kind           "trial"    a schedule found by the search and measured
                   "baseline" the kernel as compile schedules it without records
    target_key     short name of the target, e.g. "llvm-znver3-2c-1f0c9a2e"; records apply
                   only to a compile whose target has the same key
    target         the full target (``tvm.target.Target.export()`` as JSON)
    workload       structural hash (16 hex digits) of the kernel before scheduling: the
                   PrimFunc after FuseOps/FuseTIR, where ``accelc compile`` applies records
    task           the kernel's name in the model it was tuned for (information only)
    latency_s      the measured latency in seconds (min over repeats), null if it failed
    run_secs       every repeat's mean time in seconds, null if it failed
    error          null, or why the build or run failed (short text)
    time           UNIX time when the line was written
    session        id of the tuning session that wrote it
  trial lines also carry
    trace          the MetaSchedule trace (``Trace.as_json(remove_postproc=False)``, with
                   TVM integers/floats as JSON numbers); replayed on the workload
    sch_hash       structural hash of the scheduled kernel (to never measure it twice)
    build_s        seconds the build took
    runner         "local" or "rpc:KEY@HOST:PORT"
  baseline lines also carry
    schedule       the default rule that scheduled it ("" for the naive loops)
    sch_hash       structural hash of the default-scheduled kernel (a changed default
                   schedule makes the tuner measure a new baseline)
    flops          floating-point operations of one call (for GFLOP/s)

Writes: ``TuningLog.append`` writes a whole batch with one ``os.write`` on an ``O_APPEND``
descriptor, then fsyncs, under ``filelock.FileLock(PATH + ".lock")``; a killed writer loses
at most the batch it was writing. Reads need no lock: a torn last line (a crash mid-write or
a write in progress) and any corrupted or foreign line are skipped, counted and reported;
the rest load. A writer that finds the file not ending in a newline starts with one, so a
torn line never swallows the next record. The lock file ``PATH.lock`` stays next to the
log (harmless; delete it when no tuner runs).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

FORMAT_VERSION = 1
KINDS = ("trial", "baseline")
_REQUIRED = {"kind": str, "target_key": str, "workload": str}

log = logging.getLogger("accelc.tuning")


# ---------------------------------------------------------------------------------- targets
def target_json(target) -> dict:
    """The target as plain JSON (TVM's export holds tuples and TVM containers)."""
    return _plain(target.export())


def target_key(target) -> str:
    """Short, stable name of a target: ``kind-cpu-Nc-hash`` (hash of the full target JSON)."""
    full = target_json(target)
    digest = hashlib.sha256(json.dumps(full, sort_keys=True).encode()).hexdigest()[:8]
    cpu = full.get("mcpu") or full.get("arch") or full.get("mtriple") or "generic"
    cores = full.get("num-cores")
    parts = [str(full.get("kind", "unknown")), str(cpu)]
    if cores:
        parts.append(f"{cores}c")
    return "-".join(parts + [digest])


def _plain(value):
    """TVM containers and IntImm/FloatImm -> JSON-able Python values."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if hasattr(value, "value") and type(value).__name__ in ("IntImm", "FloatImm"):
        return value.value
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "__iter__"):
        return [_plain(v) for v in value]
    return str(value)


plain_json = _plain


# ---------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Record:
    """One line of the log, as loaded (``data`` keeps every field, known or not)."""

    data: dict

    kind = property(lambda self: self.data["kind"])
    target_key = property(lambda self: self.data["target_key"])
    workload = property(lambda self: self.data["workload"])
    task = property(lambda self: self.data.get("task", ""))
    latency_s = property(lambda self: self.data.get("latency_s"))
    sch_hash = property(lambda self: self.data.get("sch_hash"))
    trace = property(lambda self: self.data.get("trace"))

    @property
    def ok(self) -> bool:
        lat = self.latency_s
        return isinstance(lat, (int, float)) and math.isfinite(lat) and lat > 0


def make_record(kind: str, target, *, workload: str, task: str, session: str, **fields) -> dict:
    """A new log line (a dict ready for ``TuningLog.append``)."""
    assert kind in KINDS
    data = {
        "accelc_tuning": FORMAT_VERSION,
        "kind": kind,
        "target_key": target_key(target),
        "target": target_json(target),
        "workload": workload,
        "task": task,
    }
    data.update(fields)
    data.setdefault("error", None)
    data["time"] = round(time.time(), 3)
    data["session"] = session
    return data


def new_session_id() -> str:
    return uuid.uuid4().hex[:12]


def _check(data) -> str | None:
    """Why ``data`` is not a record of ours (None when it is)."""
    if not isinstance(data, dict) or "accelc_tuning" not in data:
        return "foreign line (not an accelc tuning record)"
    if data["accelc_tuning"] != FORMAT_VERSION:
        return f"unknown format version {data['accelc_tuning']!r}"
    for key, kind in _REQUIRED.items():
        if not isinstance(data.get(key), kind):
            return f"missing or bad field {key!r}"
    if data["kind"] not in KINDS:
        return f"unknown record kind {data['kind']!r}"
    if data["kind"] == "trial" and data.get("latency_s") is not None and not isinstance(data.get("trace"), list):
        return "trial without a trace"
    return None


# -------------------------------------------------------------------------------------- log
@dataclass
class TuningLog:
    """The records of one log file, with what was skipped while loading.

    ``skipped`` lists ``(line number, reason)`` for every line that did not load.
    """

    path: Path
    records: list[Record] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)

    # -- reading -------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, missing_ok: bool = True, warn: bool = True) -> "TuningLog":
        path = Path(path)
        result = cls(path)
        if not path.exists():
            if missing_ok:
                return result
            from accelc.errors import AccelcError

            raise AccelcError(f"tuning records not found: {path}")
        if path.is_dir():
            from accelc.errors import AccelcError

            raise AccelcError(f"tuning records path is a directory: {path}")
        raw = path.read_bytes()
        lines = raw.split(b"\n")
        torn_tail = not raw.endswith(b"\n") and raw != b""
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            if torn_tail and number == len(lines):
                result.skipped.append((number, "incomplete last line (interrupted write)"))
                continue
            try:
                data = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                result.skipped.append((number, "corrupted line (not JSON)"))
                continue
            reason = _check(data)
            if reason is not None:
                result.skipped.append((number, reason))
                continue
            result.records.append(Record(data))
        if warn and result.skipped:
            log.warning("warning: %s", result.skipped_summary())
        return result

    def skipped_summary(self) -> str:
        shown = "; ".join(f"line {n}: {why}" for n, why in self.skipped[:3])
        more = f"; and {len(self.skipped) - 3} more" if len(self.skipped) > 3 else ""
        return f"skipped {len(self.skipped)} unreadable line(s) of {self.path} ({shown}{more})"

    def target_keys(self) -> dict[str, int]:
        """How many records each target has."""
        keys: dict[str, int] = {}
        for r in self.records:
            keys[r.target_key] = keys.get(r.target_key, 0) + 1
        return keys

    def for_target(self, key: str) -> list[Record]:
        return [r for r in self.records if r.target_key == key]

    # -- writing -------------------------------------------------------------------------
    def append(self, lines: list[dict]) -> None:
        """Append ``lines`` as one write (+ fsync) under the log's file lock."""
        if not lines:
            return
        payload = "".join(json.dumps(d, separators=(",", ":")) + "\n" for d in lines).encode()
        append_lines(self.path, payload)
        self.records.extend(Record(d) for d in lines)


def append_lines(path: Path, payload: bytes) -> None:
    """Crash-safe append: lock, one ``write`` on an O_APPEND descriptor, fsync, unlock."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size:
                # A torn last line (a writer killed mid-write) must not swallow our first record.
                with open(path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        payload = b"\n" + payload
            written = os.write(fd, payload)
            while written < len(payload):  # regular files write fully; be safe anyway
                written += os.write(fd, payload[written:])
            os.fsync(fd)
        finally:
            os.close(fd)


# ------------------------------------------------------------------------------ the indexes
@dataclass
class WorkloadRecords:
    """What one log knows about one workload on one target."""

    trials: int = 0  # every trial line, failed ones included (they count toward --trials)
    best: Record | None = None  # fastest successful trial
    baseline: Record | None = None  # last baseline line
    sch_hashes: set = field(default_factory=set)

    def add(self, r: Record) -> None:
        if r.kind == "baseline":
            self.baseline = r
            return
        self.trials += 1
        if r.sch_hash:
            self.sch_hashes.add(r.sch_hash)
        if r.ok and (self.best is None or r.latency_s < self.best.latency_s):
            self.best = r


def index_by_workload(records: list[Record]) -> dict[str, WorkloadRecords]:
    out: dict[str, WorkloadRecords] = {}
    for r in records:
        out.setdefault(r.workload, WorkloadRecords()).add(r)
    return out
