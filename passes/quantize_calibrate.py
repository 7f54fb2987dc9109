"""QuantizeCalibrate: measure every activation point on calibration data and set its scale."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant
from tvm.relax.expr_functor import PyExprMutator, mutator

from accelc.quantize.config import QuantizeConfig

from .quantize_common import DEQUANTIZE, QUANTIZE, activation_points, is_op


def _unsigned_from_zero(q: relax.Call) -> bool:
    zero = q.args[2]
    return str(q.attrs.out_dtype) == "uint8" and isinstance(zero, Constant) and int(zero.value.numpy()) == 0


@mutator
class _SetScales(PyExprMutator):
    """Give the i-th activation quantize (binding order) scale ``scales[i]``; each of its
    dequantizes takes the same scale."""

    def __init__(self, mod, scales: list[float]):
        super().__init__(mod)
        self.scales = iter(scales)
        self.rewrites = 0

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if is_op(call, QUANTIZE) and not isinstance(call.args[0], Constant):
            self.rewrites += 1
            return relax.op.quantize(
                call.args[0], relax.const(np.float32(next(self.scales))), call.args[2],
                axis=int(call.attrs.axis), out_dtype=str(call.attrs.out_dtype),
            )
        if is_op(call, DEQUANTIZE) and isinstance(call.args[0], relax.Var):
            q = self.lookup_binding(call.args[0])
            if is_op(q, QUANTIZE) and not isinstance(q.args[0], Constant):
                return relax.op.dequantize(call.args[0], q.args[1], q.args[2], axis=int(call.attrs.axis))
        return call


@tvm.transform.module_pass(opt_level=0, name="QuantizeCalibrate")
class QuantizeCalibrate:
    """Run ``runs`` (arrays ``[samples, *input_shape]`` keyed by input name) through the
    annotated model's float twin, compiled by accelc for the host CPU, and set each activation
    point's scale from its statistics with ``config.calib_method``.

    Alternatively ``scales`` (one float per activation point, binding order) sets them
    directly, which is how tests and pre-computed ranges skip the measurement.
    Precondition: QuantizeAnnotate ran. Invariant: only activation scales change.
    After the pass: ``scales``, ``thresholds`` and ``rewrites`` (points set).
    """

    def __init__(self, config: QuantizeConfig | None = None, runs: dict | None = None, scales=None):
        self.config = config or QuantizeConfig()
        self.runs = runs
        self.given_scales = None if scales is None else [float(s) for s in scales]
        self.scales: list[float] = []
        self.thresholds: list[float] = []
        self.rewrites = 0

    def _measure(self, mod) -> list[float]:
        from accelc.quantize.calibrate import METHODS, collect_statistics, scale_from_threshold

        cfg = self.config
        stats = collect_statistics(mod, self.runs, cfg.num_bins, need_histogram=cfg.calib_method != "minmax")
        method = METHODS[cfg.calib_method]
        self.thresholds = [float(method(s, percentile=cfg.percentile)) for s in stats]
        # A uint8 point with zero point 0 spans [0, T] with 255 steps, not 127.
        levels = [255.0 if _unsigned_from_zero(q) else 127.0 for q in activation_points(mod["main"])]
        return [scale_from_threshold(t * 127.0 / n, cfg.power_of_two) for t, n in zip(self.thresholds, levels)]

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        if self.given_scales is not None:
            self.scales = list(self.given_scales)
        elif self.runs is not None:
            self.scales = self._measure(mod)
        else:
            raise ValueError("QuantizeCalibrate needs calibration runs or explicit scales")
        setter = _SetScales(mod, self.scales)
        func = setter.visit_expr(mod["main"])
        setter.builder_.update_func(mod.get_global_var("main"), func)
        self.rewrites = setter.rewrites
        if self.rewrites != len(self.scales):
            raise ValueError(f"{len(self.scales)} scales for {self.rewrites} activation points")
        return setter.builder_.get()
