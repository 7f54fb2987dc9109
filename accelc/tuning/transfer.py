"""Record transfer between kernels of similar shape.

A record of a template kernel (``targets/llvm_cpu/search_space.py``) is a knob setting: which
design space (the ``accelc.space`` annotation: a loop order) and the innermost factor of
each tile knob. That setting means something for any kernel of the same op: a 3x3 conv
tuned at 28x28 with a 4-pixel register tile and 2 output-channel chunks per row is a good
first guess for the same conv at 14x14. Transfer rebuilds the template for the new kernel
with each tile knob set to its nearest valid factor (in ratio), and the same loop order.

Used twice:
- ``accelc tune``: a kernel with no trials of its own first measures the settings of the
  most similar tuned kernels (same op, nearest shape) of the log(s): its search starts from
  them (database seeds and cost-model data) instead of from random points.
- ``accelc compile --tuning-records``: a kernel without an exact record takes the setting of
  the nearest tuned kernel of its op, if that setting beat its own kernel's default schedule
  and applies to this shape; otherwise the default schedule. The report says which.

Similarity: same op (the ``schedule_rule`` tag), same parameter ranks; distance is the sum over
every parameter dimension of ``|log2(a / b)|`` (0: the same shapes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SPACE_ANNOTATION = "accelc.space"
_PREFIX = "accelc.llvm_cpu."


@dataclass(frozen=True)
class KnobSetting:
    op: str
    shapes: tuple  # parameter shapes of the kernel it was tuned on
    variant: str
    innermost: tuple  # innermost factor of each tile knob, in template order
    workload: str
    task: str
    latency_s: float
    baseline_s: float | None

    def distance(self, shapes) -> float | None:
        return shape_distance(self.shapes, shapes)


def kernel_op(func) -> str | None:
    """The template tag of the kernel's one tagged block (``accelc.llvm_cpu.*``), with
    ``@vN`` appended for template version N > 1 (``accelc.template_version``), else None.
    Settings transfer only between kernels of the same op and version: a knob tuned on an
    older template (e.g. a 1-block conv register tile) says nothing about a newer one."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    found = []
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        ann = sch.get(block).annotations
        tag = str(ann.get("schedule_rule", ""))
        if tag.startswith(_PREFIX) and tag != "accelc.llvm_cpu.bsr":  # BSR: per sparsity pattern, no transfer
            version = int(ann.get("accelc.template_version", 1))
            found.append(tag if version == 1 else f"{tag}@v{version}")
    return found[0] if len(found) == 1 else None


def op_tag(op: str) -> str:
    """The ``schedule_rule`` tag of a ``kernel_op`` (its version suffix dropped)."""
    return op.split("@", 1)[0]


def kernel_shapes(func) -> list[list[int]]:
    from .tuner import args_info_of

    return [shape for shape, _ in args_info_of(func)]


def shape_distance(a, b) -> float | None:
    if len(a) != len(b) or any(len(x) != len(y) for x, y in zip(a, b)):
        return None
    return sum(abs(math.log2(max(1, p) / max(1, q))) for x, y in zip(a, b) for p, q in zip(x, y))


def knobs_of_trace(trace_json) -> tuple[str, tuple] | None:
    """``(variant, innermost factors)`` of a template trace, None for any other trace."""
    try:
        insts, decisions = trace_json[0], trace_json[1]
    except (TypeError, IndexError):
        return None
    decided = {int(i): d for i, d in decisions}
    variant, inner = None, []
    for index, inst in enumerate(insts):
        kind, inputs, attrs = inst[0], inst[1], inst[2]
        if kind == "Annotate" and attrs and attrs[0] == SPACE_ANNOTATION:
            variant = str(inputs[1]).strip('"')
        elif kind == "SamplePerfectTile" and index in decided:
            inner.append(int(decided[index][-1]))
    return (variant, tuple(inner)) if variant else None


def settings_from(records, *, require_win: bool) -> dict[str, list[KnobSetting]]:
    """Per op, the knob setting of each workload's best trial (``WorkloadRecords``); with
    ``require_win`` only settings that measured faster than their kernel's default."""
    out: dict[str, list[KnobSetting]] = {}
    for workload, entry in records.items():
        best = entry.best
        if best is None or not best.data.get("op") or not best.data.get("shapes"):
            continue
        base = entry.baseline.latency_s if entry.baseline is not None and entry.baseline.ok else None
        if require_win and (base is None or best.latency_s >= base):
            continue
        knobs = knobs_of_trace(best.trace)
        if knobs is None:
            continue
        out.setdefault(best.data["op"], []).append(KnobSetting(
            best.data["op"], tuple(tuple(s) for s in best.data["shapes"]), knobs[0], knobs[1], workload,
            best.task, best.latency_s, base))
    return out


def nearest(settings: dict[str, list[KnobSetting]], op: str | None, shapes, exclude=(), k: int = 1):
    """The ``k`` settings of ``op`` nearest to ``shapes``, as ``(distance, setting)``."""
    if op is None:
        return []
    ranked = []
    for s in settings.get(op, []):
        if s.workload in exclude:
            continue
        d = s.distance(shapes)
        if d is not None:
            ranked.append((d, s.latency_s, s))
    ranked.sort(key=lambda t: (t[0], t[1]))
    return [(d, s) for d, _, s in ranked[:k]]


def apply_setting(func, setting: KnobSetting, target):
    """The template of ``func`` built with ``setting``'s loop order and nearest tile factors:
    a traced ``Schedule``, or None when the setting does not apply to this kernel."""
    from tvm import s_tir

    from accelc.targets.llvm_cpu import search_space

    from .tasks import as_tune_module

    space = search_space.SPACES.get(op_tag(setting.op))
    if space is None or kernel_op(func) != setting.op:
        return None
    sch = s_tir.Schedule(as_tune_module(func))
    block = next((b for b in sch.get_child_blocks(sch.get_sblock("root"))
                  if str(sch.get(b).annotations.get("schedule_rule", "")) == op_tag(setting.op)), None)
    if block is None:
        return None
    try:
        with target, search_space.tile_choices(list(setting.innermost)), search_space.space_enabled(True):
            spaces = space(sch, block)
    except Exception:  # noqa: BLE001  (a knob count that does not match this template version)
        return None
    for s in spaces:
        knobs = knobs_of_trace(s.trace.as_json())
        if knobs is not None and knobs[0] == setting.variant and len(knobs[1]) == len(setting.innermost):
            return s
    return None
