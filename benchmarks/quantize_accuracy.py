"""int8 accuracy table for the shipped trained CNNs: fp32 vs every calibration method.

    .venv/bin/python benchmarks/quantize_accuracy.py [--models digits mnist] [--json OUT] [--markdown OUT]

Top-1 on each model's held-out test set (digits: 360 images of scikit-learn's 8x8 digits;
mnist: 2,000 images of MNIST's official test set), calibrated on training images shipped
with it, every accelc model compiled for the host CPU at batch 1. Rows: fp32 by onnxruntime
and by accelc; realized int8 for each calibration method under three schemes: ``fixedpoint``
requantization with per-channel weights, ``shift`` (power-of-two scales, shift-only
requantization) with per-tensor weights, and fixedpoint with uint8 activations; plus
``simulate`` (fake-quant float) for the default method, so a gap between it and the realized
row points at the integer arithmetic, not the ranges.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import onnxruntime as ort

import accelc
from accelc import models
from accelc.quantize import CALIB_METHODS

MODELS = {
    "digits": ("digits CNN (scikit-learn 8x8 digits)", models.default_model_path, models.load_digits_test,
               models.load_digits_calib, models.DEFAULT_INPUT_SHAPE),
    "mnist": ("MNIST residual CNN (28x28)", models.mnist_model_path, models.load_mnist_test,
              models.load_mnist_calib, models.MNIST_INPUT_SHAPE),
}
SCHEMES = {"fixedpoint": dict(requantize="fixedpoint", per_tensor=False),
           "shift": dict(requantize="shift", per_tensor=True),
           "uint8": dict(requantize="fixedpoint", per_tensor=False, quantize_options={"activation_dtype": "uint8"})}
SCHEME_NAMES = {"fixedpoint": "fixedpoint, per-channel weights", "shift": "shift, per-tensor weights",
                "uint8": "fixedpoint, per-channel weights, uint8 activations"}


def top1(compiled, images, labels) -> float:
    return models.accuracy(np.concatenate([compiled.run({"input": x[None]})["logits"] for x in images]), labels)


def onnxruntime_top1(path, images, labels) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return models.accuracy(session.run(["logits"], {"input": images})[0], labels)


def model_rows(name: str) -> list[dict]:
    _, path_of, load_test, load_calib, shapes = MODELS[name]
    path, (images, labels) = str(path_of()), load_test()
    rows = [dict(model=name, precision="fp32", runtime="onnxruntime", scheme="-", method="-",
                 top1=onnxruntime_top1(path, images, labels), compile_s=0.0)]
    start = time.perf_counter()
    fp32 = accelc.compile(path, input_shapes=shapes)
    rows.append(dict(model=name, precision="fp32", runtime="accelc", scheme="-", method="-",
                     top1=top1(fp32, images, labels), compile_s=time.perf_counter() - start))
    runs = [(scheme, method, "realize") for scheme in SCHEMES for method in CALIB_METHODS]
    runs.append(("fixedpoint", "entropy", "simulate"))
    for scheme, method, mode in runs:
        start = time.perf_counter()
        compiled = accelc.compile(path, input_shapes=shapes, quantize="int8", calib=load_calib(),
                                  calib_method=method, quantize_mode=mode, **SCHEMES[scheme])
        seconds = time.perf_counter() - start
        rows.append(dict(model=name, precision=f"int8 {mode}", runtime="accelc", scheme=scheme, method=method,
                         top1=top1(compiled, images, labels), compile_s=seconds))
        print(f"  {name} {scheme} {method} {mode}: {rows[-1]['top1']:.2f}", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = []
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        fp32 = next(r["top1"] for r in mine if r["runtime"] == "accelc" and r["precision"] == "fp32")
        count = len(MODELS[name][2]()[1])
        lines += [f"### {MODELS[name][0]}: {count} held-out test images", "",
                  "| precision | runtime | requantize / weights | calibration | top-1 % | vs fp32 (accelc) |",
                  "|---|---|---|---|---|---|"]
        for r in mine:
            scheme = SCHEME_NAMES.get(r["scheme"], "-")
            lines.append(f"| {r['precision']} | {r['runtime']} | {scheme} | {r['method']} | "
                         f"{r['top1']:.2f} | {r['top1'] - fp32:+.2f} |")
        for scheme in SCHEMES:
            realized = [r for r in mine if r["scheme"] == scheme and r["precision"] == "int8 realize"]
            best = max(realized, key=lambda r: r["top1"])
            lines.append(f"\nBest int8 ({SCHEME_NAMES[scheme]}): {best['method']}, "
                         f"{best['top1']:.2f} % ({best['top1'] - fp32:+.2f} points vs fp32).")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--json", help="write the rows as JSON")
    parser.add_argument("--markdown", help="write the tables as Markdown")
    args = parser.parse_args()
    rows = [row for name in args.models for row in model_rows(name)]
    table = markdown(rows)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
