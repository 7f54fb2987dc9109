"""The GPU check, run on the GPU machine: accelc vs onnxruntime (correctness) and vs PyTorch
eager (speed), batch 1 and 16, from the carried artifacts (see build_artifacts.py).

    python3 benchmarks/gpu/check.py --carry out/gpu_carry --out DIR [--device cuda|cpu]
        [--budget-s 330] [--target-ms 1500]

For each artifact: the model's seeded weights are drawn again here (models.py), onnxruntime
(CPU) computes the reference logits, ``accelc-run --device cuda`` runs the artifact (inputs
copied to the GPU once; each timed run ends with a device synchronization; median of many
runs after warm-up), and PyTorch eager runs the same ONNX graph with the same weights
(torch_onnx.py) and the nearest torchvision model with random weights, both timed with CUDA
events (median of many runs after warm-up) under ``torch.inference_mode()``.

PyTorch's defaults let cuDNN convolutions use TF32 on Ampere and newer; accelc's kernels are
strict fp32. Both are timed: "torch" (defaults) and "torch fp32" (TF32 off).

Writes DIR/gpu_check.md (the table), DIR/gpu_check.json (every number) and prints the table
last. ``--device cpu`` runs LLVM artifacts through the same path without a GPU or PyTorch (a
dry run of the script's logic).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import models as bench_models

RTOL_NORMWISE = 1e-4  # fp32: max|a - e| <= ATOL + RTOL * max|e| (tests/zoo.py)


def log(*args):
    print(*args, flush=True)


def normwise_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max|a - e| / max|e|: the error relative to the logits' scale."""
    a = np.asarray(actual, np.float64)
    e = np.asarray(expected, np.float64)
    return float(np.max(np.abs(a - e)) / max(float(np.max(np.abs(e))), 1e-30))


def ort_reference(model, feeds: dict) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = min(16, os.cpu_count() or 1)
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


# ------------------------------------------------------------------------------ accelc-run
def run_accelc(runner: Path, artifact: Path, files: dict[str, Path], device: str, repeat: int,
               warmup: int, out_dir: Path, timeout: float) -> tuple[float, dict[str, Path], str]:
    """(median ms, output name -> .npy path, the runner's stdout)."""
    cmd = [str(runner), str(artifact), "--device", device, "--repeat", str(repeat),
           "--warmup", str(warmup), "--output-dir", str(out_dir)]
    for name, path in files.items():
        cmd += ["--input", f"{name}={path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"accelc-run exit {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    outputs = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"output (.*): \S+ \(.*\) -> (.*)$", line)
        if m:
            outputs[m.group(1)] = Path(m.group(2))
    m = re.search(r"latency_ms: median=([0-9.]+)", proc.stdout)
    if not m:
        raise RuntimeError(f"no latency line in accelc-run output: {proc.stdout[-500:]}")
    return float(m.group(1)), outputs, proc.stdout


# ---------------------------------------------------------------------------------- torch
def cuda_event_median(fn, repeat: int, warmup: int) -> float:
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _repeat_for(ms_per_run: float, target_ms: float) -> int:
    """Timed runs to spend about ``target_ms``: 10 at least (slow kernels), 300 at most."""
    return int(min(300, max(10, target_ms / max(ms_per_run, 1e-3))))


def _warmup_for(repeat: int) -> int:
    return min(10, max(2, repeat // 10))


def time_torch_graph(model, weights, data: dict, logits: str, target_ms: float) -> dict:
    """PyTorch eager on the same ONNX graph and weights: outputs and times (TF32 on/off)."""
    import torch
    from torch_onnx import OnnxTorch

    net = OnnxTorch(model, weights, "cuda")
    x = {k: torch.from_numpy(v).cuda() for k, v in data.items()}
    result = {}
    saved = tf32_settings()
    try:
        with torch.inference_mode():
            for label, strict in (("torch", False), ("torch_fp32", True)):
                if strict:
                    set_tf32_settings({path: strict_value for path, (_, strict_value) in saved.items()})
                out = net(x)[logits].float().cpu().numpy()
                probe = cuda_event_median(lambda: net(x), 5, 3)
                n = _repeat_for(probe, target_ms)
                result[label] = {"ms": cuda_event_median(lambda: net(x), n, _warmup_for(n)), "logits": out}
    finally:
        set_tf32_settings({path: value for path, (value, _) in saved.items()})
    return result


# PyTorch's TF32 switches: the fp32_precision API of PyTorch >= 2.9, else the allow_tf32 flags
# (mixing the two raises, so only one family is touched). path -> strict fp32 value.
_TF32_NEW = {"backends.cudnn.conv.fp32_precision": "ieee", "backends.cuda.matmul.fp32_precision": "ieee"}
_TF32_LEGACY = {"backends.cudnn.allow_tf32": False, "backends.cuda.matmul.allow_tf32": False}


def _resolve(path: str):
    import torch

    *parents, leaf = path.split(".")
    obj = torch
    for part in parents:
        obj = getattr(obj, part)
    return obj, leaf


def tf32_settings() -> dict:
    """path -> (current value, strict fp32 value) for the TF32 API this PyTorch has."""
    for family in (_TF32_NEW, _TF32_LEGACY):
        try:
            return {path: (getattr(*_resolve(path)), strict) for path, strict in family.items()}
        except AttributeError:
            continue
    return {}


def set_tf32_settings(values: dict) -> None:
    for path, value in values.items():
        setattr(*_resolve(path), value)


def time_torchvision(arch: str, batch: int, target_ms: float) -> float:
    import torch
    import torchvision

    kwargs = {"weights": None}
    if arch == "googlenet":
        kwargs.update(aux_logits=False, init_weights=False)
    torch.manual_seed(0)
    net = getattr(torchvision.models, arch)(**kwargs).cuda().eval()
    x = torch.randn(batch, 3, 224, 224, device="cuda")
    with torch.inference_mode():
        probe = cuda_event_median(lambda: net(x), 5, 3)
        n = _repeat_for(probe, target_ms)
        return cuda_event_median(lambda: net(x), n, _warmup_for(n))


# ----------------------------------------------------------------------------------- main
def gpu_info() -> dict:
    info = {"host": platform.node(), "python": sys.version.split()[0]}
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run([smi, "--query-gpu=name,compute_cap,driver_version,memory.total",
                            "--format=csv,noheader"], capture_output=True, text=True)
        info["nvidia_smi"] = q.stdout.strip()
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
        info["tf32_defaults"] = {k: str(v[0]) for k, v in tf32_settings().items()}
    except Exception as exc:  # noqa: BLE001  (report, don't fail)
        info["torch"] = f"unavailable: {exc}"
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except Exception as exc:  # noqa: BLE001
        info["onnxruntime"] = f"unavailable: {exc}"
    return info


def prepare_case(name: str, batch: int, carry: Path, cache: dict):
    """(ONNX model as compiled, weights fed as inputs, data input, logits name, labels or None)."""
    if name == bench_models.DIGITS:
        import onnx

        model = onnx.load(str(carry / "models" / "digits_cnn.onnx"))
        with np.load(carry / "models" / "digits_test.npz") as test:
            images, labels = test["input"][:batch], test["label"][:batch]
        return model, {}, {"input": images}, "logits", labels
    if name not in cache:
        cache[name] = bench_models.with_random_weights(bench_models.load_base(name, carry / "models"))
    mb = bench_models.set_batch(cache[name], batch)
    data = bench_models.data_input(mb, batch)
    model, weights = bench_models.weights_as_inputs(mb)
    return model, weights, data, bench_models.logits_name(model), None


def check(args) -> list[dict]:
    start_all = time.perf_counter()
    carry = Path(args.carry).resolve()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((carry / "manifest.json").read_text())
    runner = carry / "bin" / "accelc-run"
    work = Path(tempfile.mkdtemp(prefix="accelc-gpu-check-"))
    use_torch = args.device == "cuda" and not args.no_torch

    info = gpu_info()
    log("environment:", json.dumps(info))
    # Batch 1 of every model first: if the budget runs out, the b16 rows are what is lost.
    order = list(bench_models.MODELS)
    entries = sorted(manifest["artifacts"].values(),
                     key=lambda e: (e["batch"], order.index(e["model"]) if e["model"] in order else -1))
    if args.models:
        entries = [e for e in entries if e["model"] in args.models.split(",")]
    rows, prepared = [], {}
    for entry in entries:
        name, batch = entry["model"], entry["batch"]
        elapsed = time.perf_counter() - start_all
        if elapsed > args.budget_s:
            log(f"skip {name} b{batch}: {elapsed:.0f} s spent of the {args.budget_s:.0f} s budget")
            rows.append({"model": name, "batch": batch, "skipped": "time budget"})
            continue
        row = {"model": name, "batch": batch, "torchvision_arch": bench_models.MODELS.get(name)}
        rows.append(row)
        t0 = time.perf_counter()
        try:
            model, weights, data, logits, labels = prepare_case(name, batch, carry, prepared)
            ref = ort_reference(model, {**data, **weights})[logits]
            row["ref_max_abs"] = float(np.max(np.abs(ref)))
            row["prepare_s"] = round(time.perf_counter() - t0, 1)

            # accelc: inputs as .npy files (names can hold '/', so files are numbered)
            case = work / f"{name}_b{batch}"
            (case / "in").mkdir(parents=True, exist_ok=True)
            files = {}
            for k, (input_name, value) in enumerate({**data, **weights}.items()):
                files[input_name] = case / "in" / f"{k}.npy"
                np.save(files[input_name], value)
            artifact = carry / "artifacts" / bench_models.artifact_name(name, batch)
            probe_ms, outputs, _ = run_accelc(runner, artifact, files, args.device, 3, 1, case / "o1", 300)
            repeat = _repeat_for(probe_ms, args.target_ms)
            ms, outputs, _ = run_accelc(runner, artifact, files, args.device, repeat, _warmup_for(repeat), case / "o2", 300)
            got = np.load(outputs[logits])
            row.update(accelc_ms=ms, accelc_repeat=repeat, accelc_err=normwise_error(got, ref))
            if labels is not None:
                row["accelc_top1"] = float(100 * np.mean(np.argmax(got, 1) == labels))
                row["ort_top1"] = float(100 * np.mean(np.argmax(ref, 1) == labels))
            log(f"{name} b{batch}: accelc {ms:.3f} ms (x{repeat}), error vs onnxruntime {row['accelc_err']:.2e}")
        except Exception as exc:  # noqa: BLE001  (one broken row must not lose the others)
            row["accelc_error"] = f"{type(exc).__name__}: {exc}"[:2000]
            log(f"{name} b{batch}: accelc FAILED: {row['accelc_error']}")
        if use_torch and "ref_max_abs" in row:
            try:
                res = time_torch_graph(model, weights, data, logits, args.target_ms)
                for label, r in res.items():
                    row[f"{label}_ms"] = r["ms"]
                    row[f"{label}_err"] = normwise_error(r["logits"], ref)
                log(f"{name} b{batch}: torch eager (same graph) {row['torch_ms']:.3f} ms, fp32 {row['torch_fp32_ms']:.3f} ms")
            except Exception as exc:  # noqa: BLE001
                row["torch_error"] = f"{type(exc).__name__}: {exc}"[:2000]
                log(f"{name} b{batch}: torch FAILED: {row['torch_error']}")
            try:
                if row["torchvision_arch"] is None:
                    raise LookupError("no torchvision counterpart")
                row["torchvision_ms"] = time_torchvision(row["torchvision_arch"], batch, args.target_ms)
                log(f"{name} b{batch}: torchvision {bench_models.MODELS[name]} {row['torchvision_ms']:.3f} ms")
            except Exception as exc:  # noqa: BLE001
                row["torchvision_error"] = f"{type(exc).__name__}: {exc}"[:2000]
                log(f"{name} b{batch}: torchvision FAILED: {row['torchvision_error']}")
        row["seconds"] = round(time.perf_counter() - t0, 1)
        shutil.rmtree(work / f"{name}_b{batch}", ignore_errors=True)

    table = format_table(rows, info, manifest, args.device)
    (out / "gpu_check.md").write_text(table)
    (out / "gpu_check.json").write_text(json.dumps({"environment": info, "manifest": manifest, "rows": rows}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    log(f"total {time.perf_counter() - start_all:.0f} s")
    log(table)
    return rows


def _fmt(value, spec, suffix=""):
    return format(value, spec) + suffix if isinstance(value, (int, float)) else "n/a"


def format_table(rows, info, manifest, device) -> str:
    lines = [
        f"GPU check ({device}): {info.get('nvidia_smi', 'no GPU')}; torch {info.get('torch')}, "
        f"onnxruntime {info.get('onnxruntime')}; artifacts for {manifest.get('arch')}",
        "",
        "| model | batch | accelc ms | torch eager ms (same graph) | accelc / torch | torch fp32 ms (TF32 off) "
        "| accelc / torch fp32 | torchvision eager ms | accelc err vs ORT | torch err vs ORT | torch fp32 err |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['model']} | {r['batch']} | skipped ({r['skipped']}) |" + " |" * 8)
            continue
        a, t, t32 = r.get("accelc_ms"), r.get("torch_ms"), r.get("torch_fp32_ms")
        ratio = a / t if isinstance(a, float) and isinstance(t, float) else None
        ratio32 = a / t32 if isinstance(a, float) and isinstance(t32, float) else None
        tv = f"{_fmt(r.get('torchvision_ms'), '.3f')} ({r.get('torchvision_arch')})"
        lines.append(
            f"| {r['model']} | {r['batch']} | {_fmt(a, '.3f')} | {_fmt(t, '.3f')} | {_fmt(ratio, '.2f', 'x')} "
            f"| {_fmt(t32, '.3f')} | {_fmt(ratio32, '.2f', 'x')} | {tv} | {_fmt(r.get('accelc_err'), '.1e')} "
            f"| {_fmt(r.get('torch_err'), '.1e')} | {_fmt(r.get('torch_fp32_err'), '.1e')} |"
        )
    for r in rows:
        if "accelc_top1" in r:
            lines.append(f"\n{r['model']} (embedded weights, held-out test set, batch {r['batch']}): top-1 accelc "
                         f"{r['accelc_top1']:.2f}%, onnxruntime {r['ort_top1']:.2f}%")
    errors = [(r["model"], r["batch"], k, r[k]) for r in rows for k in r if k.endswith("_error")]
    if errors:
        lines += ["", "errors:"] + [f"- {m} b{b} {k}: {v[:300]}" for m, b, k, v in errors]
    lines += [
        "",
        "err: max|out - ref| / max|ref| over the pre-Softmax logits, ref = onnxruntime CPU fp32 on the "
        f"same weights and inputs (fp32 bar: {RTOL_NORMWISE:g}). accelc: accelc-run, median over "
        "timed runs, device sync in each. torch: CUDA events, median, torch.inference_mode().",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--carry", default=str(bench_models.REPO / "out" / "gpu_carry"))
    p.add_argument("--out", default=os.environ.get("OUT", str(bench_models.REPO / "out" / "gpu_check")))
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--models", help="comma-separated subset")
    p.add_argument("--budget-s", type=float, default=330.0, help="start no new model after this")
    p.add_argument("--target-ms", type=float, default=1500.0, help="timed time per engine and case")
    p.add_argument("--no-torch", action="store_true")
    args = p.parse_args(argv)
    check(args)


if __name__ == "__main__":
    main()
