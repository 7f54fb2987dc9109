"""Per-kernel GFLOP/s: accelc default schedules vs untuned TVM vs numpy (OpenBLAS) vs onnxruntime.

Layers are representative ResNet-50 / SqueezeNet convolutions (with their bias + relu epilogue)
and matmuls. Every implementation of a layer is timed in the same process, interleaved
round-robin (the machine is shared and noisy), and the median of many samples is reported.

* accelc:  the fused PrimFunc (conv+bias+relu in NCHW{c}c, weights pre-packed) produced by
           layout_passes + LegalizeOps + FuseOps/FuseTIR + schedule_passes, compiled alone.
* tvm:     the same fused PrimFunc without accelc passes (TVM 0.27 default, no tuning).
* numpy:   the GEMM a convolution reduces to (im2col time excluded: an OpenBLAS bound).
* ort:     a single-node ONNX model (Conv+Relu, or MatMul with constant B), 2 threads.

Usage: python benchmarks/kernels.py [--quick] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tvm  # noqa: E402
from tvm import relax, te  # noqa: E402

try:
    from accelc.targets import llvm_cpu as cpu  # noqa: E402
except ImportError:  # not installed: import the source tree
    from targets import llvm_cpu as cpu  # noqa: E402

THREADS = int(__import__("os").environ.get("BENCH_THREADS", 2))


@dataclass
class Layer:
    name: str
    kind: str  # "conv" | "matmul"
    shape: tuple  # conv: (C, O, H, W, K, S, P); matmul: (M, K, N)

    @property
    def flops(self) -> float:
        if self.kind == "matmul":
            m, k, n = self.shape
            return 2.0 * m * k * n
        c, o, h, w, k, s, p = self.shape
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        return 2.0 * c * o * k * k * oh * ow


LAYERS = [
    Layer("resnet50 conv1 7x7/2 3->64 @224", "conv", (3, 64, 224, 224, 7, 2, 3)),
    Layer("resnet50 3x3 64->64 @56", "conv", (64, 64, 56, 56, 3, 1, 1)),
    Layer("resnet50 1x1 256->64 @56", "conv", (256, 64, 56, 56, 1, 1, 0)),
    Layer("resnet50 1x1 64->256 @56", "conv", (64, 256, 56, 56, 1, 1, 0)),
    Layer("resnet50 3x3 256->256 @14", "conv", (256, 256, 14, 14, 3, 1, 1)),
    Layer("resnet50 1x1 1024->256 @14", "conv", (1024, 256, 14, 14, 1, 1, 0)),
    Layer("resnet50 3x3 512->512 @7", "conv", (512, 512, 7, 7, 3, 1, 1)),
    Layer("squeezenet conv1 3x3/2 3->64 @224", "conv", (3, 64, 224, 224, 3, 2, 0)),
    Layer("squeezenet 1x1 128->16 @55", "conv", (128, 16, 55, 55, 1, 1, 0)),
    Layer("squeezenet 3x3 16->64 @55", "conv", (16, 64, 55, 55, 3, 1, 1)),
    Layer("squeezenet 3x3 64->256 @13", "conv", (64, 256, 13, 13, 3, 1, 1)),
    Layer("squeezenet 1x1 512->1000 @13", "conv", (512, 1000, 13, 13, 1, 1, 0)),
    Layer("matmul 128x768x3072", "matmul", (128, 768, 3072)),
    Layer("fc 1x2048x1000", "matmul", (1, 2048, 1000)),
]
QUICK = {"resnet50 3x3 256->256 @14", "resnet50 1x1 1024->256 @14", "matmul 128x768x3072"}


# ----------------------------------------------------------------------------- relax models
def _relax_layer(layer: Layer, rng) -> tuple[tvm.IRModule, list[np.ndarray], dict]:
    bb = relax.BlockBuilder()
    if layer.kind == "conv":
        c, o, h, w, k, s, p = layer.shape
        wt = (rng.standard_normal((o, c, k, k)) / np.sqrt(c * k * k)).astype("float32")
        bias = rng.standard_normal((o,)).astype("float32")
        x = relax.Var("x", relax.TensorType((1, c, h, w), "float32"))
        with bb.function("main", [x]):
            with bb.dataflow():
                y = bb.emit(relax.op.nn.conv2d(x, relax.const(wt), strides=s, padding=p))
                y = bb.emit(relax.op.add(y, relax.const(bias.reshape(1, o, 1, 1))))
                y = bb.emit(relax.op.nn.relu(y))
                out = bb.emit_output(y)
            bb.emit_func_output(out)
        inputs = [rng.standard_normal((1, c, h, w)).astype("float32")]
        return bb.get(), inputs, {"w": wt, "b": bias}
    m, kk, n = layer.shape
    wt = (rng.standard_normal((kk, n)) / np.sqrt(kk)).astype("float32")
    x = relax.Var("x", relax.TensorType((m, kk), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.matmul(x, relax.const(wt))))
        bb.emit_func_output(out)
    return bb.get(), [rng.standard_normal((m, kk)).astype("float32")], {"w": wt}


def _lower(mod, target, accelc: bool):
    passes = [relax.transform.FoldConstant()]
    if accelc:
        passes += cpu.layout_passes(target) + [relax.transform.FoldConstant()]
    passes += [
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]
    if accelc:
        passes += cpu.schedule_passes(target)
    with target:
        return tvm.transform.Sequential(passes)(mod)


def _main_kernel(mod) -> tvm.tirx.PrimFunc:
    """The PrimFunc with the most flops-like work: the one holding the conv/matmul."""
    best = None
    for gv, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        name = gv.name_hint
        if any(k in name for k in ("conv2d", "matmul", "dense")):
            if best is None or "fused" in name:
                best = func
    assert best is not None, "no conv/matmul kernel found"
    return best


def _tvm_callable(func, target, rng):
    ex = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target)
    args = []
    for ty in func.ty.params:
        shape = [int(d) for d in ty.shape]
        args.append(tvm.runtime.tensor(rng.standard_normal(shape).astype(str(ty.dtype))))
    fn = ex["main"]
    return lambda: fn(*args)


# ----------------------------------------------------------------------------- references
def _numpy_callable(layer: Layer, rng):
    if layer.kind == "matmul":
        m, k, n = layer.shape
        a, b = rng.standard_normal((m, k)).astype("float32"), rng.standard_normal((k, n)).astype("float32")
        return lambda: np.matmul(a, b)
    c, o, h, w, k, s, p = layer.shape
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    wm = rng.standard_normal((o, c * k * k)).astype("float32")
    cols = rng.standard_normal((c * k * k, oh * ow)).astype("float32")
    return lambda: np.matmul(wm, cols)


def _ort_callable(layer: Layer, rng, params):
    import onnx  # pylint: disable=import-outside-toplevel
    import onnxruntime as ort  # pylint: disable=import-outside-toplevel
    from onnx import TensorProto, helper, numpy_helper  # pylint: disable=import-outside-toplevel

    if layer.kind == "conv":
        c, o, h, w, k, s, p = layer.shape
        nodes = [
            helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4),
            helper.make_node("Relu", ["y"], ["z"]),
        ]
        inits = [numpy_helper.from_array(params["w"], "w"), numpy_helper.from_array(params["b"], "b")]
        xshape = [1, c, h, w]
    else:
        m, k, n = layer.shape
        nodes = [helper.make_node("MatMul", ["x", "w"], ["z"])]
        inits = [numpy_helper.from_array(params["w"], "w")]
        xshape = [m, k]
    graph = helper.make_graph(
        nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, xshape)],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = rng.standard_normal(xshape).astype("float32")
    return lambda: sess.run(None, {"x": x})


def _peak_callable(target, config):
    """FMA-bound kernel: an L1-resident dense micro-kernel (rows x 2 vectors), repeated."""
    lanes = config.vector_lanes
    rows, width, depth, reps = 12 if lanes == 16 else 6, 2 * lanes, 128, 64 * THREADS
    a = te.placeholder((rows, depth), name="a")
    b = te.placeholder((depth, width), name="b")
    k = te.reduce_axis((0, depth), "k")
    c = te.compute((reps, rows, width), lambda r, i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    sch = tvm.s_tir.Schedule(te.create_prim_func([a, b, c]))
    blk = sch.get_sblock("c")
    r, i, j, kk = sch.get_loops(blk)
    sch.reorder(r, kk, i, j)
    sch.parallel(r)
    cache = sch.cache_write(blk, 0, "local")
    sch.reverse_compute_at(cache, r)
    sch.unroll(i)
    sch.vectorize(j)
    init = sch.decompose_reduction(blk, kk)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.vectorize(sch.get_loops(cache)[-1])
    ex = tvm.compile(sch.mod, target)
    args = [tvm.runtime.tensor(np.random.rand(*s).astype("float32")) for s in [(rows, depth), (depth, width), (reps, rows, width)]]
    fn = ex["main"]
    return (lambda: fn(*args)), 2.0 * reps * rows * width * depth


# ----------------------------------------------------------------------------- timing
def _calibrate(fn, target_s=0.004) -> int:
    fn()
    t0 = time.perf_counter()
    fn()
    dt = max(time.perf_counter() - t0, 1e-7)
    return max(1, min(1000, int(target_s / dt)))


def time_interleaved(fns: dict, samples: int, max_total_s: float = 20.0) -> dict:
    """Median seconds per call of each fn, sampled round-robin; each sample opens with a
    pause and an untimed call (``accelc.driver.BENCH_SWITCH_PAUSE_S`` says why)."""
    inner = {k: _calibrate(f) for k, f in fns.items()}
    times = {k: [] for k in fns}
    start = time.perf_counter()
    for _ in range(samples):
        for k, f in fns.items():
            time.sleep(0.1)  # let the previous engine's spinning worker threads go idle
            f()
            t0 = time.perf_counter()
            for _ in range(inner[k]):
                f()
            times[k].append((time.perf_counter() - t0) / inner[k])
        if time.perf_counter() - start > max_total_s and len(times[next(iter(fns))]) >= 3:
            break
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="three layers only")
    ap.add_argument("--samples", type=int, default=15)
    ap.add_argument("--no-untuned", action="store_true", help="skip untuned TVM (slow)")
    ap.add_argument("--only", default=None, help="substring filter on layer names")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    target = cpu.host_target(THREADS)
    config = cpu.config_from_target(target)
    rng = np.random.default_rng(0)
    peak_fn, peak_flops = _peak_callable(target, config)
    peak = peak_flops / time_interleaved({"peak": peak_fn}, 15)["peak"] / 1e9
    from accelc.targets.llvm_cpu.profile import nominal_peak_gflops  # noqa: PLC0415

    theo = nominal_peak_gflops(target)
    print(f"target {target}  lanes={config.vector_lanes}")
    print(f"FMA micro-kernel peak (measured): {peak:.0f} GFLOP/s; theoretical at max MHz: "
          f"{theo:.0f} GFLOP/s" if theo else f"measured peak {peak:.0f} GFLOP/s")
    rows = []
    hdr = f"{'layer':36s} {'accelc':>8s} {'tvm':>8s} {'numpy':>8s} {'ort':>8s}  {'acc/ort':>7s} {'acc/np':>7s} {'acc/tvm':>7s} {'%peak':>6s}"
    print(hdr)
    for layer in LAYERS:
        if args.quick and layer.name not in QUICK:
            continue
        if args.only and args.only not in layer.name:
            continue
        mod, _, params = _relax_layer(layer, rng)
        fns = {"accelc": _tvm_callable(_main_kernel(_lower(mod, target, True)), target, rng)}
        fns["numpy"] = _numpy_callable(layer, rng)
        fns["ort"] = _ort_callable(layer, rng, params)
        if not args.no_untuned:
            fns["tvm"] = _tvm_callable(_main_kernel(_lower(mod, target, False)), target, rng)
        t = time_interleaved(fns, args.samples)
        g = {k: layer.flops / v / 1e9 for k, v in t.items()}
        row = {"layer": layer.name, "gflops": g, "ms": {k: v * 1e3 for k, v in t.items()}}
        rows.append(row)
        print(f"{layer.name:36s} {g['accelc']:8.1f} {g.get('tvm', float('nan')):8.1f} {g['numpy']:8.1f} "
              f"{g['ort']:8.1f}  {g['accelc'] / g['ort']:7.2f} {g['accelc'] / g['numpy']:7.2f} "
              f"{g['accelc'] / g.get('tvm', float('nan')):7.1f} {100 * g['accelc'] / peak:5.0f}%", flush=True)
    print("GFLOP/s, medians of interleaved samples; acc/x > 1 means accelc is faster; "
          "%peak against the measured FMA micro-kernel peak.")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"target": str(target), "peak_gflops": peak, "theoretical_peak": theo, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
