"""The builder and runner: a pool of persistent worker processes, started once per session.

Builds run in parallel on every worker; measurements run one at a time (local) so that two
measured kernels never share the CPU, or one batch per remote device in parallel (RPC).
A worker that crashes or exceeds its timeout is killed and restarted for the next request;
its trial is recorded as failed. See ``worker.py`` for the process side.
"""

from __future__ import annotations

import os
import pickle
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

STARTUP_TIMEOUT_S = 180.0  # a cold `import tvm` on a loaded 2-core machine


class WorkerError(Exception):
    pass


class Worker:
    """One ``python -m accelc.tuning.worker`` process and its two pipes."""

    def __init__(self, index: int, env: dict, log_dir: str):
        self.index = index
        self.env = env
        self.log_path = os.path.join(log_dir, f"worker{index}.log")
        self.proc = None
        self.busy = False
        self.pinged = False

    def start(self) -> None:
        if self.proc is not None:
            return
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "accelc.tuning.worker", str(to_child_r), str(from_child_w)],
                pass_fds=(to_child_r, from_child_w), env=self.env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, start_new_session=True,  # Ctrl-C goes to the tuner only
            )
        os.close(to_child_r)
        os.close(from_child_w)
        self.writer = os.fdopen(to_child_w, "wb")
        self.reader = os.fdopen(from_child_r, "rb")
        self.pinged = False
        self.busy = False

    def kill(self) -> None:
        if self.proc is None:
            return
        for stream in (self.writer, self.reader):
            try:
                stream.close()
            except OSError:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None
        self.busy = False

    def close(self) -> None:
        """Let the worker exit on end of input; kill it if it lingers."""
        if self.proc is None:
            return
        try:
            self.writer.close()
            self.proc.wait(timeout=2)
            self.reader.close()
            self.proc = None
        except (OSError, subprocess.TimeoutExpired):
            self.kill()

    def send(self, op: str, kwargs: dict) -> None:
        self.start()
        data = pickle.dumps((op, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.writer.write(struct.pack("<I", len(data)) + data)
            self.writer.flush()
        except OSError as exc:
            self.kill()
            raise WorkerError(f"worker {self.index} died ({exc})") from None
        self.busy = True

    def receive(self):
        """The reply of the request in flight: ``(ok: bool, value)``."""
        self.busy = False
        try:
            header = self.reader.read(4)
            body = self.reader.read(struct.unpack("<I", header)[0]) if len(header) == 4 else b""
            status, value = pickle.loads(body)
        except Exception:  # noqa: BLE001  (EOF, a short read, garbage: the worker is gone)
            tail = self.log_tail()
            self.kill()
            raise WorkerError(f"worker process crashed{': ' + tail if tail else ''}") from None
        return status == "ok", value

    def log_tail(self, limit: int = 300) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log_path) - limit))
                lines = f.read().decode(errors="replace").strip().splitlines()
                return lines[-1][:limit] if lines else ""
        except OSError:
            return ""


class WorkerPool:
    """``n`` workers; ``call`` one, ``map`` many requests over all of them in parallel."""

    def __init__(self, n: int, num_threads: int | None = None):
        self.log_dir = tempfile.mkdtemp(prefix="accelc-tune-")
        env = dict(os.environ)
        if num_threads:
            env["TVM_NUM_THREADS"] = str(num_threads)  # what measured kernels run with
        self.workers = [Worker(i, env, self.log_dir) for i in range(max(1, n))]

    def start(self) -> None:
        """Start every worker now (their ``import tvm`` overlaps the tuner's own work)."""
        for w in self.workers:
            w.start()
            w.send("ping", {})
            w.busy = True

    def _ensure_ready(self, w: Worker) -> None:
        if w.proc is None:
            w.start()
            w.send("ping", {})
        if not w.pinged:
            self._wait(w, STARTUP_TIMEOUT_S)
            w.pinged = True

    def _wait(self, w: Worker, timeout: float | None):
        """Wait for ``w``'s reply; kill it and raise on timeout."""
        with selectors.DefaultSelector() as sel:
            sel.register(w.reader, selectors.EVENT_READ)
            if not sel.select(timeout):
                w.kill()
                raise TimeoutError(f"timed out after {timeout:.0f} s")
        return w.receive()

    def call(self, index: int, op: str, kwargs: dict, timeout: float | None):
        """Run one request on worker ``index``: ``(ok, value)``; errors become ``(False, text)``."""
        w = self.workers[index]
        try:
            self._ensure_ready(w)
            w.send(op, kwargs)
            return self._wait(w, timeout)
        except TimeoutError as exc:
            return False, f"{op} {exc}"
        except WorkerError as exc:
            return False, str(exc)

    def map(self, requests: list[tuple[str, dict]], timeout: float | None, pin: list[int] | None = None):
        """Run ``requests`` spread over the workers (or on ``pin[i]``); returns
        ``[(worker index, ok, value)]`` in request order."""
        results: list = [None] * len(requests)
        queues: dict[int, list[int]] = {w.index: [] for w in self.workers}
        for i in range(len(requests)):
            queues[pin[i] if pin else i % len(self.workers)].append(i)
        inflight: dict[int, tuple[int, float]] = {}  # worker -> (request, deadline)
        with selectors.DefaultSelector() as sel:
            def launch(w: Worker) -> None:
                while queues[w.index]:
                    i = queues[w.index].pop(0)
                    op, kwargs = requests[i]
                    try:
                        self._ensure_ready(w)
                        w.send(op, kwargs)
                    except (TimeoutError, WorkerError) as exc:
                        results[i] = (w.index, False, f"{op}: {exc}")
                        continue
                    inflight[w.index] = (i, time.monotonic() + timeout if timeout else float("inf"))
                    sel.register(w.reader, selectors.EVENT_READ, w)
                    return

            for w in self.workers:
                launch(w)
            while inflight:
                deadline = min(d for _, d in inflight.values())
                wait = None if deadline == float("inf") else max(0.0, deadline - time.monotonic())
                events = sel.select(wait)
                now = time.monotonic()
                done = [key.data for key, _ in events]
                done += [self.workers[j] for j, (_, d) in inflight.items() if d <= now and self.workers[j] not in done]
                for w in done:
                    i, d = inflight.pop(w.index)
                    sel.unregister(w.reader)
                    if any(key.data is w for key, _ in events):
                        try:
                            ok, value = w.receive()
                        except WorkerError as exc:
                            ok, value = False, str(exc)
                    else:
                        w.kill()
                        ok, value = False, f"{requests[i][0]} timed out after {timeout:.0f} s"
                    results[i] = (w.index, ok, value)
                    launch(w)
        return results

    def close(self) -> None:
        for w in self.workers:
            w.close()
        shutil.rmtree(self.log_dir, ignore_errors=True)


# -------------------------------------------------------------------------------- measuring
@dataclass
class MeasureResult:
    run_secs: list[float] | None
    error: str | None
    build_s: float = 0.0
    measured: bool = True  # False: skipped because the session is stopping (not a trial)

    @property
    def latency_s(self) -> float | None:
        return min(self.run_secs) if self.run_secs else None


@dataclass(frozen=True)
class MeasureConfig:
    """``cache_flush``: time single runs with the weights and outputs flushed from the caches
    (``worker._time``); the minimum of ``repeat`` is kept either way."""

    number: int = 1
    repeat: int = 3
    min_repeat_ms: int = 20
    cache_flush: bool = False
    build_timeout_s: float = 120.0
    run_timeout_s: float = 30.0


class Measurer:
    """Build and time scheduled kernels (IRModules with one ``main``) for one target."""

    def __init__(self, target, backend_name: str, *, workers: int = 2, config: MeasureConfig = MeasureConfig(),
                 rpc=None, device: str = "cpu"):
        from .records import target_json

        self.target = target_json(target)
        self.backend_name = backend_name
        self.config = config
        self.rpc = rpc  # rpc.RpcConfig or None
        self.device = device
        num_threads = int(self.target.get("num-cores") or 0) or None
        self.pool = WorkerPool(max(workers, rpc.parallel if rpc else 0), num_threads=num_threads)
        self._job = 0
        self.build_seconds = 0.0
        self.run_seconds = 0.0

    @property
    def runner_name(self) -> str:
        return f"rpc:{self.rpc.key}@{self.rpc.tracker}" if self.rpc else "local"

    def start(self) -> None:
        self.pool.start()

    def close(self) -> None:
        self.pool.close()

    def measure(self, mods: list, args_info: list, should_stop=lambda: False) -> list[MeasureResult]:
        """Build every module in parallel, then time them; ``args_info[i]`` lists the
        ``(shape, dtype)`` of module ``i``'s parameters."""
        import tvm

        start = time.perf_counter()
        jobs = []
        for mod in mods:
            self._job += 1
            jobs.append(self._job)
        export = self.rpc is not None
        built = self.pool.map(
            [("build", {"job": j, "mod_json": tvm.ir.save_json(m), "target": self.target,
                        "backend": self.backend_name, "export": export}) for j, m in zip(jobs, mods)],
            timeout=self.config.build_timeout_s,
        )
        self.build_seconds += time.perf_counter() - start
        results: list[MeasureResult | None] = [None] * len(mods)
        for i, (_, ok, value) in enumerate(built):
            if not ok:
                results[i] = MeasureResult(None, f"build: {value}")
        start = time.perf_counter()
        if self.rpc is None:
            self._measure_local(jobs, built, args_info, results, should_stop)
        else:
            self._measure_rpc(jobs, built, args_info, results, should_stop)
        self.run_seconds += time.perf_counter() - start
        for i, (_, ok, value) in enumerate(built):
            if ok:
                results[i].build_s = value["build_s"]
        return results

    def _eval_kwargs(self) -> dict:
        c = self.config
        return {"device": self.device, "number": c.number, "repeat": c.repeat, "min_repeat_ms": c.min_repeat_ms,
                "cache_flush": c.cache_flush}

    def _measure_local(self, jobs, built, args_info, results, should_stop) -> None:
        # One worker at a time: a measured kernel never shares the CPU with another one.
        by_worker: dict[int, list[int]] = {}
        for i, (w, ok, _) in enumerate(built):
            if ok:
                by_worker.setdefault(w, []).append(i)
        for w, indices in sorted(by_worker.items()):
            for n, i in enumerate(indices):
                if should_stop():
                    for j in indices[n:]:
                        results[j] = MeasureResult(None, "not measured (stopping)", measured=False)
                    self.pool.call(w, "drop", {"jobs": [jobs[j] for j in indices[n:]]}, timeout=30)
                    break
                ok, value = self.pool.call(
                    w, "measure", {"job": jobs[i], "args_info": args_info[i], **self._eval_kwargs()},
                    timeout=self.config.run_timeout_s,
                )
                results[i] = MeasureResult(value, None) if ok else MeasureResult(None, f"run: {value}")
                if not ok and ("crashed" in str(value) or "timed out" in str(value)):
                    # the worker was restarted: the modules it held for this batch are gone
                    for j in indices[n + 1:]:
                        results[j] = MeasureResult(None, "run: lost with a crashed worker")
                    break

    def _measure_rpc(self, jobs, built, args_info, results, should_stop) -> None:
        if should_stop():
            for i, r in enumerate(results):
                if r is None:
                    results[i] = MeasureResult(None, "not measured (stopping)", measured=False)
            return
        ready = [i for i, (_, ok, _) in enumerate(built) if ok]
        groups = [ready[k:: self.rpc.parallel] for k in range(self.rpc.parallel)]
        groups = [g for g in groups if g]
        requests = [
            ("measure_rpc", {"jobs": [(jobs[i], built[i][2]["path"], args_info[i]) for i in g],
                             "tracker": self.rpc.tracker, "key": self.rpc.key,
                             "session_timeout": int(self.rpc.session_timeout_s), **self._eval_kwargs()})
            for g in groups
        ]
        replies = self.pool.map(requests, timeout=self.config.run_timeout_s * max(map(len, groups), default=1)
                                + self.rpc.request_timeout_s)
        for g, (_, ok, value) in zip(groups, replies):
            for n, i in enumerate(g):
                if not ok:
                    results[i] = MeasureResult(None, f"rpc: {value}")
                else:
                    good, v = value[n]
                    results[i] = MeasureResult(v, None) if good else MeasureResult(None, f"rpc run: {v}")
