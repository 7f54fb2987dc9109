"""A/B of CPU schedule rules on one model, interleaved in one process with onnxruntime.

Each variant compiles the model with some accelc CPU rules/passes removed (``-no NAME``), then
all variants and onnxruntime run in alternating blocks (accelc.driver's interleaving), so that
the (shared, loaded) machine's noise hits them alike. Prints median/min and ratio to ORT.

Usage: python benchmarks/bench_variants.py MODEL.onnx [--repeat 40]
       [--variant all=] [--variant no_dw=DepthwiseConv2dNCHWc] ...
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--repeat", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variant", action="append", default=[],
                   help="NAME=Rule1,Pass2 (rules/passes removed); default: all=")
    args = p.parse_args(argv)
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))
    import numpy as np
    import tvm

    from accelc import api, driver
    from accelc.frontend import load_onnx
    from accelc.targets import llvm_cpu

    proto = load_onnx(args.model)
    session = driver._ort_session(proto, args.threads)  # pylint: disable=protected-access
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.standard_normal(i.shape).astype("float32") for i in session.get_inputs()}
    ref = session.run(None, feeds)[0]
    engines = {}
    orig_rules, orig_layout = llvm_cpu.schedule_rules, llvm_cpu.layout_passes
    for spec in args.variant or ["all="]:
        name, _, removed = spec.partition("=")
        drop = {r for r in removed.split(",") if r}
        llvm_cpu.schedule_rules = lambda t, c=None, d=drop: [r for r in orig_rules(t, c) if type(r).__name__ not in d]
        llvm_cpu.layout_passes = lambda t, c=None, d=drop: [
            q for q in orig_layout(t, c) if q.info.name not in d and type(q).__name__ not in d]
        try:
            compiled = api.compile(proto, "llvm", target_options={"num-cores": args.threads}, tuning_records=None)
        finally:
            llvm_cpu.schedule_rules, llvm_cpu.layout_passes = orig_rules, orig_layout
        vm = compiled._machine()  # pylint: disable=protected-access
        inputs = [tvm.runtime.tensor(feeds[i.name]) for i in session.get_inputs()]
        out = vm["main"](*inputs)
        out = out.numpy() if hasattr(out, "numpy") else out[0].numpy()
        ok = np.allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
        print(f"variant {name}: without {sorted(drop) or '-'}; matches onnxruntime (rtol 1e-4): {ok}")
        engines[name] = lambda vm=vm, inputs=inputs: vm["main"](*inputs)
    engines["onnxruntime"] = lambda: session.run(None, feeds)
    times = driver._interleaved_blocks(engines, args.repeat, 3)  # pylint: disable=protected-access
    ort_med = statistics.median(times["onnxruntime"])
    print(f"{os.path.basename(args.model)}: {args.repeat} runs each, interleaved blocks, {args.threads} threads")
    print(f"  {'engine':<14s}{'median ms':>11s}{'min ms':>9s}{'median/ORT':>12s}{'min/ORT min':>13s}")
    for name, values in times.items():
        print(f"  {name:<14s}{statistics.median(values):11.2f}{min(values):9.2f}"
              f"{statistics.median(values) / ort_med:11.2f}x{min(values) / min(times['onnxruntime']):12.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
