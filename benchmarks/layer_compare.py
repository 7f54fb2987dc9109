"""Per-layer times inside the model: accelc's kernels against onnxruntime's nodes, one process.

Both engines run the same benchmark model (``bench_models.py``, seeded weights) in
alternating blocks (0.1 s pause before each: onnxruntime's workers spin after a run); accelc's
kernels are timed through the VM's instrument hook, onnxruntime's nodes by its profiler.
Convolutions of both are keyed by their shape (``in->out kxk sS @out_width``), so the table
says which layer shapes accelc loses or wins in context (caches and threads as the model
leaves them), which a kernel timed alone does not (``profile_kernels.py``). The counts are
onnxruntime nodes and accelc kernels of a shape; onnxruntime pads output channels to its
block (SqueezeNet's 1000 classes show as 1008).

    .venv/bin/python benchmarks/layer_compare.py resnet50 [--rounds 8] [--threads 2] [--top 30]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def conv_key(cin: int, cout: int, k: int, stride: int, width: int) -> str:
    return f"{cin}->{cout} {k}x{k} s{stride} @{width}"


def accelc_keys(mod) -> dict[str, str]:
    """Kernel name -> conv key for accelc's packed convs (NCHW{c}c data, OIHW{i}i{o}o weights)."""
    import tvm

    keys = {}
    for gv, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc) or "conv" not in gv.name_hint:
            continue
        shapes = [[int(d) for d in p.ty.shape] for p in func.params]
        data, weight, out = shapes[0], shapes[1], shapes[-1]
        if len(data) == 4 and len(weight) == 3 and len(out) == 4:  # 1x1 as a GEMM over NCHW pixels
            keys[gv.name_hint] = conv_key(data[1], out[1], 1, 1, out[3])
            continue
        if len(data) != 5 or len(weight) != 6 or len(out) != 5:
            continue
        stride = max(1, round(data[2] / out[2]))
        keys[gv.name_hint] = conv_key(data[1] * data[4], weight[0] * weight[5], weight[2], stride, out[3])
    return keys


def ort_keys(optimized) -> dict[str, str]:
    """Node name -> conv key (or op type) from onnxruntime's optimized graph."""
    init = {i.name: list(i.dims) for i in optimized.graph.initializer}
    keys = {}
    for node in optimized.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in init:
            w = init[node.input[1]]
            attrs = {a.name: (list(a.ints) or a.i) for a in node.attribute}
            stride = attrs.get("strides", [1])[0] if isinstance(attrs.get("strides"), list) else 1
            group = attrs.get("group", 1) or 1
            keys[node.name] = (w, stride, group)
        else:
            keys[node.name] = node.op_type
    return keys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--rounds", type=int, default=8, help="alternating blocks of 5 runs per engine")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--no-tuning-records", action="store_true", help="default schedules only")
    args = ap.parse_args(argv)
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))

    import numpy as np
    import onnx
    import onnxruntime as ort
    import tvm

    import accelc
    from bench_models import MODELS
    from profile_kernels import lowered_module

    proto = MODELS[args.model](seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        onnx.save(proto, path)
        ours = accelc_keys(lowered_module(path, args.threads)[0])
        compiled = accelc.compile(proto, target_options={"num-cores": args.threads},
                                  tuning_records=None if args.no_tuning_records else "auto")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
        opts.optimized_model_filepath = os.path.join(tmp, "ort_optimized.onnx")
        opts.enable_profiling, opts.profile_file_prefix = True, os.path.join(tmp, "ort_profile")
        sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        theirs = ort_keys(onnx.load(opts.optimized_model_filepath))
        inp = sess.get_inputs()[0]
        x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in inp.shape])
        x = x.astype("float32")

        vm = compiled._machine()  # pylint: disable=protected-access
        xt = tvm.runtime.tensor(x)
        kernel_times, started, timed = collections.defaultdict(float), [], [False]

        def instrument(_func, symbol, before_run, _ret, *_args):
            if before_run:
                started.append(time.perf_counter())
            else:
                elapsed = time.perf_counter() - started.pop()
                if timed[0]:
                    kernel_times[str(symbol)] += elapsed
            return 0

        vm.set_instrument(instrument)
        runs = 0
        for r in range(args.rounds + 1):
            time.sleep(0.1)
            for _ in range(5):
                sess.run(None, {inp.name: x})
            time.sleep(0.1)
            timed[0] = False
            vm["main"](xt)  # untimed: wakes the thread pool
            timed[0] = r > 0  # round 0 warms both up
            for _ in range(5):
                vm["main"](xt)
            runs += 5 if r > 0 else 0
        events = json.load(open(sess.end_profiling()))

    per_node = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[e["name"][: -len("_kernel_time")]].append((e["dur"], e["args"].get("output_type_shape")))
    table = collections.defaultdict(lambda: [0.0, 0, 0.0, 0])  # key -> ort ms, nodes, accelc ms, kernels
    for name, samples in per_node.items():
        key = theirs.get(name, name)
        if isinstance(key, tuple):  # a conv: (weight dims, stride, group) + the output width
            w, stride, group = key
            width = samples[0][1][0]["float"][3]
            key = conv_key(w[1] * group, w[0], w[2], stride, width)
        table[key][0] += statistics.median(s[0] for s in samples[5:] or samples) / 1e3
        table[key][1] += 1
    for name, seconds in kernel_times.items():
        key = ours.get(name, name)
        table[key][2] += seconds / runs * 1e3
        table[key][3] += 1
    rows = sorted(table.items(), key=lambda kv: -max(kv[1][0], kv[1][2]))
    print(f"{args.model}: per layer in context, ms per run (onnxruntime nodes by its profiler, accelc kernels "
          f"through the VM instrument), {args.rounds} x 5 runs each, {args.threads} threads")
    print(f"{'layer':34s} {'onnxruntime (nodes)':>19s} {'accelc (kernels)':>16s} {'accelc/ort':>9s}")
    total_ort = total_ours = 0.0
    for key, (ort_ms, nodes, ours_ms, kernels) in rows[: args.top]:
        ratio = f"{ours_ms / ort_ms:10.2f}x" if ort_ms and ours_ms else " " * 11
        print(f"{key[:34]:34s} {ort_ms:14.3f} x{nodes:<3d} {ours_ms:12.3f} x{kernels:<3d}{ratio}")
    for _, (ort_ms, _, ours_ms, _) in rows:
        total_ort, total_ours = total_ort + ort_ms, total_ours + ours_ms
    print(f"{'all nodes / kernels':34s} {total_ort:14.3f}      {total_ours:12.3f}     {total_ours / total_ort:6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
