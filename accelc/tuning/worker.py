"""A build-and-measure worker process: ``python -m accelc.tuning.worker READ_FD WRITE_FD``.

Started once per tuning session by ``builder.WorkerPool`` and reused for every trial (the
stock MetaSchedule builder starts a fresh pool per batch and each worker imports
``tvm.s_tir.tensor_intrin``, ~40 s here: this worker imports only ``tvm``). It answers
length-prefixed pickled requests ``(op, kwargs)`` with ``("ok", value)`` or
``("error", text)``, one at a time, until its input closes. Built modules stay in memory
for the ``measure`` request that follows, so a local trial needs no export and no linker.
It ignores SIGINT: the tuner handles Ctrl-C and decides when workers stop.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback

_BUILT: dict[int, object] = {}
_TMP = None


def _tmpdir() -> str:
    global _TMP
    if _TMP is None:
        _TMP = tempfile.mkdtemp(prefix="accelc-tune-worker-")
    return _TMP


def op_ping() -> dict:
    import tvm  # noqa: F401  (the import is what a ping waits for)

    return {"pid": os.getpid()}


def op_build(job: int, mod_json: str, target: dict, backend: str | None = None, export: bool = False) -> dict:
    import tvm
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    start = time.perf_counter()
    tvm_target = tvm.target.Target(target)
    mod = tvm.ir.load_json(mod_json)
    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    from accelc.passes.sparse_kernels import realize_bsr_module

    mod = realize_bsr_module(mod)  # a BSR trial: its sampled tile annotation -> the kernel
    rt_mod = tvm.driver.build(mod, target=tvm_target)
    path = None
    if export:
        fcompile = None
        if backend:
            from accelc.targets import registry

            fcompile = registry.get(backend).export_compiler(tvm_target)
        path = os.path.join(_tmpdir(), f"trial_{os.getpid()}_{job}.so")
        rt_mod.export_library(path, fcompile=fcompile) if fcompile else rt_mod.export_library(path)
    else:
        rt_mod.get_function("main")  # LLVM JITs lazily on first lookup: do it here, in parallel
        _BUILT[job] = rt_mod
    return {"build_s": time.perf_counter() - start, "path": path}


def make_args(args_info, seed: int = 0):
    """Inputs for one kernel: uniform floats, zeros for integers (index tensors stay in range);
    an entry that is an array already (a real BSR pattern, ``tuner.measure_args``) is used as is."""
    import numpy as np

    rng = np.random.default_rng(seed)
    arrays = []
    for info in args_info:
        if isinstance(info, np.ndarray):
            arrays.append(info)
            continue
        shape, dtype = info
        if dtype.startswith("float") or dtype.startswith("bfloat"):
            arrays.append(rng.random(shape, dtype="float32").astype(dtype))
        else:
            arrays.append(np.zeros(shape, dtype=dtype if dtype != "bool" else "bool"))
    return arrays


def _time(func_mod, dev, arrays, number: int, repeat: int, min_repeat_ms: int, cache_flush: bool = False) -> list[float]:
    """Seconds per run: ``repeat`` timings of ``number`` runs (grown to ``min_repeat_ms``), or
    with ``cache_flush`` ``repeat`` single runs each after every argument but the first (the
    input activation, which the previous kernel has just written) is flushed from the CPU
    caches: weights and outputs come from memory, as they do inside a model."""
    func_mod["main"](*arrays)  # warm-up, and a failure here is a failed trial
    dev.sync()
    if cache_flush:
        evaluator = func_mod.time_evaluator("main", dev, number=1, repeat=repeat, min_repeat_ms=0,
                                            f_preproc="cache_flush_cpu_non_first_arg")
    else:
        evaluator = func_mod.time_evaluator("main", dev, number=number, repeat=repeat, min_repeat_ms=min_repeat_ms)
    return [float(x) for x in evaluator(*arrays).results]


def op_measure(job: int, args_info, device: str = "cpu", number: int = 1, repeat: int = 3,
               min_repeat_ms: int = 20, cache_flush: bool = False) -> list[float]:
    import tvm

    rt_mod = _BUILT.pop(job)
    dev = tvm.device(device, 0)
    arrays = [tvm.runtime.tensor(a, dev) for a in make_args(args_info)]
    return _time(rt_mod, dev, arrays, number, repeat, min_repeat_ms, cache_flush)


def op_drop(jobs) -> int:
    for job in jobs:
        _BUILT.pop(job, None)
    return len(_BUILT)


def op_measure_rpc(jobs, tracker: str, key: str, device: str = "cpu", number: int = 1, repeat: int = 3,
                   min_repeat_ms: int = 20, session_timeout: int = 600, cache_flush: bool = False) -> list:
    """Measure exported trials on one device from the RPC tracker: ``[(ok, value)]``."""
    import tvm

    from .rpc import request_session

    remote = request_session(tracker, key, session_timeout=session_timeout)
    dev = remote.device(device, 0)
    out = []
    for job, path, args_info in jobs:
        name = os.path.basename(path)
        try:
            remote.upload(path)
            rt_mod = remote.load_module(name)
            arrays = [tvm.runtime.tensor(a, dev) for a in make_args(args_info)]
            out.append(("ok", _time(rt_mod, dev, arrays, number, repeat, min_repeat_ms, cache_flush)))
        except Exception as exc:  # noqa: BLE001  (a failed trial, not a failed batch)
            out.append(("error", _short(exc)))
        finally:
            try:
                os.remove(path)
                remote.remove(name)
            except Exception:  # noqa: BLE001
                pass
    return out


OPS = {
    "ping": op_ping,
    "build": op_build,
    "measure": op_measure,
    "drop": op_drop,
    "measure_rpc": op_measure_rpc,
}


def _short(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(exc).split())
    # TVM errors put the useful line last (after the C++ backtrace)
    tail = [line for line in str(exc).strip().splitlines() if line.strip()]
    if len(text) > limit and tail:
        text = tail[-1].strip()
    return f"{type(exc).__name__}: {text}"[:limit]


def _read(stream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reader = os.fdopen(int(argv[1]), "rb")
    writer = os.fdopen(int(argv[2]), "wb")
    while True:
        header = _read(reader, 4)
        if not header:  # the tuner closed our input (or died): done
            if _TMP is not None:
                shutil.rmtree(_TMP, ignore_errors=True)
            return 0
        op, kwargs = pickle.loads(_read(reader, struct.unpack("<I", header)[0]))
        try:
            reply = ("ok", OPS[op](**kwargs))
        except Exception as exc:  # noqa: BLE001
            if os.environ.get("ACCELC_TUNE_DEBUG"):
                traceback.print_exc()
            reply = ("error", _short(exc))
        data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        writer.write(struct.pack("<I", len(data)) + data)
        writer.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
