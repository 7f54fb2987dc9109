#!/usr/bin/env bash
# The GPU check of issue 6: accelc's CUDA artifacts against onnxruntime (correctness) and
# PyTorch eager on the same GPU (speed), batch 1 and 16. Installs nothing.
#
#   benchmarks/gpu_check.sh [CARRY_DIR] [check.py options...]
#
# 1. Compile (only on a machine with a GPU and the project's .venv, where accelc and TVM import;
#    ACCELC_GPU_CHECK_BUILD=0 skips it): benchmarks/gpu/build_artifacts.py writes CARRY_DIR
#    (default out/gpu_carry) with
#    the artifacts for this GPU's architecture (nvidia-smi), TVM's runtime libraries and the
#    C++ runner. On a GPU machine without TVM (the lent one), CARRY_DIR must have been built
#    elsewhere and carried over.
# 2. Check: benchmarks/gpu/check.py (needs python3 with numpy, onnx, onnxruntime, torch,
#    torchvision; PYTHON overrides) runs each artifact with accelc-run --device cuda and
#    writes the table to $OUT (default out/gpu_check)/gpu_check.md.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
carry=${1:-$repo/out/gpu_carry}
[ $# -gt 0 ] && shift
out=${OUT:-$repo/out/gpu_check}
python=${PYTHON:-python3}

arch=""
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader || true
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' .')
  [ -n "$cap" ] && arch="sm_$cap"
fi

if [ -n "$arch" ] && [ "${ACCELC_GPU_CHECK_BUILD:-1}" != 0 ] && [ -x "$repo/.venv/bin/python" ] &&
   "$repo/.venv/bin/python" -c "import accelc, tvm" 2>/dev/null; then
  echo "== compiling the benchmark models for $arch into $carry"
  "$repo/.venv/bin/python" "$repo/benchmarks/gpu/build_artifacts.py" --out "$carry" --arch "$arch"
else
  echo "== using the artifacts in $carry (no GPU, no accelc/TVM here, or ACCELC_GPU_CHECK_BUILD=0)"
fi
[ -f "$carry/manifest.json" ] || { echo "error: $carry/manifest.json missing (run build_artifacts.py)" >&2; exit 2; }

built_for=$("$python" -c "import json,sys; print(json.load(open(sys.argv[1]))['arch'])" "$carry/manifest.json")
if [ -n "$arch" ] && [ "$built_for" != "$arch" ]; then
  echo "note: artifacts were built for $built_for, this GPU is $arch (the fatbin's PTX is JIT-compiled if newer)"
fi

# accelc-run finds libtvm_runtime*.so, libtvm_ffi.so and libcudart there; the driver's
# libcuda.so.1 comes from the system.
export LD_LIBRARY_PATH="$carry/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
mkdir -p "$out"
PYTHONUNBUFFERED=1 "$python" "$repo/benchmarks/gpu/check.py" --carry "$carry" --out "$out" "$@" 2>&1 |
  tee "$out/gpu_check.log"
exit "${PIPESTATUS[0]}"
