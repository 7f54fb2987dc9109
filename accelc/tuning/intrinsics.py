"""Register only the tensor intrinsics a target's search space needs; quiet MetaSchedule.

MetaSchedule's x86 space for AVX-512/VNNI CPUs tensorizes int8 dot products with
``dot_16x4_vnni``/``dot_16x4_avx512``, which ``import tvm.s_tir.tensor_intrin`` registers,
along with every CUDA intrinsic: ~40 s on a 2-core machine. Loading just the CPU file of
that package takes a few seconds, and only a target whose space asks for it pays them.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys

_MISSING = re.compile(r"TensorIntrin '([^']+)' is not registered")


def missing_intrinsic(exc: BaseException) -> str | None:
    m = _MISSING.search(str(exc))
    return m.group(1) if m else None


def register_cpu_intrinsics(target) -> bool:
    """Load the x86 (or AArch64) intrinsic file of ``tvm.s_tir.tensor_intrin`` alone.
    Returns False when there is nothing to load for this target."""
    import tvm.s_tir

    triple = str(target.attrs.get("mtriple", "")) if target.kind.name == "llvm" else ""
    if target.kind.name != "llvm":
        return False
    part = "arm_cpu" if triple.startswith(("aarch64", "arm")) else "x86"
    name = f"tvm.s_tir.tensor_intrin.{part}"
    if name in sys.modules:
        return True
    path = os.path.join(os.path.dirname(tvm.s_tir.__file__), "tensor_intrin", f"{part}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    # Registered under its real name so that a later `import tvm.s_tir.tensor_intrin`
    # reuses it instead of registering every intrinsic twice.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[name]
        raise
    return True


_NOISE = re.compile(rb"apply_custom_rule\.cc:\d+: Warning: Unknown schedule rule")


def filtered_stderr():
    """Drop MetaSchedule's per-block "Unknown schedule rule" warnings (a block annotated
    with an accelc rule name that has no MetaSchedule template falls back to the default
    space, which is what we want) and pass every other line of fd 2 through."""
    from accelc._stderr import filtered_fd2

    return filtered_fd2(_NOISE, with_continuations=True)
