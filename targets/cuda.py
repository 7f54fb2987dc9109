"""NVIDIA GPUs through TVM's CUDA code generator and the machine's ``nvcc``.

A CUDA target is an architecture preset (the data: ``CUDA_ARCHS``) plus the GPU half of the
pipeline: every fused PrimFunc gets a default schedule from TVM's dlight rules (matmul, GEMV,
reduction, general reduction, then a fallback that binds whatever is left to blocks and
threads), so that each kernel is launchable without tuning.

The architecture comes from the target options (``{"arch": "sm_90"}``; ``mcpu`` is accepted
as an alias, the name LLVM's NVPTX back end gives it, so ``accelc compile --target cuda
--mcpu sm_90`` works with the CLI's existing flags), else from the GPU of this machine
(``nvidia-smi --query-gpu=compute_cap``). With neither, compiling is a user error: a
kernel image for the wrong architecture fails only at load time on the user's GPU.

Kernels are compiled by ``nvcc`` into a fatbin holding SASS for the architecture and its PTX
(``code=sm_XY`` and ``code=compute_XY``), so an artifact also runs, JIT-compiled by the
driver, on newer GPUs. ``export_library`` embeds the fatbin in the ``.so``.

Library dispatch (``{"libs": "cublas"}`` / ``"cudnn"``) offloads matmuls / convolutions to
NVIDIA's libraries through TVM's BYOC, only where this TVM build has the codegen
(``relax.ext.cublas``); the PyPI wheels of TVM 0.27 have neither, so there it is a user error.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from accelc.errors import TargetError

from .registry import TargetBackend, register


@dataclass(frozen=True)
class CudaArch:
    """One GPU architecture: what TVM and nvcc need to know about it."""

    name: str  # nvcc's code name, e.g. sm_90
    gpus: str  # what it is, for --help and error messages
    max_shared_memory_per_block: int = 49152  # static shared memory without opt-in
    max_threads_per_block: int = 1024
    thread_warp_size: int = 32


CUDA_ARCHS: dict[str, CudaArch] = {
    a.name: a
    for a in (
        CudaArch("sm_80", "Ampere datacenter: A100, A30"),
        CudaArch("sm_86", "Ampere: RTX 30xx, A10, A40"),
        CudaArch("sm_89", "Ada: RTX 40xx, L4, L40"),
        CudaArch("sm_90", "Hopper: H100, H200"),
    )
}

_LIBS = {"cublas": "relax.ext.cublas", "cudnn": "relax.ext.cudnn"}
_OPTION_KEYS = {"arch", "mcpu", "libs"}


def detect_arch() -> str | None:
    """``sm_XY`` of this machine's first GPU, or None without a GPU (or nvidia-smi)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    if not lines or "." not in lines[0]:
        return None
    major, minor = lines[0].split(".", 1)
    return f"sm_{major}{minor}" if major.isdigit() and minor.isdigit() else None


def library_available(lib: str) -> bool:
    """Whether this TVM build can offload to ``lib`` (cublas, cudnn)."""
    import tvm

    return tvm.get_global_func(_LIBS[lib], allow_missing=True) is not None


def _arch_from(value: str) -> CudaArch:
    name = value.strip().lower()
    if name.startswith("compute_"):
        name = "sm_" + name[len("compute_"):]
    if not name.startswith("sm_"):
        name = "sm_" + name.replace(".", "")
    if name not in CUDA_ARCHS:
        raise TargetError(f"unknown CUDA architecture {value!r}; choose one of {sorted(CUDA_ARCHS)}")
    return CUDA_ARCHS[name]


def _nvcc_fatbin(code: str):
    """``tvm_callback_cuda_compile``: nvcc -> fatbin with SASS and PTX for the target's arch.

    TVM's default compiles with NVRTC (which needs the cuda-bindings package) into a bare
    cubin; nvcc is what the issue asks for and the fatbin's PTX keeps newer GPUs working.
    """
    import tvm
    from tvm.support import nvcc

    target = tvm.target.Target.current(allow_none=True)
    arch = str(getattr(target, "arch", "") or "")
    if not arch.startswith("sm_"):
        raise TargetError(f"CUDA kernel build without an sm_XY target (got {arch!r})")
    sm = arch[3:]
    gencode = [
        "-gencode", f"arch=compute_{sm},code=sm_{sm}",
        "-gencode", f"arch=compute_{sm},code=compute_{sm}",
    ]
    return nvcc.compile_cuda(code, target_format="fatbin", arch=gencode, compiler="nvcc")


_CALLBACK_INSTALLED = False


def _install_nvcc_callback() -> None:
    global _CALLBACK_INSTALLED
    if _CALLBACK_INSTALLED:
        return
    import tvm_ffi

    if shutil.which("nvcc") is None:
        raise TargetError("target 'cuda' needs nvcc on PATH (CUDA toolkit) to compile kernels")
    _ensure_cuda_module_factory()
    tvm_ffi.register_global_func("tvm_callback_cuda_compile", _nvcc_fatbin, override=True)
    _CALLBACK_INSTALLED = True


# The driver entry points libtvm_runtime_cuda.so links against (nm -D --undefined-only).
_DRIVER_SYMBOLS = (
    "cuDeviceGetName", "cuFuncSetAttribute", "cuLaunchKernelEx", "cuModuleGetFunction",
    "cuModuleLoadData", "cuModuleUnload", "cuTensorMapEncodeTiled",
)
_STUB_DRIVER_C = (
    "/* accelc: stand-in for the NVIDIA driver (libcuda.so.1) on a machine without one. */\n"
    + "".join(f"int {name}(void) {{ return 34; /* CUDA_ERROR_STUB_LIBRARY */ }}\n" for name in _DRIVER_SYMBOLS)
    + 'static const char kStub[] = "CUDA_ERROR_STUB_LIBRARY";\n'
    + "int cuGetErrorName(int e, const char** s) { (void)e; *s = kStub; return 0; }\n"
    + "int cuGetErrorString(int e, const char** s) { (void)e; *s = kStub; return 0; }\n"
)
_KEEP_LOADED: list = []  # ctypes handles that must outlive the process's use of TVM


def _ensure_cuda_module_factory() -> None:
    """Make TVM build real CUDA modules (compiled kernels), also on a machine with no GPU.

    TVM 0.27's CUDA codegen hands its source to ``ffi.Module.create.cuda``, which compiles it
    through ``tvm_callback_cuda_compile``; that factory lives in ``libtvm_runtime_cuda.so``.
    Without it (TVM could not load that library because the NVIDIA driver's libcuda.so.1 is
    missing) TVM keeps the raw CUDA source and the artifact would need a compiler on the GPU
    machine. The runtime only calls the driver when kernels are loaded or launched, which
    never happens while compiling, so on a driverless machine a stub libcuda.so.1 (every
    entry point returns CUDA_ERROR_STUB_LIBRARY) is enough to load it.
    """
    import ctypes
    import tempfile
    from pathlib import Path

    import tvm

    if tvm.get_global_func("ffi.Module.create.cuda", allow_missing=True) is not None:
        return
    try:
        ctypes.CDLL("libcuda.so.1", mode=ctypes.RTLD_GLOBAL)
    except OSError:
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise TargetError("target 'cuda' on a machine without a GPU driver needs a C compiler (cc)") from None
        with tempfile.TemporaryDirectory(prefix="accelc-cuda-stub-") as tmp:
            src, lib = Path(tmp) / "libcuda_stub.c", Path(tmp) / "libcuda.so.1"
            src.write_text(_STUB_DRIVER_C)
            subprocess.run(
                [cc, "-shared", "-fPIC", "-O1", "-Wl,-soname,libcuda.so.1", "-o", str(lib), str(src)],
                check=True, capture_output=True,
            )
            _KEEP_LOADED.append(ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL))
    runtime = Path(tvm.__file__).parent / "lib" / "libtvm_runtime_cuda.so"
    try:
        _KEEP_LOADED.append(ctypes.CDLL(str(runtime), mode=ctypes.RTLD_GLOBAL))
    except OSError as exc:
        # Most likely libcudart.so.13 is not on the loader path: try the toolkit of nvcc.
        cudart = sorted((Path(shutil.which("nvcc")).resolve().parent.parent / "lib64").glob("libcudart.so.*"))
        try:
            if not cudart:
                raise
            _KEEP_LOADED.append(ctypes.CDLL(str(cudart[-1]), mode=ctypes.RTLD_GLOBAL))
            _KEEP_LOADED.append(ctypes.CDLL(str(runtime), mode=ctypes.RTLD_GLOBAL))
        except OSError:
            raise TargetError(f"cannot load TVM's CUDA runtime {runtime}: {exc}") from None
    if tvm.get_global_func("ffi.Module.create.cuda", allow_missing=True) is None:
        raise TargetError(f"{runtime} loaded but registered no CUDA module factory")


@dataclass(frozen=True)
class CUDABackend(TargetBackend):
    def make(self, options: dict | None = None):
        import tvm

        options = {k.replace("_", "-"): v for k, v in (options or {}).items() if v not in (None, "")}
        bad = sorted(set(options) - _OPTION_KEYS)
        if bad:
            raise TargetError(
                f"option {bad[0]!r} does not apply to target {self.name!r}; "
                f"it takes {sorted(_OPTION_KEYS)} (arch/mcpu: one of {sorted(CUDA_ARCHS)})"
            )
        if "arch" in options and "mcpu" in options and options["arch"] != options["mcpu"]:
            raise TargetError(f"arch {options['arch']!r} and mcpu {options['mcpu']!r} disagree")
        given = options.get("arch") or options.get("mcpu")
        if given is None or str(given).lower() == "auto":
            detected = detect_arch()
            if detected is None:
                raise TargetError(
                    "no GPU found to detect the CUDA architecture; give one with --mcpu "
                    f"(one of {sorted(CUDA_ARCHS)}), e.g. --mcpu sm_90"
                )
            given = detected
        arch = _arch_from(str(given))
        libs = _parse_libs(options.get("libs"))
        _install_nvcc_callback()
        config = {
            "kind": "cuda",
            "arch": arch.name,
            "max_shared_memory_per_block": arch.max_shared_memory_per_block,
            "max_threads_per_block": arch.max_threads_per_block,
            "thread_warp_size": arch.thread_warp_size,
            # Generic x86-64 host code: the artifact's CPU side runs on the GPU machine,
            # not on the machine that compiled it.
            "host": {"kind": "llvm"},
        }
        if libs:
            config["libs"] = list(libs)
        try:
            return tvm.target.Target(config)
        except Exception as exc:
            raise TargetError(f"invalid options for target {self.name!r}: {exc}") from exc

    def device_type(self) -> str:
        return "cuda"

    def fusion_passes(self, target) -> list:
        libs = [str(x) for x in (target.attrs.get("libs") or [])]
        passes = []
        if "cublas" in libs:
            from tvm.relax.backend.cuda.cublas import partition_for_cublas

            passes.append(_module_pass(partition_for_cublas, "accelc.cuda.cublas"))
        if "cudnn" in libs:
            from tvm.relax.backend.cuda.cudnn import partition_for_cudnn

            passes.append(_module_pass(partition_for_cudnn, "accelc.cuda.cudnn"))
        if passes:
            import tvm

            passes.append(tvm.relax.transform.RunCodegen())
        return passes

    def prelower_passes(self, target) -> list:
        return [sanitize_param_names()]

    def schedule_passes(self, target) -> list:
        return [default_gpu_schedule()]

    def bind_passes(self, target) -> list:
        # At O0/O1 nothing scheduled the kernels; a kernel without thread bindings does not
        # build for a GPU. Already-scheduled PrimFuncs are skipped by ApplyDefaultSchedule.
        from tvm.s_tir import dlight as dl

        return [dl.ApplyDefaultSchedule(dl.gpu.Fallback())]


def sanitize_param_names():
    """The module pass ``SanitizeParamNames``, see ``_sanitize_param_names``."""
    import tvm

    return tvm.transform.module_pass(_sanitize_param_names, opt_level=0, name="accelc.cuda.SanitizeParamNames")


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _sanitize_param_names(mod, _ctx=None):
    """Rename Relax function parameters whose names are not C identifiers.

    Why: FuseTIR names each fused kernel's parameters after the Relax variables, and TVM's
    CUDA codegen prints those names into the kernel source verbatim, so an ONNX input named
    ``gpu_0/data_0`` (ResNet-50, ShuffleNet of the model zoo) yields the parameter
    ``gpu_0/data_0_ptr`` and nvcc rejects the source. Runs before FuseOps, at every opt
    level. Preserves everything else: parameter order and types, and the artifact's signature
    (which keeps the ONNX names; the VM passes arguments by position).
    """
    from tvm import relax

    for gvar, func in list(mod.functions.items()):
        if not isinstance(func, relax.Function):
            continue
        taken = {p.name for p in func.params}
        renames = {}
        for param in func.params:
            if _IDENTIFIER.fullmatch(param.name):
                continue
            base = re.sub(r"[^A-Za-z0-9_]", "_", param.name)
            base = base if _IDENTIFIER.fullmatch(base) else "v_" + base
            name, k = base, 1
            while name in taken:
                name, k = f"{base}_{k}", k + 1
            taken.add(name)
            renames[param] = relax.Var(name, param.ty)
        if renames:
            bound = func.bind_params(renames)
            new = relax.Function(
                [renames.get(p, p) for p in func.params], bound.body, func.ret_ty, func.is_pure, func.attrs, func.span
            )
            mod[gvar] = new
    return mod


def default_gpu_schedule():
    """dlight's GPU rules, most specific first; Fallback binds whatever is left."""
    from tvm.s_tir import dlight as dl

    return dl.ApplyDefaultSchedule(
        dl.gpu.Matmul(),
        dl.gpu.GEMV(),
        _reduction_rule(),
        dl.gpu.GeneralReduction(),
        dl.gpu.Fallback(),
    )


def _reduction_rule():
    """dlight's ``Reduction`` rule with the element-wise epilogue of its inner-spatial schedule
    fixed (TVM 0.27).

    The bug: for a reduction whose dominant read is split (a grouped convolution's input
    channel ``ff // 34 * 34 + rc``: ShuffleNet at batch 1), the stock rule keeps the reduced
    values in per-thread ``local`` memory, threadIdx.x running over one spatial order, and then
    walks the epilogue with threadIdx.x over another, so a thread reads registers that another
    thread wrote. Its output on the GPU is garbage (seen on an H200: ShuffleNet batch 1 off by
    1.7e7 relative, every other model right), while each block's semantics, checked
    sequentially on the CPU, are right (``cuda_inspect.cross_thread_local_reads`` finds it
    without a GPU). The fix takes the path the rule already uses for
    broadcast epilogues: reduced values in ``shared`` memory (TVM inserts the barrier) and
    the epilogue bound over threadIdx.x/y on its own.
    """
    from tvm.s_tir import dlight as dl
    from tvm.s_tir.dlight.analysis import is_broadcast_epilogue
    from tvm.s_tir.dlight.gpu.reduction import _suggest_inner_spatial_tx

    class Reduction(dl.gpu.Reduction):
        def _sch_inner_spatial(self, sch, target, block, s_factor, unroll_spatial_factor, epilogue_info,
                               loop_order, s_split_index):
            if epilogue_info is None or is_broadcast_epilogue(sch, block, epilogue_info.block_rv):
                return super()._sch_inner_spatial(sch, target, block, s_factor, unroll_spatial_factor,
                                                  epilogue_info, loop_order, s_split_index)
            super()._sch_inner_spatial(sch, target, block, s_factor, unroll_spatial_factor, None,
                                       loop_order, s_split_index)
            bx = sch.get_loops(block)[0]
            epilogue = epilogue_info.block_rv
            sch.reverse_compute_at(epilogue, bx, preserve_unit_loops=True)
            sch.set_scope(block, 0, "shared")
            _, *spatial = sch.get_loops(epilogue)
            _, tx, ty = sch.split(sch.fuse(*spatial), factors=[None, _suggest_inner_spatial_tx(s_factor), 16])
            sch.bind(tx, "threadIdx.x")
            sch.bind(ty, "threadIdx.y")
            return None

    return Reduction()


def _parse_libs(value) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    libs = tuple(dict.fromkeys(s.strip().lower() for s in items if s.strip()))
    for lib in libs:
        if lib not in _LIBS:
            raise TargetError(f"unknown CUDA library {lib!r}; choose from {sorted(_LIBS)}")
        if not library_available(lib):
            raise TargetError(
                f"this TVM build has no {lib} support ({_LIBS[lib]} is not registered; the "
                "PyPI apache-tvm wheels are built without it); compile without --libs"
            )
    return libs


def _module_pass(partition, name: str):
    import tvm

    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pass(mod, _ctx):
        return partition(mod)

    return _pass


CUDA = register(CUDABackend("cuda", f"NVIDIA GPU via CUDA/nvcc (arch: {', '.join(CUDA_ARCHS)} or detected)"))
