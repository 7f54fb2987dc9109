"""LLVM CPU target of accelc: packed layouts and default (untuned) schedules.

The pipeline calls, for target kind ``llvm``::

    layout_passes(target)    # Relax, after FoldConstant, before LegalizeOps
    schedule_passes(target)  # after LegalizeOps + FuseOps/FuseTIR, before tvm.compile

Knobs (tile sizes, blocks, register budget) are the fields of :class:`CpuScheduleConfig`;
pass ``config=`` to override the defaults derived from the target.
"""

from __future__ import annotations

import tvm
from tvm.target import Target

from .apply_cpu_schedules import ApplyCpuSchedules
from .config import CpuScheduleConfig, config_from_target, host_target
from .convert_conv2d_layout import ConvertConv2dLayout
from accelc.passes.fold_constant_numpy import FoldConstantNumpy
from .legalize_packed_ops import LegalizePackedOps
from .schedule_conv2d import Conv2d1x1NCHW, Conv2dNCHWc
from .schedule_dense import DensePacked
from .schedule_generic import GenericCpu

__all__ = [
    "ApplyCpuSchedules",
    "CpuScheduleConfig",
    "FoldConstantNumpy",
    "config_from_target",
    "host_target",
    "layout_passes",
    "schedule_passes",
    "schedule_rules",
]


def layout_passes(target: Target, config: CpuScheduleConfig | None = None) -> list:
    """Relax-level passes: pack conv2d into NCHW{c}c and lower packed conv2d / constant-weight
    matmul to accelc kernels; the weight layout_transforms are folded (pre-packed) with numpy
    rather than by FoldConstant compiling one kernel per weight shape."""
    config = config or config_from_target(target)
    return [ConvertConv2dLayout(config), LegalizePackedOps(config), FoldConstantNumpy()]


def schedule_rules(target: Target, config: CpuScheduleConfig | None = None) -> list:
    config = config or config_from_target(target)
    return [Conv2dNCHWc(config), Conv2d1x1NCHW(config), DensePacked(config), GenericCpu(config)]


def schedule_passes(target: Target, config: CpuScheduleConfig | None = None) -> list:
    """TIR-level passes: schedule every PrimFunc a rule recognises, leave the rest."""
    return [ApplyCpuSchedules(schedule_rules(target, config), target=target)]
