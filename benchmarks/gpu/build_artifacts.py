"""Prepare everything the GPU check carries to the GPU machine (which has no TVM).

    .venv/bin/python benchmarks/gpu/build_artifacts.py [--out out/gpu_carry] [--arch sm_90]
        [--models squeezenet,resnet50] [--batches 1,16] [--runner PATH] [--target llvm]

(``--target llvm`` builds CPU artifacts for a dry run of check.py with ``--device cpu``.)

Writes, under ``--out`` (an ignored folder; the device call names it in ``carry``):

    artifacts/<model>_b<batch>.so   accelc CUDA artifacts, weights as inputs (models.py)
    lib/                            libtvm_runtime.so, libtvm_runtime_cuda.so, libtvm_ffi.so,
                                    libcudart.so.13 (what accelc-run loads)
    bin/accelc-run                  the C++ runner built here (RUNPATH; the check sets
                                    LD_LIBRARY_PATH=lib)
    models/light_<model>.onnx       the shipped light models the weights are drawn for
    manifest.json                   what was built, with compile times

An artifact already there for the same model, batch and arch is kept (``--force`` rebuilds).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import models as bench_models

REPO = bench_models.REPO


def runtime_libs() -> list[Path]:
    import tvm
    import tvm_ffi

    tvm_lib = Path(tvm.__file__).parent / "lib"
    ffi_lib = Path(tvm_ffi.__file__).parent / "lib"
    libs = [tvm_lib / "libtvm_runtime.so", tvm_lib / "libtvm_runtime_cuda.so", ffi_lib / "libtvm_ffi.so"]
    cudart = _find_cudart()
    if cudart is not None:
        libs.append(cudart)
    return libs


def _find_cudart() -> Path | None:
    """libcudart.so.<major> that libtvm_runtime_cuda.so links (from the CUDA toolkit here)."""
    import os
    import subprocess

    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        roots.append(str(Path(nvcc).resolve().parent.parent))
    for root in filter(None, roots):
        for lib in ("lib64", "lib"):
            hits = sorted((Path(root) / lib).glob("libcudart.so.*[0-9]"))
            if hits:
                return hits[0].resolve()
    listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        if "libcudart.so." in line and "=>" in line:
            return Path(line.split("=>")[1].strip()).resolve()
    return None


def build_digits(args, out: Path, arch: str, manifest: dict) -> None:
    """The embedded digits CNN, weights embedded, batch = its whole test set."""
    import accelc
    from accelc.models import DATA_DIR, default_model_path, load_digits_test

    batch = len(load_digits_test()[1])
    artifact = out / "artifacts" / bench_models.artifact_name(bench_models.DIGITS, batch)
    for src in (default_model_path(), DATA_DIR / "digits_test.npz"):
        shutil.copyfile(src, out / "models" / src.name)
    if artifact.exists() and manifest["artifacts"].get(artifact.name, {}).get("arch") == arch and not args.force:
        return
    start = time.perf_counter()
    options = {"arch": args.arch} if args.target == "cuda" else None
    compiled = accelc.compile(str(default_model_path()), args.target, input_shapes={"input": [batch, 1, 8, 8]},
                              target_options=options)
    compiled.export(artifact)
    manifest["artifacts"][artifact.name] = {
        "model": bench_models.DIGITS, "batch": batch, "arch": arch,
        "compile_seconds": round(time.perf_counter() - start, 1), "bytes": artifact.stat().st_size,
    }
    print(f"built   {artifact}", flush=True)


def build(args) -> dict:
    import accelc

    out = Path(args.out)
    for sub in ("artifacts", "lib", "bin", "models"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"artifacts": {}}
    arch = args.arch if args.target == "cuda" else args.target
    manifest.update(arch=arch, weight_seed=bench_models.WEIGHT_SEED, input_seed=bench_models.INPUT_SEED)

    for name in args.models:
        base = bench_models.load_base(name)
        onnx_path = out / "models" / f"light_{name}.onnx"
        if not onnx_path.exists():
            shutil.copyfile(bench_models.zoo.LIGHT_DIR / f"light_{name}.onnx", onnx_path)
        prepared = bench_models.with_random_weights(base)
        for batch in args.batches:
            artifact = out / "artifacts" / bench_models.artifact_name(name, batch)
            key = artifact.name
            entry = manifest["artifacts"].get(key, {})
            if artifact.exists() and entry.get("arch") == arch and not args.force:
                print(f"keep    {artifact} ({entry.get('compile_seconds', 0):.0f} s when built)", flush=True)
                continue
            model, weights = bench_models.weights_as_inputs(bench_models.set_batch(prepared, batch))
            start = time.perf_counter()
            options = {"arch": args.arch} if args.target == "cuda" else None
            compiled = accelc.compile(model, args.target, target_options=options)
            compiled.export(artifact)
            seconds = time.perf_counter() - start
            manifest["artifacts"][key] = {
                "model": name,
                "batch": batch,
                "arch": arch,
                "compile_seconds": round(seconds, 1),
                "phase_seconds": {k: round(v, 1) for k, v in compiled.report.phase_seconds.items()},
                "inputs": len(compiled.signature.inputs),
                "weights": len(weights),
                "bytes": artifact.stat().st_size,
            }
            manifest_path.write_text(json.dumps(manifest, indent=1))
            print(f"built   {artifact} in {seconds:.0f} s ({artifact.stat().st_size / 1e6:.1f} MB)", flush=True)

    if args.digits:
        build_digits(args, out, arch, manifest)
        manifest_path.write_text(json.dumps(manifest, indent=1))

    for lib in runtime_libs():
        name = lib.name if not lib.name.startswith("libcudart.so.") else "libcudart.so." + lib.name.split(".")[2]
        shutil.copyfile(lib, out / "lib" / name)
    runner = Path(args.runner) if args.runner else REPO / "build" / "cuda-runner" / "runner" / "accelc-run"
    if not runner.exists():
        sys.exit(f"runner {runner} not built: cmake -S . -B build/cuda-runner && cmake --build build/cuda-runner")
    shutil.copy2(runner, out / "bin" / "accelc-run")
    manifest_path.write_text(json.dumps(manifest, indent=1))
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"carry set {out}: {total / 2**20:.1f} MiB (limit 64 MiB with the working tree)")
    return manifest


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "out" / "gpu_carry"))
    p.add_argument("--arch", default="sm_90")
    p.add_argument("--target", default="cuda", help="cuda, or llvm for a CPU dry run")
    p.add_argument("--models", default=",".join(bench_models.MODELS))
    p.add_argument("--batches", default=",".join(map(str, bench_models.BATCHES)))
    p.add_argument("--runner", help="accelc-run to carry (default: build/cuda-runner/runner/accelc-run)")
    p.add_argument("--force", action="store_true", help="rebuild artifacts that exist")
    p.add_argument("--no-digits", dest="digits", action="store_false", help="skip the embedded digits model")
    args = p.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.batches = [int(b) for b in args.batches.split(",") if b]
    build(args)


if __name__ == "__main__":
    main()
