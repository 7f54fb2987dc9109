"""What each fusion/folding pass buys: kernels launched and latency with the pass and without.

For every model, the full -O3 pipeline is compiled once, then once per variant with passes
switched off through ``--disabled-pass`` (``accelc.compile(disabled_passes=...)``): the
BatchNorm fold, the scale/shift fold, and TVM's FuseOps/FuseTIR (the llvm target declares no
FuseOpsByPattern patterns: FuseOps already fuses conv/matmul + bias + activation + residual
there; tests/passes/test_fusion.py asserts it). All variants of one model are timed
in one process, interleaved in alternating blocks (``accelc bench``'s method), batch 1,
2 threads; the table gives kernel launches per run, the median latency, and its ratio to
the full pipeline (> 1: the pass pays).

    .venv/bin/python benchmarks/fusion_passes.py --repeat 20 [squeezenet resnet50 mobilenet_v2 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

THREADS = 2
VARIANTS = {
    "all passes": (),
    "no FoldBatchNorm": ("FoldBatchNorm",),
    "no FoldScaleShift": ("FoldScaleShift",),
    "no FuseOps/FuseTIR": ("FuseOps", "FuseTIR"),
}


def load_model(name: str):
    """A light-zoo model with seeded random weights (tests/zoo.py), or a bench_models one."""
    import zoo

    if name in zoo.light_model_names():
        return zoo.randomize_weights(zoo.load_light_model(name), seed=0)
    import bench_models

    return bench_models.MODELS[name]()


def measure(name: str, repeat: int, warmup: int) -> list[dict]:
    os.environ.setdefault("TVM_NUM_THREADS", str(THREADS))
    import tvm

    import accelc
    from accelc import driver

    model = load_model(name)
    compiled = {}
    for variant, disabled in VARIANTS.items():
        compiled[variant] = accelc.compile(model, "llvm", target_options={"num-cores": THREADS},
                                           disabled_passes=disabled)
    inputs = driver.gather_inputs(compiled["all passes"].signature, (), None, "random", 0)
    engines = {}
    for variant, cm in compiled.items():
        vm = cm._machine()
        args = [tvm.runtime.tensor(a, tvm.cpu()) for a in cm.signature.check_inputs(inputs)]
        engines[variant] = (lambda vm=vm, args=args: vm["main"](*args))
    # Every variant computes the same function: check before timing.
    ref = compiled["all passes"].run(inputs)
    for variant, cm in compiled.items():
        for key, value in cm.run(inputs).items():
            np.testing.assert_allclose(value, ref[key], rtol=1e-3, atol=1e-4, err_msg=f"{name} {variant}")
    times = driver._interleaved_blocks(engines, repeat, warmup)
    base = statistics.median(times["all passes"])
    return [
        {"model": name, "variant": variant, "kernels": compiled[variant].report.kernel_launches,
         "median_ms": statistics.median(t), "ratio_vs_all": statistics.median(t) / base}
        for variant, t in times.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["squeezenet", "resnet50", "inception_v1", "mobilenet_v2"])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", default="out/fusion_passes.json")
    args = parser.parse_args()
    rows = []
    for name in args.models:
        rows += measure(name, args.repeat, args.warmup)
    print("\n| model | pipeline | kernels launched | median ms | vs all passes |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['variant']} | {r['kernels']} | {r['median_ms']:.2f} | {r['ratio_vs_all']:.2f}x |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
