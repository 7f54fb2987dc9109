"""Per-kernel profile of accelc's int8 (or fp32) build of a benchmark model.

    .venv/bin/python benchmarks/int8_profile.py mobilenet_v2 [--fp32] [--top 30] [--dump-main]

Same model and calibration as ``benchmarks/int8_speed.py``; the lowered module is the one
``accelc.compile(..., quantize="int8")`` builds (phases 1-4). Each PrimFunc is compiled and
timed alone (best of 5 x ``--runs``, times its calls in main), as
``benchmarks/profile_kernels.py`` does; the sum leaves out the VM's per-call overhead, so the
script also prints the number of kernel launches.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from int8_speed import THREADS, calibration_samples, load_model  # noqa: E402


def lowered_module(name: str, fp32: bool, calib_count: int = 8):
    import tvm

    from accelc.frontend import import_onnx
    from accelc.pipeline import PipelineOptions, phases
    from accelc.quantize import QuantizeConfig, calibration_runs, quantize_passes
    from accelc.targets import registry

    model = load_model(name)
    backend = registry.get("llvm")
    target = backend.make({"num-cores": THREADS})
    imported = import_onnx(model, None)
    graph = ()
    if not fp32:
        config = QuantizeConfig(calib_method="minmax", requantize="fixedpoint")
        runs = calibration_runs(calibration_samples(model, calib_count), imported.inputs, config.max_calib_samples)
        graph = tuple(quantize_passes(config, runs))
    opts = PipelineOptions(opt_level=3, graph_passes=graph)
    mod = imported.mod
    with target, tvm.transform.PassContext(opt_level=3):
        for _, passes in phases(opts, backend, target):
            if passes:
                mod = tvm.transform.Sequential(passes)(mod)
    return mod, target


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default="mobilenet_v2")
    ap.add_argument("--fp32", action="store_true")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--dump-main", default=None, help="write the lowered main (TVMScript) here")
    args = ap.parse_args(argv)
    import tvm
    from tvm import relax

    mod, target = lowered_module(args.model, args.fp32)
    if args.dump_main:
        Path(args.dump_main).write_text(mod.script())
    rules = {}
    for gv, func in mod.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc):
            attrs = func.attrs or {}
            rules[gv.name_hint] = str(attrs["accelc.schedule_rule"]) if "accelc.schedule_rule" in attrs else "-"
    calls = collections.Counter()

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.GlobalVar) and expr.op.name_hint in rules:
            calls[expr.op.name_hint] += 1
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == "relax.call_tir":
            calls[expr.args[0].name_hint] += 1

    relax.analysis.post_order_visit(mod["main"], visit)
    rng = np.random.default_rng(0)
    med = {}
    for name, count in calls.items():
        func = mod[name].with_attr("global_symbol", "main")
        lib = tvm.compile(tvm.IRModule({"main": func}), target)
        arrays = []
        for p in func.params:
            shape, dtype = [int(d) for d in p.ty.shape], str(p.ty.dtype)
            if "int" in dtype:
                arrays.append(tvm.runtime.tensor(rng.integers(-100, 100, shape).astype(dtype)))
            else:
                arrays.append(tvm.runtime.tensor(rng.standard_normal(shape).astype(dtype)))
        fn = lib["main"]
        fn(*arrays)
        samples = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(args.runs):
                fn(*arrays)
            samples.append((time.perf_counter() - start) / args.runs)
        med[name] = min(samples) * 1e6 * count
    total = sum(med.values())
    print(f"{sum(calls.values())} kernel launches; sum of kernels {total / 1000:.2f} ms over {len(med)} PrimFuncs")
    by_rule = collections.Counter()
    for name, us in med.items():
        by_rule[rules.get(name, "vm")] += us
    for rule, us in by_rule.most_common():
        print(f"  {rule:<44s}{us / 1000:9.3f} ms {100 * us / total:5.1f}%")
    print(f"{'kernel':<52s}{'rule':<40s}{'n':>3s}{'ms':>8s}{'%':>6s}")
    for name, us in sorted(med.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"{name[:51]:<52s}{rules.get(name, 'vm')[:39]:<40s}{calls[name]:3d}{us / 1000:8.3f}{100 * us / total:6.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
