"""64-bit ARM Linux boards (aarch64) through LLVM: a CPU preset, not a new compilation path.

Choosing the CPU: ``--target arm`` is the generic preset ``aarch64`` (ARMv8-A, NEON); a
preset is picked with ``--target arm:NAME`` (Python: ``accelc.compile(m, "arm:cortex-a76")``).
The presets are data, in ``arm_presets.json``:

    aarch64      generic ARMv8-A + NEON (the default; runs on any 64-bit ARM board)
    cortex-a72   Raspberry Pi 4                    cortex-a76   Raspberry Pi 5 (+dotprod)
    neoverse-n1  Graviton2, Ampere Altra (+dotprod) apple-m1    M1-class under Linux
    graviton3    Neoverse-V1 with SVE off (``--mattr=+sve`` turns it on)

Any LLVM CPU or feature can be given on top: ``--mcpu`` replaces the preset's CPU,
``--mattr`` features are applied after the preset's (so ``-dotprod`` removes one),
``--num-cores`` sets the threads the kernels are cut for (presets assume 4). ``mtriple``
(Python ``target_options``) must stay an aarch64 Linux triple: the runtime and the cross
compiler are aarch64-linux-gnu ones.

Everything else is the LLVM CPU backend's (its layout and schedule passes read vector width
and core count from the target); export links with ``aarch64-linux-gnu-g++`` and artifacts
run under qemu-aarch64 through the cross-built C++ runner (``accelc/cross.py``). On an
aarch64 host they run in-process like host artifacts.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from accelc.errors import TargetError

from .llvm import LLVMCPU
from .registry import register

PRESETS_FILE = Path(__file__).with_name("arm_presets.json")
DEFAULT_PRESET = "aarch64"
DEFAULT_TRIPLE = "aarch64-linux-gnu"
_OPTION_KEYS = {"mcpu", "num-cores", "mattr", "mtriple", "opt-level"}


@dataclass(frozen=True)
class ArmPreset:
    name: str
    description: str
    mcpu: str
    mattr: tuple[str, ...]
    num_cores: int
    mtriple: str = DEFAULT_TRIPLE


def load_presets(path: Path = PRESETS_FILE) -> dict[str, ArmPreset]:
    raw = json.loads(path.read_text())
    return {
        name: ArmPreset(
            name=name,
            description=p["description"],
            mcpu=p["mcpu"],
            mattr=tuple(p.get("mattr", ())),
            num_cores=int(p["num-cores"]),
            mtriple=p.get("mtriple", DEFAULT_TRIPLE),
        )
        for name, p in raw.items()
        if not name.startswith("_")
    }


PRESETS = load_presets()


def _split_mattr(value) -> list[str]:
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [a.strip() for a in items if a.strip()]


@dataclass(frozen=True)
class ArmCPU(LLVMCPU):
    preset: ArmPreset = PRESETS[DEFAULT_PRESET]

    def variant(self, name: str) -> "ArmCPU":
        if name not in PRESETS:
            raise TargetError(f"unknown arm preset {name!r}; choose one of {sorted(PRESETS)}")
        return dataclasses.replace(self, preset=PRESETS[name])

    def make(self, options: dict | None = None):
        import tvm
        from tvm.target import codegen

        from accelc import cross

        cross.cross_cxx()  # no cross compiler: say so now, not after a long compile
        options = {k.replace("_", "-"): v for k, v in (options or {}).items() if v is not None}
        bad = sorted(set(options) - _OPTION_KEYS)
        if bad:
            raise TargetError(f"unknown option {bad[0]!r} for target {self.name!r}; known: {sorted(_OPTION_KEYS)}")
        p = self.preset
        config = {
            "kind": "llvm",
            "mtriple": options.get("mtriple", p.mtriple),
            "mcpu": options.get("mcpu", p.mcpu),
            # Preset features first, the user's after: LLVM lets the last +x/-x win.
            "mattr": list(p.mattr) + _split_mattr(options.get("mattr")),
            "num-cores": options.get("num-cores", p.num_cores),
        }
        if "opt-level" in options:
            config["opt-level"] = options["opt-level"]
        if not str(config["mtriple"]).startswith("aarch64"):
            raise TargetError(f"target arm is 64-bit ARM; mtriple {config['mtriple']!r} is not an aarch64 triple")
        if not codegen.llvm_is_valid_cpu(str(config["mcpu"]), str(config["mtriple"])):
            raise TargetError(f"LLVM knows no aarch64 CPU {config['mcpu']!r} (e.g. cortex-a53, neoverse-v1)")
        try:
            config["num-cores"] = int(config["num-cores"])
            return tvm.target.Target(config)
        except Exception as exc:
            raise TargetError(f"invalid options for target {self.name!r}: {exc}") from exc

    def export_compiler(self, target):
        from accelc import cross

        return cross.export_compiler()

    def device_type(self) -> str:
        from accelc import cross

        return "cpu" if cross.host_is_aarch64() else "qemu-aarch64"

    def artifact_runner(self, path, signature):
        from accelc import cross

        return cross.QemuRunner(Path(path))

    def check_tuning(self, rpc_tracker: str | None) -> None:
        if rpc_tracker is None and self.device_type() != "cpu":
            raise TargetError(
                "tuning for arm must measure on a real board (--rpc-tracker HOST:PORT with a TVM RPC "
                "server on the board); timings under qemu-aarch64 emulation are meaningless"
            )


ARM = register(ArmCPU("arm", "64-bit ARM Linux via LLVM (presets: --target arm:NAME); runs here under qemu-aarch64"))
