"""Sparse vs dense: a BERT-base encoder layer and its FFN matmul, magnitude-pruned.

For each model, block pattern (unstructured 1x1, 16x1) and sparsity, in one process:

    sparse accelc   compile --sparse 0 of the pruned model (every pruned weight -> BSR kernel)
    dense accelc    the same pruned model compiled dense (dense speed does not depend on zeros),
                    tuned with the shipped log where one matches (the BERT layer)
    onnxruntime     the same pruned model (MLAS dense)

timed in alternating blocks (accelc/driver.py ``_interleaved_blocks``), 2 threads each;
medians and the ratios dense/sparse and onnxruntime/sparse (> 1: sparse is faster). The
sparse output is checked against onnxruntime on the same pruned model before timing.

    .venv/bin/python benchmarks/sparse_bert.py                       # README table
    .venv/bin/python benchmarks/sparse_bert.py --models ffn --sparsities 0.3,0.5,0.6,0.7,0.8
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
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SEQ, HIDDEN, FFN = 128, 768, 3072
BLOCKS = {"1x1": (1, 1), "16x1": (16, 1)}


def ffn_matmul(seed: int = 0) -> onnx.ModelProto:
    """``y = x @ W1``: x (128, 768), W1 (768, 3072) ~ N(0, 1/768)."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((HIDDEN, FFN), dtype=np.float32) / np.float32(np.sqrt(HIDDEN)))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W1"], ["y"])], "ffn_matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [SEQ, HIDDEN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [SEQ, FFN])],
        [numpy_helper.from_array(w, "W1")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def bert_layer(seed: int = 0) -> onnx.ModelProto:
    from bench_models import bert_encoder

    return bert_encoder(seq=SEQ, hidden=HIDDEN, heads=12, ffn=FFN, seed=seed)


MODELS = {"ffn": ffn_matmul, "bert": bert_layer}


def _compile(proto, sparse):
    """Both builds take the shipped tuning log when the model is a known one (the BERT layer:
    pruning keeps its structure): dense accelc is the tuned dense, and the sparse build's
    other kernels (attention, softmax, LayerNorm) are tuned alike."""
    from accelc import api

    return api.compile(proto, "llvm", sparse=sparse, target_options={"num-cores": 2}, tuning_records="auto")


def _runner(compiled, inputs):
    import tvm

    vm = compiled._machine()
    args = [tvm.runtime.tensor(a, tvm.cpu()) for a in compiled.signature.check_inputs(inputs)]
    return lambda: vm["main"](*args)


def bench_model(name: str, sparsities, blocks, repeat: int, warmup: int, out=sys.stdout) -> list[dict]:
    from accelc.driver import _interleaved_blocks, _ort_session
    from accelc.prune import prune_proto

    dense_proto = MODELS[name]()
    rng = np.random.default_rng(1)
    inputs = {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype("float32")
              for i in dense_proto.graph.input}
    start = time.perf_counter()
    dense = _compile(dense_proto, None)
    print(f"{name}: dense accelc compiled in {time.perf_counter() - start:.1f} s", file=out, flush=True)
    dense_run = _runner(dense, inputs)
    ort_dense = _ort_session(dense_proto, 2)
    rows = []
    for block_name in blocks:
        for sparsity in sparsities:
            pruned, _ = prune_proto(dense_proto, sparsity, BLOCKS[block_name])
            start = time.perf_counter()
            sparse = _compile(pruned, 0.0)
            compile_s = time.perf_counter() - start
            ort_pruned = _ort_session(pruned, 2)
            got = sparse.run(inputs)
            want = ort_pruned.run(None, inputs)
            err = max(float(np.max(np.abs(g - w))) for g, w in zip(got.values(), want))
            engines = {
                "sparse": _runner(sparse, inputs),
                "dense": dense_run,
                "onnxruntime": lambda s=ort_dense: s.run(None, inputs),
            }
            times = _interleaved_blocks(engines, repeat, warmup)
            med = {k: statistics.median(v) for k, v in times.items()}
            row = {
                "model": name, "block": block_name, "sparsity": sparsity,
                "sparse_ms": med["sparse"], "dense_ms": med["dense"], "onnxruntime_ms": med["onnxruntime"],
                "dense_over_sparse": med["dense"] / med["sparse"],
                "ort_over_sparse": med["onnxruntime"] / med["sparse"],
                "max_abs_err_vs_ort": err, "sparse_compile_s": compile_s,
            }
            rows.append(row)
            print(f"  {name:<5s}{block_name:>6s}{sparsity:7.0%}  sparse {med['sparse']:8.3f} ms  "
                  f"dense {med['dense']:8.3f} ms  ort {med['onnxruntime']:8.3f} ms  "
                  f"dense/sparse {row['dense_over_sparse']:5.2f}x  ort/sparse {row['ort_over_sparse']:5.2f}x  "
                  f"err {err:.1e}", file=out, flush=True)
    return rows


def break_even(rows: list[dict], model: str, block: str) -> float | None:
    """Lowest measured sparsity from which sparse beats dense accelc at every higher one."""
    pts = sorted((r["sparsity"], r["dense_over_sparse"]) for r in rows if r["model"] == model and r["block"] == block)
    best = None
    for sparsity, ratio in reversed(pts):
        if ratio <= 1.0:
            break
        best = sparsity
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="ffn,bert")
    ap.add_argument("--sparsities", default="0.8,0.9,0.95")
    ap.add_argument("--blocks", default="1x1,16x1")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", help="write the rows as JSON")
    args = ap.parse_args(argv)
    sparsities = [float(s) for s in args.sparsities.split(",")]
    blocks = args.blocks.split(",")
    rows = []
    print(f"{args.repeat} runs per engine, alternating blocks, 2 threads; ratios > 1: sparse faster")
    for name in args.models.split(","):
        rows += bench_model(name, sparsities, blocks, args.repeat, args.warmup)
    for name in args.models.split(","):
        for block in blocks:
            be = break_even(rows, name, block)
            print(f"break-even {name} {block}: sparse wins from {be:.0%} up (of those measured)" if be is not None
                  else f"break-even {name} {block}: sparse never won at the measured sparsities")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
