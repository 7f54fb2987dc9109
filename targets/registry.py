"""The target registry: every target accelc can compile for, keyed by its CLI name.

A target is data plus pipeline hooks (see ``TargetBackend``). Adding one (arm, cuda, vta) is
one module that defines a backend and one ``register`` call below; the driver, pipeline, CLI
and artifact code never branch on target names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from accelc.errors import TargetError


@dataclass(frozen=True)
class TargetBackend:
    """How to compile for, export for, and run on one kind of device.

    Subclasses override the hooks; the defaults describe a plain host CPU that needs nothing
    beyond TVM's stock lowering.
    """

    name: str
    description: str

    def make(self, options: dict | None = None):
        """The ``tvm.target.Target`` for these user options (e.g. mcpu, num-cores)."""
        raise NotImplementedError

    def with_options(self, options: dict | None) -> "TargetBackend":
        """The backend configured by the ``target_options`` keys it reads itself rather than
        passing to the TVM target (vta: ``vta-skip-layers``); ``make`` ignores those keys."""
        return self

    def export_compiler(self, target) -> Callable | None:
        """``fcompile`` for ``export_library``; None means the host C++ compiler."""
        return None

    def device_type(self) -> str:
        """Where artifacts run: ``cpu`` (this host), ``qemu-aarch64``, ``cuda``, ..."""
        return "cpu"

    # Variants, out-of-process running and tuning guards (arm: targets/arm.py).
    def variant(self, name: str) -> "TargetBackend":
        """The backend for ``--target NAME:VARIANT`` (``arm:cortex-a72``); none by default."""
        raise TargetError(f"target {self.name!r} has no variants (got {self.name}:{name})")

    def artifact_runner(self, path, signature):
        """For artifacts this process cannot load (``device_type() != "cpu"``): an object with
        ``note``, ``run(names, arrays, output_names)`` and ``benchmark(names, arrays, repeat,
        warmup)`` that runs ``path`` out of process; None means it cannot run on this host."""
        return None

    def check_tuning(self, rpc_tracker: str | None) -> None:
        """Raise TargetError if tuning could not measure this target (e.g. only emulated)."""

    # Compile and run hooks for targets that offload layers (vta: targets/vta/backend.py).
    def requantize_mode(self, quantize: str | None, requantize: str | None) -> str:
        """The ``--requantize`` mode int8 is realized with (``requantize`` None: the target's
        choice); raise TargetError when the target cannot compile this request (vta: needs
        ``--quantize int8`` and ``shift``)."""
        return requantize or "fixedpoint"

    def with_tuning_records(self, path, target) -> tuple["TargetBackend", object]:
        """``(backend, records)`` for ``--tuning-records PATH``: records (tuned TIR kernels,
        ``accelc.tuning.load_records``) go to phase 4; a target that tunes something else
        returns itself configured with them and None."""
        from accelc.tuning import load_records

        return self, load_records(path, target)

    def load_runtime(self) -> None:
        """Make what this target's artifacts call at run time available in this process
        (e.g. register packed functions); called before a VM loads one."""

    def compile_summary(self, vm) -> list[str]:
        """Lines ``accelc compile`` prints about a compiled model (``vm``: its Relax VM)."""
        return []

    def tune_command(self, args):
        """``accelc tune`` for a target that tunes something other than TIR kernels (vta: tile
        plans); None means accelc's MetaSchedule tuner runs."""
        return None

    def profile(self, vm, args, force_serial: bool = False) -> str:
        """``accelc run --profile``: run ``vm["main"](*args)`` once and report per layer."""
        raise TargetError(f"--profile: target {self.name!r} has no per-layer profile (use --target vta)")

    # Pipeline hooks, in pipeline order (accelc/pipeline.py calls them).
    def fusion_passes(self, target) -> list:
        """Target-specific FuseOpsByPattern partitioning (patterns prefixed ``accelc.<name>.``)."""
        return []

    def prelower_passes(self, target) -> list:
        """Relax passes the target needs before legalization, at every opt level."""
        return []

    def layout_passes(self, target) -> list:
        """Relax-level layout rewrites before legalization (weights fold into packed form)."""
        return []

    def schedule_passes(self, target) -> list:
        """TIR scheduling of the legalized, fused PrimFuncs."""
        return []

    def bind_passes(self, target) -> list:
        """Scheduling every kernel needs to build at all, at every opt level (GPU targets:
        bind loops to blocks/threads); runs after ``schedule_passes``."""
        return []

    def artifact_passes(self, target) -> list:
        """Whole-module additions to the artifact, after every kernel is scheduled, at every
        opt level (llvm: the kernel table ``accelc run --profile`` reads); never applied to
        the single-kernel modules ``accelc tune`` measures."""
        return []


_REGISTRY: dict[str, TargetBackend] = {}


def register(backend: TargetBackend) -> TargetBackend:
    if backend.name in _REGISTRY:
        raise ValueError(f"target {backend.name!r} registered twice")
    _REGISTRY[backend.name] = backend
    return backend


def get(name: str) -> TargetBackend:
    """The backend for CLI target ``name`` (``NAME`` or ``NAME:VARIANT``); an unknown name is a
    user error listing the choices."""
    _load_builtin()
    base, sep, variant = name.partition(":")
    try:
        backend = _REGISTRY[base]
    except KeyError:
        raise TargetError(f"unknown target {name!r}; choose one of {sorted(_REGISTRY)}") from None
    return backend.variant(variant) if sep else backend


def names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def _load_builtin() -> None:
    # Imported lazily so that `import accelc` stays cheap and targets can import accelc.
    # Python imports each module once, so repeating this is cheap; checking whether the
    # registry is empty would not do (importing one target module directly fills it).
    from . import llvm  # noqa: F401  (registers itself)
    from . import arm  # noqa: F401  (registers itself)
    from . import cuda  # noqa: F401  (registers itself)
    from .vta import backend  # noqa: F401  (registers itself)
