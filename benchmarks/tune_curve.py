"""Tuning curve of one model: ``accelc tune`` for a budget, then the real latencies.

    python benchmarks/tune_curve.py MODEL.onnx [--input-shape x:1,3,224,224] \
        [--trials N] [--time-budget 30m] [--log out/tune/MODEL.jsonl] [--out out/tune]

Writes ``OUT/NAME_curve.png`` (estimated model latency against trials and against tuning
time) and ``OUT/NAME_curve.json``: every point of the curve, trials per second, and the
end-to-end medians of onnxruntime, accelc without records and accelc with the log (each
timed on its own, one after the other: interleaving engines that spin-wait on 2 cores
measures their contention). Resumes an existing log like ``accelc tune``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", help="ONNX model (default: the embedded digits model)")
    p.add_argument("--input-shape", action="append", default=[])
    p.add_argument("--trials", type=int)
    p.add_argument("--time-budget", default=None, help="e.g. 30m")
    p.add_argument("--target", default="llvm")
    p.add_argument("-O", "--opt-level", type=int, default=3)
    p.add_argument("--cost-model", default="xgb")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--log")
    p.add_argument("--out", default="out/tune")
    p.add_argument("--repeat", type=int, default=50, help="bench runs per engine")
    args = p.parse_args(argv)

    from accelc.frontend import parse_input_shapes
    from accelc.tuning.cli import parse_duration
    from accelc.tuning.progress import Progress, plot_curve
    from accelc.tuning.records import TuningLog
    from accelc.tuning.tuner import TuneOptions, tune

    model = args.model
    shapes = parse_input_shapes(args.input_shape) or None
    if model is None:
        from accelc.models import DEFAULT_INPUT_SHAPE, default_model_path

        model, shapes = str(default_model_path()), dict(DEFAULT_INPUT_SHAPE)
        args.input_shape = [f"{k}:{','.join(map(str, v))}" for k, v in shapes.items()]
    name = Path(model).stem
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = args.log or str(out / f"{name}.jsonl")

    result = tune(TuneOptions(
        log=log, model=model, target=args.target, input_shapes=shapes, opt_level=args.opt_level,
        trials=args.trials, time_budget_s=parse_duration(args.time_budget) if args.time_budget else None,
        cost_model=args.cost_model, batch=args.batch,
    ), Progress("lines"))

    # Tuning time of each point: the log's timestamps, from the first record of these kernels.
    workloads = {s.task.workload for s in result.states}
    times = [r.data["time"] for r in TuningLog.load(log, warn=False).for_target(result.target_key)
             if r.kind == "trial" and r.workload in workloads]
    t0 = min(times) if times else 0.0
    points = [{"trials": n, "estimate_ms": est * 1e3, "tuning_s": (times[n - 1] - t0) if n else 0.0}
              for n, est in result.curve]

    medians = _latencies(model, shapes, args, log)
    summary = {
        "model": model, "target": result.target_key, "log": log,
        "trials": sum(s.trials for s in result.states if s.selected),
        "session_trials": result.session_trials, "session_seconds": result.seconds,
        "trials_per_second": result.trials_per_second,
        "estimate_ms": {"default": (result.baseline_estimate_s or 0) * 1e3, "tuned": (result.estimate_s or 0) * 1e3},
        "median_ms": medians,
        "curve": points,
    }
    (out / f"{name}_curve.json").write_text(json.dumps(summary, indent=1))
    png = plot_curve(result, str(out / f"{name}_curve.png"))
    _add_time_axis(png, points, summary)
    m = summary["median_ms"]
    print(f"{name}: onnxruntime {m['onnxruntime']:.3f} ms, accelc untuned {m['accelc_untuned']:.3f} ms, "
          f"tuned {m['accelc_tuned']:.3f} ms ({m['accelc_tuned'] / m['onnxruntime']:.2f}x onnxruntime) after "
          f"{summary['trials']} trials; {result.trials_per_second:.2f} trials/s; {png}")
    return 0


def _latencies(model, shapes, args, log) -> dict[str, float]:
    import os
    import statistics
    import time

    import numpy as np

    import accelc
    from accelc.driver import _ort_session, gather_inputs

    os.environ.setdefault("TVM_NUM_THREADS", "2")
    out = {}
    for label, records in (("accelc_untuned", None), ("accelc_tuned", log)):
        compiled = accelc.compile(model, args.target, input_shapes=shapes, opt_level=args.opt_level,
                                  tuning_records=records)
        inputs = gather_inputs(compiled.signature, (), None, "random", 0)
        out[label] = statistics.median(compiled.benchmark(inputs, repeat=args.repeat, warmup=5))
    session = _ort_session(model, 2)
    feed = {k: np.asarray(v) for k, v in inputs.items()}
    times = []
    for i in range(args.repeat + 5):
        start = time.perf_counter()
        session.run(None, feed)
        if i >= 5:
            times.append((time.perf_counter() - start) * 1e3)
    out["onnxruntime"] = statistics.median(times)
    return out


def _add_time_axis(png: str, points: list[dict], summary: dict) -> None:
    """Redraw with a second panel: estimate against tuning time, and the measured medians."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for ax, key, label in ((a, "trials", "trials"), (b, "tuning_s", "tuning time (s)")):
        ax.step([p[key] for p in points], [p["estimate_ms"] for p in points], where="post", label="estimate")
        for name, style in (("onnxruntime", "--"), ("accelc_untuned", ":"), ("accelc_tuned", "-.")):
            ax.axhline(summary["median_ms"][name], linestyle=style, color="gray", label=f"{name} (measured)")
        ax.set_xlabel(label)
        ax.set_ylabel("model latency (ms)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    a.legend(fontsize=7)
    fig.suptitle(f"{Path(summary['model']).stem} on {summary['target']}")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
