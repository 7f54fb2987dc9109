"""int8 speed: accelc int8 vs accelc fp32 vs onnxruntime fp32 vs onnxruntime int8 (QDQ), same run.

    .venv/bin/python benchmarks/int8_speed.py [--models resnet50 mobilenet_v2] [--repeat 20]
        [--kernels] [--json out/int8_speed.json]

Models (batch 1, 2 threads): ResNet-50 (ONNX light zoo, seeded weights) and MobileNetV2
(``benchmarks/bench_models.py``). Both int8 builds calibrate on the same seeded N(0, 1) samples:
accelc with ``accelc.compile(..., quantize="int8", calib=..., calib_method="minmax")``,
onnxruntime with its own ``quantize_static`` (QDQ, per-channel int8 weights, u8 activations,
MinMax, a ``CalibrationDataReader`` over the same samples). The four engines are timed in
alternating blocks (``accelc.driver._interleaved_blocks``) so machine noise hits them alike;
medians and ratios are printed as a markdown table.

``--kernels`` times single ResNet-50 / MobileNetV2 convolutions (int8 conv + bias + relu +
requantize vs fp32 conv + bias + relu, accelc's kernels, interleaved) in GOP/s against the
machine's int8 (vpdpbusd) and fp32 (FMA) peaks, as ``benchmarks/kernels.py`` does for fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "2")  # before TVM's thread pool starts

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

THREADS = 2


# ----------------------------------------------------------------------------- models
def load_model(name: str):
    import bench_models  # noqa: E402  (benchmarks/)

    if name == "mobilenet_v2":
        return bench_models.mobilenet_v2(seed=0)
    import zoo  # noqa: E402  (tests/)

    return zoo.randomize_weights(zoo.load_light_model(name), seed=0)


def calibration_samples(model, count: int, seed: int = 1) -> dict[str, np.ndarray]:
    import zoo

    inp = zoo.real_inputs(model)[0]
    shape = zoo.input_shape(inp)
    rng = np.random.default_rng(seed)
    return {inp.name: rng.standard_normal((count, *shape[1:])).astype(np.float32)}


def ort_session(model_bytes: bytes):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def ort_int8_model(model, calib: dict[str, np.ndarray], workdir: Path) -> bytes:
    """onnxruntime's own static int8 quantization: QDQ, per-channel weights, MinMax."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            name, data = next(iter(calib.items()))
            self.items = iter([{name: data[i:i + 1]} for i in range(len(data))])

        def get_next(self):
            return next(self.items, None)

    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=13)
    if opset < 13:  # per-channel DequantizeLinear (axis) needs opset 13 (the light zoo is opset 8)
        model = onnx.version_converter.convert_version(model, 13)
    workdir.mkdir(parents=True, exist_ok=True)
    raw, src, dst = workdir / "fp32.onnx", workdir / "fp32_pre.onnx", workdir / "int8_qdq.onnx"
    onnx.save(model, raw)
    # onnxruntime's recommended pre-processing (graph optimization: BatchNormalization folded
    # into Conv, then shape inference), so its int8 graph has no float BN left to run
    quant_pre_process(str(raw), str(src), skip_symbolic_shape=True)
    quantize_static(
        str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )
    return dst.read_bytes()


def vm_runner(compiled, feeds: dict[str, np.ndarray]):
    import tvm

    vm = compiled._machine()  # pylint: disable=protected-access
    args = [tvm.runtime.tensor(a) for a in compiled.signature.check_inputs(feeds)]
    fn = vm["main"]
    return lambda: fn(*args)


def bench_model(name: str, repeat: int, warmup: int, calib_count: int) -> dict:
    import accelc
    from accelc.driver import _interleaved_blocks

    model = load_model(name)
    calib = calibration_samples(model, calib_count)
    feeds = {k: v[:1] for k, v in calibration_samples(model, 1, seed=7).items()}
    opts = {"target_options": {"num-cores": THREADS}}
    t0 = time.perf_counter()
    fp32 = accelc.compile(model, **opts)
    t1 = time.perf_counter()
    int8 = accelc.compile(model, quantize="int8", calib=calib, calib_method="minmax", **opts)
    t2 = time.perf_counter()
    ort_fp32 = ort_session(model.SerializeToString())
    ort_int8 = ort_session(ort_int8_model(model, calib, ROOT / "out" / "int8_speed" / name))
    compile_s = {"accelc_fp32": t1 - t0, "accelc_int8": t2 - t1}

    engines = {
        "accelc_fp32": vm_runner(fp32, feeds),
        "accelc_int8": vm_runner(int8, feeds),
        "ort_fp32": lambda: ort_fp32.run(None, feeds),
        "ort_int8": lambda: ort_int8.run(None, feeds),
    }
    times = _interleaved_blocks(engines, repeat, warmup)
    med = {k: statistics.median(v) for k, v in times.items()}

    ref = ort_fp32.run(None, feeds)[0]
    outs = {"accelc_fp32": next(iter(fp32.run(feeds).values())), "accelc_int8": next(iter(int8.run(feeds).values())),
            "ort_int8": ort_int8.run(None, feeds)[0]}
    rel = {k: float(np.linalg.norm(v - ref) / np.linalg.norm(ref)) for k, v in outs.items()}
    return {"model": name, "median_ms": med, "times_ms": times, "compile_s": compile_s, "rel_err_vs_ort_fp32": rel}


# ----------------------------------------------------------------------------- kernels
# (C, O, H, W, K, S, P, groups)
KERNELS = {
    "resnet50 1x1 64->256 @56": (64, 256, 56, 56, 1, 1, 0, 1),
    "resnet50 3x3 64->64 @56": (64, 64, 56, 56, 3, 1, 1, 1),
    "resnet50 1x1 256->64 @56": (256, 64, 56, 56, 1, 1, 0, 1),
    "resnet50 3x3 128->128 @28": (128, 128, 28, 28, 3, 1, 1, 1),
    "resnet50 3x3 256->256 @14": (256, 256, 14, 14, 3, 1, 1, 1),
    "resnet50 1x1 1024->256 @14": (1024, 256, 14, 14, 1, 1, 0, 1),
    "resnet50 3x3 512->512 @7": (512, 512, 7, 7, 3, 1, 1, 1),
    "resnet50 conv1 7x7/2 3->64 @224": (3, 64, 224, 224, 7, 2, 3, 1),
    "mobilenet_v2 1x1 32->192 @28": (32, 192, 28, 28, 1, 1, 0, 1),
    "mobilenet_v2 1x1 192->32 @28": (192, 32, 28, 28, 1, 1, 0, 1),
    "mobilenet_v2 dw 3x3 192 @28": (192, 192, 28, 28, 3, 1, 1, 192),
    "mobilenet_v2 1x1 96->576 @14": (96, 576, 14, 14, 1, 1, 0, 1),
}


def _conv_modules(c, o, h, w, k, s, p, groups, rng):
    """(fp32 conv+bias+relu, int8 conv+bias+relu+requantize) Relax modules of one layer."""
    import tvm  # noqa: F401
    from tvm import relax

    from accelc.quantize.fixed_point import fixed_point_multiplier

    attrs = dict(strides=[s, s], padding=[p] * 4, groups=groups)
    wf = (rng.standard_normal((o, c // groups, k, k)) / np.sqrt(c // groups * k * k)).astype(np.float32)
    wq = rng.integers(-127, 128, wf.shape).astype(np.int8)
    bias = rng.standard_normal(o).astype(np.float32)
    m0, shift = fixed_point_multiplier(np.full(o, 1.0 / (127 * np.sqrt(c // groups * k * k) * 20)))
    mods = []
    for dtype in ("float32", "int8"):
        bb = relax.BlockBuilder()
        x = relax.Var("x", relax.TensorType((1, c, h, w), dtype))
        with bb.function("main", [x]):
            with bb.dataflow():
                if dtype == "float32":
                    y = bb.emit(relax.op.nn.conv2d(x, relax.const(wf), **attrs))
                    y = bb.emit(relax.op.nn.relu(relax.op.add(y, relax.const(bias.reshape(1, o, 1, 1)))))
                else:
                    y = bb.emit(relax.op.nn.conv2d(x, relax.const(wq), out_dtype="int32", **attrs))
                    y = bb.emit(relax.op.nn.relu(relax.op.add(y, relax.const((bias * 100).astype(np.int32).reshape(1, o, 1, 1), "int32"))))
                    v = bb.emit(relax.op.multiply(relax.op.astype(y, "int64"), relax.const(m0.reshape(1, o, 1, 1), "int64")))
                    v = bb.emit(relax.op.add(v, relax.const((np.int64(1) << (shift - 1)).reshape(1, o, 1, 1), "int64")))
                    v = bb.emit(relax.op.right_shift(v, relax.const(shift.reshape(1, o, 1, 1), "int64")))
                    y = bb.emit(relax.op.astype(relax.op.clip(v, -128, 127), "int8"))
                out = bb.emit_output(y)
            bb.emit_func_output(out)
        mods.append(bb.get())
    return mods


def _compile_module(mod, target):
    import tvm
    from tvm import relax

    from accelc.targets import llvm_cpu as cpu

    layout = cpu.layout_passes(target)
    passes = [*layout, relax.transform.FoldConstant(), relax.transform.LegalizeOps(),
              relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant(),
              relax.transform.FuseOps(), relax.transform.FuseTIR(), *cpu.schedule_passes(target)]
    with target:
        mod = tvm.transform.Sequential(passes)(mod)
        kernels = [k for p in layout for k in (getattr(p, "rewrites", None) or {})]
        return relax.VirtualMachine(tvm.compile(mod, target), tvm.cpu()), ",".join(kernels)


def peaks_gops(lanes: int) -> dict[str, float]:
    """Theoretical peaks at the clock /proc/cpuinfo reports: fp32 = 2 FMA pipes x lanes x 2
    flops; int8 = 2 vpdpbusd pipes (ports 0 and 5 on Ice Lake/Sapphire Rapids server cores)
    x 4 * lanes products x 2 ops. Turbo above the reported clock can exceed them."""
    mhz = max(float(l.split(":")[1]) for l in open("/proc/cpuinfo") if l.startswith("cpu MHz"))
    ghz = mhz / 1000
    return {"fp32": THREADS * ghz * 2 * lanes * 2, "int8": THREADS * ghz * 2 * 4 * lanes * 2}


def bench_kernels(samples: int) -> list[dict]:
    import tvm

    from accelc.targets.llvm_cpu import host_target
    from accelc.targets.llvm_cpu.config import config_from_target

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from kernels import time_interleaved  # noqa: E402

    target = host_target(THREADS)
    peak = peaks_gops(config_from_target(target).vector_lanes)
    rng = np.random.default_rng(0)
    rows = []
    for name, (c, o, h, w, k, s, p, g) in KERNELS.items():
        fmod, qmod = _conv_modules(c, o, h, w, k, s, p, g, rng)
        (fvm, _), (qvm, kernel) = _compile_module(fmod, target), _compile_module(qmod, target)
        xf = tvm.runtime.tensor(rng.standard_normal((1, c, h, w)).astype(np.float32))
        xq = tvm.runtime.tensor(rng.integers(-128, 128, (1, c, h, w)).astype(np.int8))
        ff, fq = fvm["main"], qvm["main"]
        t = time_interleaved({"fp32": lambda: ff(xf), "int8": lambda: fq(xq)}, samples)
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        ops = 2.0 * (c // g) * o * k * k * oh * ow
        rows.append({"layer": name, "kernel": kernel, "ops": ops, "fp32_ms": t["fp32"] * 1e3, "int8_ms": t["int8"] * 1e3,
                     "fp32_gops": ops / t["fp32"] / 1e9, "int8_gops": ops / t["int8"] / 1e9, "peak": peak})
        r = rows[-1]
        print(f"{name:36s} fp32 {r['fp32_gops']:7.1f} GFLOP/s  int8 {r['int8_gops']:7.1f} GOP/s  "
              f"({r['fp32_ms'] / r['int8_ms']:.2f}x)", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["resnet50", "mobilenet_v2"])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--calib", type=int, default=8, help="calibration samples (N(0, 1), seeded)")
    ap.add_argument("--kernels", action="store_true", help="per-conv GOP/s table instead of models")
    ap.add_argument("--samples", type=int, default=15)
    ap.add_argument("--json", default="out/int8_speed.json")
    args = ap.parse_args(argv)

    if args.kernels:
        rows = bench_kernels(args.samples)
        peak = rows[0]["peak"]
        print(f"\nPeaks at nominal clock, {THREADS} cores: fp32 {peak['fp32']:.0f} GFLOP/s, "
              f"int8 (2 vpdpbusd/cycle) {peak['int8']:.0f} GOP/s\n")
        print("| layer | int8 kernel | fp32 GFLOP/s (% peak) | int8 GOP/s (% peak) | int8 speed-up |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['layer']} | {r['kernel']} | {r['fp32_gops']:.1f} ({100 * r['fp32_gops'] / peak['fp32']:.0f}%) | "
                  f"{r['int8_gops']:.1f} ({100 * r['int8_gops'] / peak['int8']:.0f}%) | {r['fp32_ms'] / r['int8_ms']:.2f}x |")
        result = {"kernels": rows}
    else:
        results = []
        load_before = os.getloadavg()
        for name in args.models:
            r = bench_model(name, args.repeat, args.warmup, args.calib)
            results.append(r)
            print(f"{name}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in r["median_ms"].items()), flush=True)
        load = f"load average (1/5/15 min) {'/'.join(f'{v:.2f}' for v in load_before)} before, " \
               f"{'/'.join(f'{v:.2f}' for v in os.getloadavg())} after"
        print(f"\nbatch 1, {THREADS} threads, {args.repeat} runs per engine in alternating blocks, medians; {load}\n")
        print("| model | accelc fp32 ms | accelc int8 ms | ORT fp32 ms | ORT int8 ms | "
              "int8 vs accelc fp32 | accelc int8 vs ORT int8 | rel. err int8 (accelc / ORT) |")
        print("|---|---|---|---|---|---|---|---|")
        for r in results:
            m, e = r["median_ms"], r["rel_err_vs_ort_fp32"]
            print(f"| {r['model']} | {m['accelc_fp32']:.1f} | {m['accelc_int8']:.1f} | {m['ort_fp32']:.1f} | "
                  f"{m['ort_int8']:.1f} | {m['accelc_fp32'] / m['accelc_int8']:.2f}x | "
                  f"{m['ort_int8'] / m['accelc_int8']:.2f}x | {e['accelc_int8']:.3f} / {e['ort_int8']:.3f} |")
        print("\nfastest run of each engine (less sensitive to other load on a shared machine):\n")
        print("| model | accelc fp32 ms | accelc int8 ms | ORT fp32 ms | ORT int8 ms | int8 vs accelc fp32 | "
              "accelc int8 vs ORT int8 |")
        print("|---|---|---|---|---|---|---|")
        for r in results:
            m = {k: min(v) for k, v in r["times_ms"].items()}
            print(f"| {r['model']} | {m['accelc_fp32']:.1f} | {m['accelc_int8']:.1f} | {m['ort_fp32']:.1f} | "
                  f"{m['ort_int8']:.1f} | {m['accelc_fp32'] / m['accelc_int8']:.2f}x | {m['ort_int8'] / m['accelc_int8']:.2f}x |")
        result = {"models": results, "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
