"""LLVM CPU target of accelc: packed layouts and default (untuned) schedules.

The pipeline calls, for target kind ``llvm``::

    layout_passes(target)    # Relax, after FoldConstant, before LegalizeOps
    schedule_passes(target)  # after LegalizeOps + FuseOps/FuseTIR, before tvm.compile

Knobs (tile sizes, blocks, register budget) are the fields of :class:`CpuScheduleConfig`;
pass ``config=`` to override the defaults derived from the target.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.target import Target

from .apply_cpu_schedules import ApplyCpuSchedules
from .batch_matmul import BatchMatmul
from .config import CpuScheduleConfig, config_from_target, host_target
from .convert_conv2d_layout import ConvertConv2dLayout
from .depthwise import DepthwiseConv2dNCHWc
from .int8 import Conv2dInt8, Conv2dInt8Rows, DenseInt8, DepthwiseInt8Lanes, LegalizeInt8Ops
from accelc.passes.fold_constant_numpy import FoldConstantNumpy
from .legalize_packed_ops import LegalizePackedOps
from .reduce import RowReduce
from .scalar_clamp_to_relax import ScalarClampToRelax
from .schedule_conv2d import Conv2d1x1NCHW, Conv2dNCHWc
from .schedule_dense import DensePacked
from .schedule_generic import GenericCpu
from .sparse import BsrKernel

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
    # FastMathTransform: erf/exp/tanh as vectorizable polynomials (LLVM calls scalar libm erff
    # per lane otherwise: BERT's GELU took longer than its dense).
    return [ScalarClampToRelax(), ConvertConv2dLayout(config), LegalizeInt8Ops(target, config), LegalizePackedOps(config),
            FoldConstantNumpy(), relax.transform.FastMathTransform()]


def schedule_rules(target: Target, config: CpuScheduleConfig | None = None) -> list:
    config = config or config_from_target(target)
    return [BsrKernel(config), Conv2dInt8(config), Conv2dInt8Rows(config), DepthwiseInt8Lanes(config), DenseInt8(config), DepthwiseConv2dNCHWc(config), Conv2dNCHWc(config),
            Conv2d1x1NCHW(config), DensePacked(config), BatchMatmul(config), RowReduce(config),
            GenericCpu(config)]


def schedule_passes(target: Target, config: CpuScheduleConfig | None = None) -> list:
    """TIR-level passes: schedule every PrimFunc a rule recognises, leave the rest."""
    return [ApplyCpuSchedules(schedule_rules(target, config), target=target)]
