"""The ``vta`` target: int8 conv2d/dense layers on the VTA-like accelerator, the rest on the host.

``accelc compile MODEL --target vta --quantize int8 --calib DATA`` quantizes with power-of-two
scales (``--requantize shift``, the target's choice; ``fixedpoint`` is refused: VTA's ALU can
shift, not multiply), partitions the realized int8 layers with the ``accelc.vta.*`` patterns
(``patterns.py``), compiles each to a VTA instruction stream (``layer.compile_layer``, tile
plans from ``--tuning-records`` when given) and embeds it in the graph as a call of
``accelc.vta.run_layer`` (``offload.py``). Everything else is host code, built exactly as for
``--target llvm``. ``--target vta:CONFIG`` picks another hardware config (a preset name such
as ``2x8_i8w8a32_15_15_16_17``, or a JSON file).

The target option ``vta-skip-layers`` (CLI ``--vta-skip-layers 0,3`` or ``none``) keeps
conv2d layers, counted in graph order from 0, on the host. The default keeps the first conv
(``skip_conv_layers=[0]`` in TVM's VTA flow): an image stem's 3 input channels fill 3 of the
16 GEMM lanes, so on VTA ResNet-18's stem costs 2.92 M cycles (29 ms at 100 MHz, as much as
five 3x3 layers) against ~2 ms on one x86 core (/work/notes/vta_final.md).

The artifact runs in accelc's own process (``accelc run``, ``accelc.load``), where
``accelc.vta.run_layer`` executes the layer on the C++ simulator; ``accelc run --profile``
prints per-layer cycles, GEMM utilization and traffic, ``--force-serial`` runs the layers
without latency hiding.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from accelc.errors import AccelcError, TargetError

from ..llvm import LLVM
from ..registry import TargetBackend, register
from .config import DEFAULT_CONFIG, VTAConfig

SKIP_OPTION = "vta-skip-layers"
DEFAULT_SKIP_LAYERS = (0,)  # the stem: see the module docstring


def parse_skip_layers(value) -> tuple[int, ...]:
    """``vta-skip-layers``: ``"0,3"``, ``"none"``/``""``, or a sequence of ints -> sorted indices."""
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    if [str(i).lower() for i in items] == ["none"]:
        return ()
    try:
        indices = sorted({int(i) for i in items})
    except (TypeError, ValueError):
        indices = [-1]
    if any(i < 0 for i in indices):
        raise TargetError(f"--{SKIP_OPTION} {value!r}: expected conv2d layer indices (0,3) or none")
    return tuple(indices)


@dataclass(frozen=True)
class VTABackend(TargetBackend):
    cfg: VTAConfig = DEFAULT_CONFIG
    plans: dict = field(default=None, hash=False, compare=False)  # LayerSpec -> tuned plan
    virtual_threads: int = 2
    skip_layers: tuple[int, ...] = DEFAULT_SKIP_LAYERS  # conv2d indices kept on the host
    skip_layers_given: bool = False  # explicitly: an index the model lacks is an error

    def with_options(self, options: dict | None) -> "VTABackend":
        value = next((v for k, v in (options or {}).items() if _is_own_option(k)), None)
        if value is None:
            return self
        return replace(self, skip_layers=parse_skip_layers(value), skip_layers_given=True)

    def make(self, options: dict | None = None):
        host = {k: v for k, v in (options or {}).items() if not _is_own_option(k)}
        return LLVM.make(host)  # the host code is plain x86-64

    def variant(self, name: str) -> "VTABackend":
        from .config import resolve_config

        try:
            return replace(self, cfg=resolve_config(name))
        except AccelcError as exc:
            raise TargetError(f"--target vta:{name}: {exc}") from exc

    def requantize_mode(self, quantize: str | None, requantize: str | None) -> str:
        if quantize is None:
            raise TargetError("--target vta runs int8 layers: add --quantize int8 --calib DATA "
                              "(requantization is shift)")
        if requantize not in (None, "shift"):
            raise TargetError(f"--requantize {requantize}: the vta target computes shift-only "
                              "(its ALU has no multiplier); drop --requantize or use shift")
        return "shift"  # VTA rescales with a rounding right shift only

    def with_tuning_records(self, path, target):
        from pathlib import Path

        from .tune import load_best_plans

        if not Path(path).is_file():
            raise TargetError(f"--tuning-records: file not found: {path}")
        return replace(self, plans=load_best_plans(path, self.cfg)), None

    # -- pipeline ---------------------------------------------------------------------------
    def fusion_passes(self, target) -> list:
        from accelc.passes.fuse_target_patterns import FuseTargetPatterns

        from . import patterns  # noqa: F401  (registers the accelc.vta.* patterns)
        from .offload import VTAOffload

        return [FuseTargetPatterns("vta"),
                VTAOffload(self.cfg, self.plans, self.virtual_threads, self.skip_layers, self.skip_layers_given)]

    def layout_passes(self, target) -> list:
        return LLVM.layout_passes(target)  # what stays on the host is compiled as for llvm

    def schedule_passes(self, target) -> list:
        return LLVM.schedule_passes(target)

    def tune_command(self, args):
        from .tune_model import run_tune

        return run_tune(args, self)

    # -- running ----------------------------------------------------------------------------
    def load_runtime(self) -> None:
        from .runtime import register

        register()

    def compile_summary(self, vm) -> list[str]:
        from .runtime import layer_table

        return ["requantize: shift (the vta target computes shift-only)"] + format_layer_table(layer_table(vm))

    def profile(self, vm, args, force_serial: bool = False) -> str:
        from .profile import profile

        return profile(vm, args, force_serial)


def _is_own_option(key: str) -> bool:
    """``target_options`` keys the vta target reads itself (``vta-skip-layers`` or ``vta_skip_layers``)."""
    return key.replace("_", "-") == SKIP_OPTION


def format_layer_table(layers: list[dict]) -> list[str]:
    """``where each layer runs`` lines for ``accelc compile``."""
    on_vta = [r for r in layers if r["where"] == "vta"]
    lines = [f"vta: {len(on_vta)} of {len(layers)} conv2d/dense layers offloaded to VTA"
             + (f" ({sum(bool(r.get('tuned')) for r in on_vta)} with tuned plans)"
                if any(r.get("tuned") for r in on_vta) else "")]
    for r in layers:
        if r["where"] == "vta":
            tuned = ", tuned plan" if r.get("tuned") else ""
            lines.append(f"  {r['name']:<16s} vta  {r['op']}{tuned}")
        else:
            lines.append(f"  {r['name']:<16s} cpu  {r['op']}: {r['reason']}")
    if on_vta:
        lines.append("note: run it with `accelc run` or accelc.load (the offloaded layers call accelc's "
                     "VTA simulator; the C++ runner accelc-run cannot run it)")
    return lines


VTA = register(VTABackend("vta", "VTA-like int8 accelerator (simulated) + host x86-64 CPU; needs --quantize int8"))
