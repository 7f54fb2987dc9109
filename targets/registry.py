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

    def export_compiler(self, target) -> Callable | None:
        """``fcompile`` for ``export_library``; None means the host C++ compiler."""
        return None

    def device_type(self) -> str:
        """Where artifacts run: ``cpu`` (this host), ``qemu-aarch64``, ``cuda``, ..."""
        return "cpu"

    # Pipeline hooks, in pipeline order (accelc/pipeline.py calls them).
    def fusion_passes(self, target) -> list:
        """Target-specific FuseOpsByPattern partitioning (patterns prefixed ``accelc.<name>.``)."""
        return []

    def layout_passes(self, target) -> list:
        """Relax-level layout rewrites before legalization (weights fold into packed form)."""
        return []

    def schedule_passes(self, target) -> list:
        """TIR scheduling of the legalized, fused PrimFuncs."""
        return []


_REGISTRY: dict[str, TargetBackend] = {}


def register(backend: TargetBackend) -> TargetBackend:
    if backend.name in _REGISTRY:
        raise ValueError(f"target {backend.name!r} registered twice")
    _REGISTRY[backend.name] = backend
    return backend


def get(name: str) -> TargetBackend:
    """The backend for CLI target ``name``; an unknown name is a user error listing the choices."""
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise TargetError(f"unknown target {name!r}; choose one of {sorted(_REGISTRY)}") from None


def names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def _load_builtin() -> None:
    # Imported lazily so that `import accelc` stays cheap and targets can import accelc.
    if _REGISTRY:
        return
    from . import llvm  # noqa: F401  (registers itself)
