"""End-to-end check of the LLVM CPU layout + schedule passes on light model-zoo models.

Mimics accelc's pipeline: from_onnx -> FoldConstant -> layout_passes -> FoldConstant ->
LegalizeOps -> AnnotateTIROpPattern -> FoldConstant -> FuseOps -> FuseTIR -> schedule_passes ->
tvm.compile, then compares outputs with onnxruntime (weights replaced by seeded random
initializers: the light models' own weights are constant fills) and times both, interleaved,
batch 1, 2 threads.

Usage: python tests/llvm_cpu/zoo_e2e.py [squeezenet resnet50 ...] [--untuned]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import onnx
from onnx import numpy_helper


import tvm  # noqa: E402
from tvm import relax  # noqa: E402

try:
    from accelc.targets import llvm_cpu as cpu  # noqa: E402
except ImportError:
    from targets import llvm_cpu as cpu  # noqa: E402

THREADS = 2
LIGHT_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def randomize_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Replace every ConstantOfShape weight (and float initializer) by a seeded random tensor,
    scaled so activations stay O(1) through deep nets."""
    rng = np.random.default_rng(seed)
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consts = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}

    def shape_of(name):
        if name in inits:
            return numpy_helper.to_array(inits[name])
        node = consts[name]
        return numpy_helper.to_array(node.attribute[0].t)

    def random_tensor(shape):
        shape = [int(s) for s in shape]
        if len(shape) >= 2:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 2 else shape[0]
            return (rng.standard_normal(shape) * np.sqrt(1.0 / max(fan_in, 1))).astype("float32")
        return rng.uniform(0.5, 1.5, shape).astype("float32")

    new_nodes = []
    for node in graph.node:
        if node.op_type == "ConstantOfShape":
            value = random_tensor(shape_of(node.input[0]))
            graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
            continue
        new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    for init in graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32 and arr.ndim >= 1 and not init.name.startswith("ConstantOfShape"):
            init.CopyFrom(numpy_helper.from_array(random_tensor(arr.shape), init.name))
    return model


def compile_accelc(model: onnx.ModelProto, target, use_accelc: bool = True):
    from tvm.relax.frontend.onnx import from_onnx  # pylint: disable=import-outside-toplevel

    mod = from_onnx(model, keep_params_in_input=False)
    passes = [relax.transform.FoldConstant()]
    if use_accelc:
        passes += cpu.layout_passes(target) + [relax.transform.FoldConstant()]
    passes += [
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]
    sched = cpu.schedule_passes(target) if use_accelc else []
    with target:
        mod = tvm.transform.Sequential(passes + sched)(mod)
    stats = {}
    if use_accelc:
        prims = [f for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
        stats = {"primfuncs": len(prims), "fired": dict(sched[0].fired), "failed": dict(sched[0].failed),
                 "unscheduled": sorted(g.name_hint for g, f in mod.functions_items()
                                       if isinstance(f, tvm.tirx.PrimFunc) and not (f.attrs and "accelc.schedule_rule" in f.attrs))}
    ex = tvm.compile(mod, target)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm, stats


def ort_session(model):
    import onnxruntime as ort  # pylint: disable=import-outside-toplevel

    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def median_interleaved(fns: dict, samples: int = 30, budget_s: float = 60.0) -> dict:
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    start = time.perf_counter()
    for _ in range(samples):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s and len(times[k]) >= 5:
            break
    return {k: statistics.median(v) for k, v in times.items()}


def run_model(name: str, target, untuned: bool = False, samples: int = 30) -> dict:
    model = randomize_weights(onnx.load(os.path.join(LIGHT_DIR, f"light_{name}.onnx")))
    init_names = {i.name for i in model.graph.initializer}
    inp = [i for i in model.graph.input if i.name not in init_names][0]
    shape = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
    x = np.random.default_rng(1).standard_normal(shape).astype("float32")
    t0 = time.perf_counter()
    vm, stats = compile_accelc(model, target)
    compile_s = time.perf_counter() - t0
    sess = ort_session(model)
    ref = sess.run(None, {inp.name: x})[0]
    xt = tvm.runtime.tensor(x)
    out = vm["main"](xt)
    out = (out[0] if isinstance(out, (list, tuple)) or hasattr(out, "__getitem__") and not hasattr(out, "numpy") else out).numpy()
    err = float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30))
    fns = {"accelc": lambda: vm["main"](xt), "ort": lambda: sess.run(None, {inp.name: x})}
    if untuned:
        vm0, _ = compile_accelc(model, target, use_accelc=False)
        fns["tvm_untuned"] = lambda: vm0["main"](xt)
    t = median_interleaved(fns, samples)
    return {"model": name, "rel_err": err, "compile_s": compile_s, "ms": {k: v * 1e3 for k, v in t.items()}, **stats}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", default=["squeezenet", "resnet50"])
    ap.add_argument("--untuned", action="store_true", help="also time TVM without accelc passes (slow)")
    ap.add_argument("--samples", type=int, default=30)
    args = ap.parse_args(argv)
    target = cpu.host_target(THREADS)
    for name in args.models:
        r = run_model(name, target, args.untuned, args.samples)
        ms = r["ms"]
        extra = f"  tvm-untuned {ms['tvm_untuned']:.1f} ms" if "tvm_untuned" in ms else ""
        print(f"{name}: accelc {ms['accelc']:.2f} ms  ort {ms['ort']:.2f} ms  ratio {ms['accelc'] / ms['ort']:.2f}x"
              f"{extra}  rel_err {r['rel_err']:.2e}  compile {r['compile_s']:.1f}s")
        print(f"   fired {r['fired']}  unscheduled {len(r['unscheduled'])}/{r['primfuncs']}: {r['unscheduled'][:12]}")
        if r["failed"]:
            print(f"   failed {r['failed']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
