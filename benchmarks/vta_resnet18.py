"""ResNet-18's convolutions on the VTA simulator: GEMM utilization with default and tuned plans.

The layers are the ones VTA offloads (the original VTA's ``resnet-18.C2..C12`` set: every
3x3 conv and 1x1 downsample between the stem and the classifier, batch 1) and C1, the 7x7
stem, which ``--target vta`` keeps on the host by default (``vta-skip-layers=0``: its 3 input
channels fill 3 of 16 GEMM lanes, see the useful-MACs line), with random int8 data, zero
bias and shift 8. Each layer is compiled with the planner's default plan and with
the best of ``--trials`` measured plans (``tune_layer``), and run pipelined (two virtual
threads) and with ``force_serial`` (VTA_DEBUG_FORCE_SERIAL: program order, no overlap). Every
output is checked bit for bit against ``reference_layer``.

    .venv/bin/python benchmarks/vta_resnet18.py [--trials 6] [--config 1x16_i8w8a32_15_15_18_17]

Columns: GEMM ops = micro-op iterations (each BATCH x BLOCK_IN x BLOCK_OUT MACs); util =
gemm_counter / cycles (pipelined); ceiling = the utilization if the compute engine never
waited (GEMM + reset + 4 ALU passes per output element at the config's II, pipeline depths
ignored): the epilogue, not memory, bounds small-channel layers; bytes = DRAM bytes loaded +
stored; speedup = serial / pipelined cycles.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accelc.targets.vta import resolve_config  # noqa: E402
from accelc.targets.vta.layer import LayerSpec, compile_layer, reference_layer, run_layer  # noqa: E402
from accelc.targets.vta.planner import Problem  # noqa: E402
from accelc.targets.vta.simulator import Simulator  # noqa: E402
from accelc.targets.vta.tune import tune_layer  # noqa: E402

# (name, H=W, IC, OC, kernel, stride, pad)
RESNET18 = [
    ("C1", 224, 3, 64, 7, 2, 3),  # the stem: on the host by default
    ("C2", 56, 64, 64, 3, 1, 1),
    ("C3", 56, 64, 128, 3, 2, 1),
    ("C4", 56, 64, 128, 1, 2, 0),
    ("C5", 28, 128, 128, 3, 1, 1),
    ("C6", 28, 128, 256, 3, 2, 1),
    ("C7", 28, 128, 256, 1, 2, 0),
    ("C8", 14, 256, 256, 3, 1, 1),
    ("C9", 14, 256, 512, 3, 2, 1),
    ("C10", 14, 256, 512, 1, 2, 0),
    ("C11", 7, 512, 512, 3, 1, 1),
]


def layer_specs() -> list[tuple[str, LayerSpec]]:
    return [(name, LayerSpec("conv2d", 1, ic, oc, hw, hw, (k, k), (s, s), (p,) * 4, relu=True))
            for name, hw, ic, oc, k, s, p in RESNET18]


def ceiling(spec: LayerSpec, cfg) -> float:
    p = Problem.from_spec(spec, cfg)
    rows = p.n_blocks * p.oc_blocks * p.oh * p.ow
    return p.gemm_ops * cfg.GEMM_II / (p.gemm_ops * cfg.GEMM_II + rows * (cfg.GEMM_II + 4 * cfg.ALU_II))


def measure(spec, weight, shift, cfg, plan, x, expect, sim):
    compiled = compile_layer(spec, weight, None, shift, cfg, plan)
    y, piped = run_layer(compiled, x, simulator=sim)
    y_serial, serial = run_layer(compiled, x, force_serial=True, simulator=sim)
    if not (np.array_equal(y, expect) and np.array_equal(y_serial, expect)):
        raise SystemExit(f"{spec.key}: output differs from reference_layer with plan {compiled.plan}")
    moved = piped.load_nbytes + piped.out_store_nbytes
    return compiled, piped, serial, moved


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=6, help="plans measured per layer when tuning")
    ap.add_argument("--config", default=None, help="VTA config name, JSON file or text (default: VTA's)")
    ap.add_argument("--shift", type=int, default=8)
    ap.add_argument("--layers", nargs="*", help="subset of layer names (C1 ... C11)")
    args = ap.parse_args(argv)
    cfg = resolve_config(args.config)
    sim = Simulator(cfg)
    rng = np.random.default_rng(0)
    print(f"VTA {cfg.name}, {cfg.FREQ_MHZ:g} MHz, {8 * cfg.bus_bytes}-bit bus, "
          f"DMA latency {cfg.DMA_LATENCY}, ALU II {cfg.ALU_II}; shift {args.shift}, relu\n")
    header = ("| layer | shape (HxW, IC->OC, k, s) | plan | GEMM ops | cycles serial | cycles pipelined "
              "| GEMM util | ceiling | bytes moved | speedup |")
    rows = {"default": [], "tuned": []}
    totals = {k: [0, 0, 0] for k in rows}  # gemm ops, serial, pipelined (3x3 only for util)
    useful = []  # (name, real MACs per pipelined cycle): padding lanes do not count
    t0 = time.time()
    for name, spec in layer_specs():
        if args.layers and name not in args.layers:
            continue
        w = rng.integers(-128, 128, spec.weight_shape).astype(np.int8)
        x = rng.integers(-128, 128, spec.input_shape).astype(np.int8)
        expect = reference_layer(spec, x, w, None, args.shift)
        tuned_plan, _ = tune_layer(spec, w, None, args.shift, cfg, args.trials, simulator=sim)
        shape = (f"{spec.height}x{spec.width}, {spec.in_channels}->{spec.out_channels}, "
                 f"{spec.kernel[0]}, {spec.stride[0]}")
        for variant, plan in (("default", None), ("tuned", tuned_plan)):
            compiled, piped, serial, moved = measure(spec, w, args.shift, cfg, plan, x, expect, sim)
            assert piped.gemm_counter == compiled.gemm_ops
            rows[variant].append(
                f"| {name} | {shape} | {compiled.plan} | {compiled.gemm_ops} | {serial.cycles} | {piped.cycles} "
                f"| {100 * piped.gemm_utilization:.1f}% | {100 * ceiling(spec, cfg):.1f}% | {moved} "
                f"| {serial.cycles / piped.cycles:.2f}x |")
            if variant == "default":
                useful.append(f"{name} {spec.macs / piped.cycles:.0f}")
            if spec.kernel == (3, 3):
                t = totals[variant]
                t[0] += compiled.gemm_ops
                t[1] += serial.cycles
                t[2] += piped.cycles
    for variant, lines in rows.items():
        print(f"### {variant} plans\n\n{header}\n|---|---|---|---|---|---|---|---|---|---|")
        print("\n".join(lines))
        g, s, p = totals[variant]
        if p:
            print(f"\n3x3 convs overall: GEMM utilization {100 * g / p:.1f}% pipelined, "
                  f"{100 * g / s:.1f}% serial, speedup {s / p:.2f}x\n")
    peak = cfg.batch * cfg.block_in * cfg.block_out
    print(f"useful MACs per cycle, default plans (peak {peak}): {', '.join(useful)}")
    print(f"({time.time() - t0:.0f} s, {args.trials} trials per layer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
