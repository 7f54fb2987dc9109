"""ApplyCpuSchedules: schedule every PrimFunc an accelc CPU rule recognises."""

from __future__ import annotations

import tvm
from tvm import IRModule, tirx
from tvm.target import Target


@tvm.transform.module_pass(opt_level=0, name="ApplyCpuSchedules")
class ApplyCpuSchedules:  # pylint: disable=too-few-public-methods
    """Apply the first matching rule of ``rules`` to each unscheduled PrimFunc.

    Runs after LegalizeOps + FuseOps/FuseTIR, before tvm.compile's default pipeline. Functions
    no rule matches are left untouched (and unscheduled); scheduled ones get
    ``tirx.is_scheduled`` (dlight's marker, so later dlight passes skip them) and
    ``accelc.schedule_rule`` naming the rule. ``self.fired`` maps rule name -> functions
    scheduled in the last run, for tests and reports.
    A rule that raises is treated as not matching (the function keeps its naive loops) unless
    ``strict`` is set.
    """

    def __init__(self, rules, target: Target | None = None, strict: bool = False):
        self.rules = list(rules)
        self.target = target
        self.strict = strict
        self.fired: dict[str, int] = {}
        self.failed: dict[str, str] = {}

    def transform_module(self, mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        self.fired, self.failed = {}, {}
        updates = {}
        for g_var, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or _is_scheduled(func):
                continue
            target = func.attrs.get("target") if func.attrs else None
            target = target or self.target or Target.current(allow_none=False)
            if _tiny(func):
                target = _serial(target)
            for rule in self.rules:
                name = getattr(rule, "name", type(rule).__name__)
                try:
                    sch = rule.apply(func, target, False)
                except Exception as err:  # pylint: disable=broad-except
                    if self.strict:
                        raise
                    self.failed[g_var.name_hint] = f"{name}: {type(err).__name__}: {err}"[:500]
                    continue
                if sch is None:
                    continue
                if isinstance(sch, list):
                    sch = sch[0]
                updates[g_var] = (
                    sch.mod["main"]
                    .with_attr("tirx.is_scheduled", True)
                    .with_attr("accelc.schedule_rule", name)
                )
                self.fired[name] = self.fired.get(name, 0) + 1
                break
        for g_var, func in updates.items():
            mod[g_var] = func
        return mod


# Kernels below this much work run on one thread: waking the pool and joining it costs a few
# microseconds a kernel, more than splitting a few microseconds of work saves (the digits CNN:
# 6 kernels of 3-30 kFLOP each, where the pool made accelc slower than onnxruntime).
SERIAL_MAX_FLOPS = 4e5
SERIAL_MAX_ELEMENTS = 16384


def _tiny(func: tirx.PrimFunc) -> bool:
    """Little work: multiply-adds below ``SERIAL_MAX_FLOPS`` and no buffer larger than
    ``SERIAL_MAX_ELEMENTS`` elements (copies and elementwise kernels move that many)."""
    from .profile import kernel_flops

    largest = 0
    for param in func.params:
        shape = getattr(param.ty, "shape", None)
        if shape is None:
            continue
        try:
            size = 1
            for d in shape:
                size *= int(d)
        except (TypeError, ValueError):
            return False  # symbolic shapes: keep the parallel schedule
        largest = max(largest, size)
    return largest <= SERIAL_MAX_ELEMENTS and (kernel_flops(func) or 0.0) < SERIAL_MAX_FLOPS


def _serial(target: Target) -> Target:
    config = dict(target.export())
    config["num-cores"] = 1
    return Target(config)


def _is_scheduled(func: tirx.PrimFunc) -> bool:
    return bool(func.attrs) and "tirx.is_scheduled" in func.attrs and bool(
        func.attrs["tirx.is_scheduled"]
    )
