"""int8 accuracy table for the embedded digits CNN: fp32 vs every calibration method.

    .venv/bin/python benchmarks/quantize_accuracy.py [--json OUT] [--requantize shift] [--per-tensor]

Top-1 on the held-out test split (``load_digits_test()``), calibrated on the training images
shipped for it (``load_digits_calib()``), every model compiled by accelc for the host CPU.
Rows: realized int8 for each method, plus ``simulate`` (fake-quant float) for the default
method, so a gap between the two points at the integer arithmetic, not the ranges.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import accelc
from accelc.models import accuracy, default_model_path, load_digits_calib, load_digits_test
from accelc.quantize import CALIB_METHODS

SHAPES = {"input": [1, 1, 8, 8]}


def top1(compiled, images, labels) -> float:
    return accuracy(np.concatenate([compiled.run({"input": x[None]})["logits"] for x in images]), labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the table as JSON")
    parser.add_argument("--requantize", default="fixedpoint", choices=["fixedpoint", "shift"])
    parser.add_argument("--per-tensor", action="store_true")
    args = parser.parse_args()
    images, labels = load_digits_test()
    model = str(default_model_path())
    rows = [("fp32", "-", top1(accelc.compile(model, input_shapes=SHAPES), images, labels), 0.0)]
    runs = [(m, "realize") for m in CALIB_METHODS] + [("entropy", "simulate")]
    for method, mode in runs:
        start = time.perf_counter()
        compiled = accelc.compile(
            model, input_shapes=SHAPES, quantize="int8", calib=load_digits_calib(), calib_method=method,
            requantize=args.requantize, per_tensor=args.per_tensor, quantize_mode=mode,
        )
        rows.append((f"int8 {mode}", method, top1(compiled, images, labels), time.perf_counter() - start))
    fp32 = rows[0][2]
    print(f"digits CNN, {len(labels)} test images, requantize={args.requantize}, "
          f"weights {'per tensor' if args.per_tensor else 'per channel'}")
    print(f"| model | calibration | top-1 % | vs fp32 | compile s |\n|---|---|---|---|---|")
    for name, method, acc, secs in rows:
        print(f"| {name} | {method} | {acc:.2f} | {acc - fp32:+.2f} | {secs:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dict(model=n, method=m, top1=a, compile_s=s) for n, m, a, s in rows], f, indent=1)


if __name__ == "__main__":
    main()
