"""The README results table: onnxruntime vs accelc untuned vs accelc with the shipped log.

For each model of the benchmark set (``benchmarks/bench_models.py``, seeded weights) it
compiles accelc twice (default schedules; the shipped tuning log that ``accelc compile``
finds for it, ``tuning_logs/``) and times the two with onnxruntime in one process,
interleaved in alternating blocks (``accelc bench``'s ``_interleaved_blocks``), so machine
load hits all three alike. Trials and tuning time come from ``tuning_logs/index.json``.

    .venv/bin/python benchmarks/results_table.py [MODEL ...] [--repeat 30] [-o out/results.md] [--json out/results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT_MODELS = ["squeezenet", "resnet50", "shufflenet", "inception_v1", "mobilenet_v2", "bert_encoder", "digits"]


def measure(name: str, repeat: int, warmup: int, threads: int, log: str | None) -> dict:
    import numpy as np
    import tvm

    import accelc
    from accelc.driver import _interleaved_blocks, _ort_session, gather_inputs
    from accelc.tuning.records import target_key
    from accelc.tuning.shipped import find_shipped_log
    from bench_models import MODELS

    proto = MODELS[name](seed=0)
    opts = {"num-cores": threads}
    start = time.perf_counter()
    untuned = accelc.compile(proto, target_options=opts, tuning_records=None)
    compile_s = time.perf_counter() - start
    tuned = accelc.compile(proto, target_options=opts, tuning_records=log or "auto")
    inputs = gather_inputs(untuned.signature, (), None, "random", 0)
    engines = {}
    for label, compiled in (("accelc_untuned", untuned), ("accelc_tuned", tuned)):
        vm = compiled._machine()
        args = [tvm.runtime.tensor(a, tvm.cpu()) for a in compiled.signature.check_inputs(inputs)]
        engines[label] = (lambda vm, args: lambda: vm["main"](*args))(vm, args)
    session = _ort_session(proto, threads)
    feed = {k: np.asarray(v) for k, v in inputs.items()}
    engines["onnxruntime"] = lambda: session.run(None, feed)
    times = _interleaved_blocks(engines, repeat, warmup)
    medians = {k: statistics.median(v) for k, v in times.items()}

    key = target_key(tvm.target.Target(tuned.signature.target))
    shipped = find_shipped_log(proto)
    trials = minutes = None
    if shipped is not None and log is None:
        info = shipped[0].get("targets", {}).get(key, {})
        trials, minutes = info.get("trials"), info.get("tuning_minutes")
    report = tuned.tuning
    return {
        "model": name, "median_ms": medians, "compile_s": compile_s, "target": key,
        "log": log or (str(shipped[1]) if shipped else None), "note": tuned.tuning_note,
        "trials": trials, "tuning_minutes": minutes,
        "kernels": None if report is None else {"tuned": len(report.tuned), "transferred": len(report.transferred),
                                                 "default": len(report.fallback)},
    }


def markdown(rows: list[dict], threads: int, repeat: int) -> str:
    out = [
        f"Batch 1, {threads} threads, median of {repeat} runs per engine, engines interleaved in "
        "alternating blocks in one process.",
        "",
        "| model | onnxruntime ms | accelc untuned ms | accelc tuned ms | untuned / ort | tuned / ort "
        "| tuned speedup | kernels tuned (+transferred) / all | trials | tuning min |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m = r["median_ms"]
        k = r["kernels"]
        kernels = "-" if k is None else (f"{k['tuned']}" + (f" (+{k['transferred']})" if k["transferred"] else "")
                                         + f" / {k['tuned'] + k['transferred'] + k['default']}")
        out.append(
            f"| {r['model']} | {m['onnxruntime']:.2f} | {m['accelc_untuned']:.2f} | {m['accelc_tuned']:.2f} "
            f"| {m['accelc_untuned'] / m['onnxruntime']:.2f}x | {m['accelc_tuned'] / m['onnxruntime']:.2f}x "
            f"| {m['accelc_untuned'] / m['accelc_tuned']:.2f}x | {kernels} "
            f"| {r['trials'] if r['trials'] is not None else '-'} "
            f"| {r['tuning_minutes'] if r['tuning_minutes'] is not None else '-'} |"
        )
    notes = sorted({r["note"] for r in rows if r["note"] and not r["note"].startswith("using")})
    notes.append("trials and tuning minutes: the shipped log's index (minutes from each session's first record "
                 "to its last: task extraction and measuring the default schedules come before and are not counted)")
    return "\n".join(out + [""] + [f"- {n}" for n in notes]) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", default=DEFAULT_MODELS)
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--log", help="one tuning log for every model (default: each model's shipped log)")
    p.add_argument("-o", "--output", help="also write the markdown here")
    p.add_argument("--json", help="write the raw results as JSON")
    args = p.parse_args(argv)
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))  # before TVM's thread pool starts

    rows = []
    for name in args.models:
        rows.append(measure(name, args.repeat, args.warmup, args.threads, args.log))
        m = rows[-1]["median_ms"]
        print(f"{name}: ort {m['onnxruntime']:.2f} ms, untuned {m['accelc_untuned']:.2f} ms, "
              f"tuned {m['accelc_tuned']:.2f} ms ({rows[-1]['note']})", file=sys.stderr, flush=True)
    text = markdown(rows, args.threads, args.repeat)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
