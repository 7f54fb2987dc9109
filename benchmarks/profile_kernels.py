"""Per-kernel profile of a compiled model: which PrimFunc got which accelc schedule rule,
its time per inference (each PrimFunc compiled and timed alone, best of 5, times its calls in
main) and GFLOP/s for multiply-add reductions (GEMM/conv). ``accelc run ARTIFACT --profile``
times the same kernels in context instead (caches and thread pool as the model leaves them).

Usage: python benchmarks/profile_kernels.py MODEL.onnx [--threads 2] [--runs 5] [--top 25]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def lowered_module(model: str, threads: int):
    """(module after phase 4, target): the same passes `accelc compile -O3` runs."""
    import tvm
    from accelc.frontend import import_onnx, load_onnx
    from accelc.pipeline import PipelineOptions, phases
    from accelc.targets import registry

    backend = registry.get("llvm")
    target = backend.make({"num-cores": threads})
    mod = import_onnx(load_onnx(model), None).mod
    opts = PipelineOptions(opt_level=3)
    with target, tvm.transform.PassContext(opt_level=3):
        for _, passes in phases(opts, backend, target):
            if passes:
                mod = tvm.transform.Sequential(passes)(mod)
    return mod, target


def gemm_flops(func) -> float | None:
    """Multiply-add flops of a kernel (``accelc run --profile`` counts the same way)."""
    from accelc.targets.llvm_cpu.profile import kernel_flops

    return kernel_flops(func)


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))
    import numpy as np
    import tvm
    from tvm import relax

    mod, target = lowered_module(args.model, args.threads)
    rules, flops = {}, {}
    for gv, func in mod.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc):
            attrs = func.attrs or {}
            rules[gv.name_hint] = str(attrs["accelc.schedule_rule"]) if "accelc.schedule_rule" in attrs else "-"
            flops[gv.name_hint] = gemm_flops(func)
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
        func = mod[name]
        func = func.with_attr("global_symbol", "main")
        lib = tvm.compile(tvm.IRModule({"main": func}), target)
        bufs = [p.ty for p in func.params]
        arrays = [tvm.runtime.tensor(rng.standard_normal([int(d) for d in b.shape]).astype(str(b.dtype)))
                  for b in bufs]
        fn = lib["main"]
        fn(*arrays)
        samples = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(args.runs):
                fn(*arrays)
            samples.append((time.perf_counter() - start) / args.runs)
        med[name] = min(samples) * 1e6 * count  # min: the machine is shared, noise only adds
    total = sum(med.values())
    print(f"sum of kernels {total / 1000:.2f} ms over {len(med)} PrimFuncs, each timed alone, best of 5 (x calls per run)")
    by_rule = collections.Counter()
    for name, us in med.items():
        by_rule[rules.get(name, "vm")] += us
    for rule, us in by_rule.most_common():
        print(f"  {rule:<44s}{us / 1000:9.2f} ms {100 * us / total:5.1f}%")
    print(f"{'kernel':<44s}{'rule':<38s}{'ms':>8s}{'%':>6s}{'GFLOP/s':>9s}")
    for name, us in sorted(med.items(), key=lambda kv: -kv[1])[: args.top]:
        f = flops.get(name)
        gf = f"{f * calls[name] / us / 1e3:9.1f}" if f and us else "        -"
        print(f"{name[:43]:<44s}{rules.get(name, 'vm')[:37]:<38s}{us / 1000:8.3f}{100 * us / total:6.1f}{gf}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
