"""The host x86-64 CPU through LLVM.

``mcpu`` and ``num-cores`` default to what this machine has: TVM's LLVM names the host CPU
(``llvm_get_system_cpu``) and the cores are those this process may run on. Give ``mcpu``
explicitly (e.g. ``x86-64-v3``) to build for another x86 machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from accelc.errors import TargetError

from .registry import TargetBackend, register

_OPTION_KEYS = {"mcpu", "num-cores", "mattr", "mtriple", "opt-level"}


def host_num_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def host_mcpu() -> str:
    from tvm.target import codegen

    return str(codegen.llvm_get_system_cpu())


@dataclass(frozen=True)
class LLVMCPU(TargetBackend):
    def make(self, options: dict | None = None):
        import tvm

        options = {k.replace("_", "-"): v for k, v in (options or {}).items() if v is not None}
        bad = sorted(set(options) - _OPTION_KEYS)
        if bad:
            raise TargetError(
                f"unknown option {bad[0]!r} for target {self.name!r}; known: {sorted(_OPTION_KEYS)}"
            )
        config = {"kind": "llvm", "mcpu": host_mcpu(), "num-cores": host_num_cores()}
        config.update(options)
        if isinstance(config.get("mattr"), str):
            config["mattr"] = [a for a in config["mattr"].split(",") if a]
        try:
            config["num-cores"] = int(config["num-cores"])
            return tvm.target.Target(config)
        except Exception as exc:
            raise TargetError(f"invalid options for target {self.name!r}: {exc}") from exc

    def layout_passes(self, target) -> list:
        from . import llvm_cpu

        return llvm_cpu.layout_passes(target)

    def schedule_passes(self, target) -> list:
        from . import llvm_cpu

        return llvm_cpu.schedule_passes(target)

    def artifact_passes(self, target) -> list:
        from .llvm_cpu.profile import EmbedKernelTable

        return [EmbedKernelTable()]

    def profile(self, vm, args, force_serial: bool = False) -> str:
        from .llvm_cpu.profile import profile

        if force_serial:
            raise TargetError("--force-serial: only the vta target has a serial mode to compare")
        return profile(vm, args)


LLVM = register(LLVMCPU("llvm", "host x86-64 CPU via LLVM (mcpu and num-cores detected)"))
