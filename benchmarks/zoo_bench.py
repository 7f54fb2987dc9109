"""Benchmark accelc against onnxruntime on the ONNX light model zoo (batch 1, 2 threads).

Prints a markdown table (model, compile s, onnxruntime ms, accelc ms, ratio) and writes the
raw results as JSON. Every model is timed in one process, accelc and onnxruntime interleaved
(see `accelc bench`), so both see the same machine load.

    .venv/bin/python benchmarks/zoo_bench.py --repeat 10 --json out/zoo_bench.json [MODEL ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import onnx

from accelc import driver

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
MODELS = ["squeezenet", "shufflenet", "bvlc_alexnet", "zfnet512", "inception_v1", "inception_v2",
          "resnet50", "densenet121", "vgg19"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=MODELS)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--opt-level", type=int, default=3)
    parser.add_argument("--json", default="out/zoo_bench.json")
    args = parser.parse_args()

    rows = []
    for name in args.models:
        result = driver.bench(driver.BenchOptions(
            model=str(LIGHT / f"light_{name}.onnx"), repeat=args.repeat, warmup=args.warmup,
            opt_level=args.opt_level,
        ))
        rows.append({**result.to_json(), "model": name})
        rows[-1].pop("times_ms")
    print("\n| model | compile (s) | onnxruntime (ms) | accelc (ms) | accelc / onnxruntime |")
    print("|---|---|---|---|---|")
    for r in rows:
        m = r["median_ms"]
        print(f"| {r['model']} | {r['compile_seconds']:.1f} | {m['onnxruntime']:.2f} | {m['accelc']:.2f} "
              f"| {r['ratio_vs_onnxruntime']['accelc']:.1f}x |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
