"""Default vs MetaSchedule-tuned BSR kernel: the BERT-base FFN matmul, magnitude-pruned.

    1. prune ``sparse_bert.ffn_matmul`` (x 128x768 @ W 768x3072) to SPARSITY with BLOCK blocks
    2. ``accelc tune MODEL --sparse 0 -o LOG --time-budget B`` (skipped with --skip-tune: reuse LOG)
    3. compile it twice with --sparse 0: default schedules, and with ``--tuning-records LOG``
       (plus dense accelc and onnxruntime on the same pruned model), check outputs against
       onnxruntime, and time all engines interleaved in one process (2 threads each).

    .venv/bin/python benchmarks/sparse_tuning.py --time-budget 4m --out out/sparse_tuning
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "2")  # before TVM's thread pool starts

import numpy as np  # noqa: E402
import onnx  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--block", default="16x1")
    ap.add_argument("--time-budget", default="4m")
    ap.add_argument("--trials", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", default="out/sparse_tuning")
    ap.add_argument("--skip-tune", action="store_true", help="reuse the log in --out")
    ap.add_argument("--log", help="tuning log (default: OUT/ffn_BLOCK_SPARSITY.jsonl)")
    args = ap.parse_args(argv)

    from sparse_bert import ffn_matmul

    from accelc import api
    from accelc.driver import _interleaved_blocks, _ort_session
    from accelc.passes.sparse_rewrite import parse_block
    from accelc.prune import prune_proto

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = out / f"ffn_{args.block}_{int(args.sparsity * 100)}.onnx"
    log = Path(args.log) if args.log else model.with_suffix(".jsonl")
    pruned, _ = prune_proto(ffn_matmul(), args.sparsity, parse_block(args.block))
    onnx.save(pruned, model)
    if not args.skip_tune:
        cmd = [sys.executable, "-m", "accelc", "tune", str(model), "--sparse", "0", "-o", str(log),
               "--time-budget", args.time_budget, "--trials", str(args.trials), "--num-cores", "2",
               "--progress", "lines", "--no-transfer"]
        print("$", " ".join(cmd), flush=True)
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        print(f"tuning took {time.perf_counter() - start:.0f} s", flush=True)

    rng = np.random.default_rng(1)
    inputs = {"x": rng.standard_normal((128, 768)).astype("float32")}
    opts = {"num-cores": 2}
    default = api.compile(pruned, "llvm", sparse=0.0, target_options=opts)
    tuned = api.compile(pruned, "llvm", sparse=0.0, target_options=opts, tuning_records=str(log))
    dense = api.compile(pruned, "llvm", target_options=opts)
    print("\n".join(tuned.tuning.summary(str(log))), flush=True)
    ort = _ort_session(pruned, 2)
    (want,) = ort.run(None, inputs)
    errs = {name: float(np.max(np.abs(next(iter(c.run(inputs).values())) - want)))
            for name, c in (("default", default), ("tuned", tuned))}

    def runner(compiled):
        import tvm

        vm = compiled._machine()
        arrays = [tvm.runtime.tensor(a, tvm.cpu()) for a in compiled.signature.check_inputs(inputs)]
        return lambda: vm["main"](*arrays)

    engines = {"sparse default": runner(default), "sparse tuned": runner(tuned), "dense accelc": runner(dense),
               "onnxruntime": lambda: ort.run(None, inputs)}
    times = _interleaved_blocks(engines, args.repeat, args.warmup)
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, ms in med.items():
        print(f"  {name:<16s} {ms:8.3f} ms", flush=True)
    print(f"  tuned speedup over default: {med['sparse default'] / med['sparse tuned']:.2f}x; "
          f"max |err| vs onnxruntime: {errs}", flush=True)
    summary = {"sparsity": args.sparsity, "block": args.block, "median_ms": med, "max_abs_err": errs,
               "tuning": tuned.tuning.summary(str(log)), "log": str(log)}
    (out / "result.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
