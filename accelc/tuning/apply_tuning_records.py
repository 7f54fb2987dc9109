"""ApplyTuningRecords: schedule the kernels a tuning log covers with their best record.

Position: phase 4 of ``accelc/pipeline.py``, after FuseOps/FuseTIR and before the target's
default schedules (``backend.schedule_passes``). Precondition: PrimFuncs are fused and not
yet scheduled. Each unscheduled PrimFunc whose workload hash has a successful trial for this
target is replaced by that trial's trace replayed on it, marked ``tirx.is_scheduled`` (so
the default schedules skip it) and ``accelc.schedule_rule = "tuned"``. A record is used
only if its time is at most ``MIN_GAIN`` (0.85) x the kernel's default schedule's (the
log's baseline line); on CPUs its register tiles go on the stack. A template kernel
(``accelc.llvm_cpu.*``) without a record of its own takes the knob setting of the nearest
tuned kernel of the same op (``transfer.py``; only settings that beat their own kernel's
default, within ``MAX_TRANSFER_DISTANCE``), marked ``accelc.schedule_rule = "transferred"``.
Everything else is left unchanged, and ``TuningRecords.applied`` says which kernels were
tuned, which transferred, and why the others fell back to defaults. Invariant: function names, signatures and the Relax graph are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import tvm
from tvm import IRModule, tirx

from accelc.errors import AccelcError

from .records import TuningLog, WorkloadRecords, index_by_workload, target_json, target_key
from .tasks import as_tune_module, workload_key

# Sum over parameter dimensions of |log2(a/b)|: e.g. one conv at half the resolution (input
# and output H, W: 4) with twice the channels (weight and output: 3-4). Farther shapes keep
# their default schedule: a tile setting is evidence only for shapes like its own.
MAX_TRANSFER_DISTANCE = 12.0
# A record replaces the default schedule only if it measured at least this much faster: a
# kernel timed alone on a shared 2-core machine moves 10-20% from run to run, and small
# "wins" lost in the whole model (MobileNetV2 with its shipped log ran 0.84x of untuned with
# every winning record applied).
MIN_GAIN = 0.85


def _tiles_on_stack(sch) -> None:
    """Register tiles of traces recorded before place_epilogue moved them to global scope
    (``targets/llvm_cpu/schedule_utils._tile_on_stack``): "local" buffers cost a workspace
    alloc/free call per tile; global ones under 1 KiB go on the stack."""
    from tvm import s_tir

    def blocks(parent):
        for b in sch.get_child_blocks(parent):
            yield b
            yield from blocks(b)

    for block in list(blocks(sch.get_sblock("root"))):
        stmt = sch.get(block)
        for i, region in enumerate(stmt.writes):
            if region.source.scope() == "local":
                try:
                    sch.set_scope(block, i, "global")
                except s_tir.ScheduleError:
                    pass


def replay(func, trace_json):
    """The schedule of ``trace_json`` applied to the unscheduled kernel ``func``."""
    from tvm.s_tir import Schedule, Trace

    sch = Schedule(as_tune_module(func))
    Trace.apply_json_to_schedule(trace_json, sch)
    return sch


@dataclass
class ApplyReport:
    """Per kernel (function name): tuned with which latency, or why defaults were kept."""

    tuned: dict[str, tuple[float, float | None]] = field(default_factory=dict)  # (tuned s, baseline s)
    transferred: dict[str, tuple[str, float]] = field(default_factory=dict)  # (source kernel, distance)
    fallback: dict[str, str] = field(default_factory=dict)

    def summary(self, source: str = "") -> list[str]:
        total = len(self.tuned) + len(self.transferred) + len(self.fallback)
        src = f" from {source}" if source else ""
        moved = f", {len(self.transferred)} transferred from similar kernels" if self.transferred else ""
        lines = [f"tuning records{src}: {len(self.tuned)} of {total} kernel(s) tuned{moved}"]
        for name, (donor, distance) in self.transferred.items():
            lines.append(f"  transferred: {name} <- knobs of {donor} (shape distance {distance:.1f})")
        if self.fallback:
            reasons: dict[str, list[str]] = {}
            for name, why in self.fallback.items():
                reasons.setdefault(why, []).append(name)
            for why, names in reasons.items():
                shown = ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")
                lines.append(f"  default schedule ({why}): {shown}")
        return lines


class TuningRecords:
    """The records of one log that apply to one target, indexed by workload."""

    def __init__(self, key: str, by_workload: dict[str, WorkloadRecords], source: str = "",
                 skipped: int = 0):
        self.target_key = key
        self.by_workload = by_workload
        self.source = source
        self.skipped = skipped
        self.applied: ApplyReport | None = None  # filled by the pass, last run
        self.transfer = True  # kernels without a record may take a similar kernel's knobs
        self._settings = None

    def transfer_settings(self) -> dict:
        """Per op, the winning knob settings of this log (``transfer.settings_from``)."""
        if self._settings is None:
            from .transfer import settings_from

            self._settings = settings_from(self.by_workload, require_win=True)
        return self._settings

    @classmethod
    def empty(cls, target) -> "TuningRecords":
        return cls(target_key(target), {})

    @classmethod
    def load(cls, path: str | Path, target) -> "TuningRecords":
        """Records of ``path`` for ``target``; a log tuned only for other targets is an error."""
        log = TuningLog.load(path, missing_ok=False)
        key = target_key(target)
        mine = log.for_target(key)
        others = {k: n for k, n in log.target_keys().items() if k != key}
        if not mine and others:
            other_key, count = max(others.items(), key=lambda kv: kv[1])
            other_target = next(r.data.get("target") for r in log.records if r.target_key == other_key)
            raise AccelcError(
                f"tuning records {path} were tuned for target {other_key} ({count} records), not "
                f"for this compile's target {key}{_target_diff(other_target, target_json(target))}; "
                "tune for this target or compile without --tuning-records"
            )
        if not log.records and not log.skipped:
            raise AccelcError(f"tuning records {path} hold no records")
        if not log.records:
            raise AccelcError(f"tuning records {path}: no readable record ({log.skipped_summary()})")
        return cls(key, index_by_workload(mine), str(path), len(log.skipped))

    def apply_pass(self, target):
        return ApplyTuningRecords(self, target)

    def __len__(self) -> int:
        return sum(w.trials for w in self.by_workload.values())


def _target_diff(a: dict | None, b: dict) -> str:
    if not isinstance(a, dict):
        return ""
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k not in ("keys", "tag")]
    if not keys:
        return ""
    shown = ", ".join(f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in keys[:3])
    return f" (differs in {shown})"


@tvm.transform.module_pass(opt_level=0, name="ApplyTuningRecords")
class ApplyTuningRecords:  # pylint: disable=too-few-public-methods
    """Replace each covered, unscheduled kernel by its best tuned schedule (see module doc)."""

    def __init__(self, records: TuningRecords, target=None):
        self.records = records
        self.target = target

    def transform_module(self, mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        report = ApplyReport()
        updates = {}
        for g_var, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or _is_scheduled(func):
                continue
            name = g_var.name_hint
            entry = self.records.by_workload.get(workload_key(func))
            if entry is None and self.records.transfer:
                moved = self._transferred(func)
                if moved is not None:
                    updates[g_var], report.transferred[name] = moved
                    continue
            if entry is None or entry.best is None:
                report.fallback[name] = "no record" if entry is None or not entry.trials else "no successful trial"
                continue
            base = entry.baseline
            if base is not None and base.ok and entry.best.latency_s >= base.latency_s:
                report.fallback[name] = "default faster than tuned"
                continue
            if base is not None and base.ok and entry.best.latency_s > MIN_GAIN * base.latency_s:
                report.fallback[name] = f"tuned within {100 * (1 - MIN_GAIN):.0f}% of the default (noise)"
                continue
            try:
                sch = replay(func, entry.best.trace)
                if self._cpu():
                    _tiles_on_stack(sch)  # on a GPU "local" is registers: left as tuned
            except Exception as exc:  # noqa: BLE001  (a stale or foreign trace: keep defaults)
                report.fallback[name] = f"record does not replay: {type(exc).__name__}"
                continue
            from accelc.passes.sparse_kernels import realize_bsr

            tuned = sch.mod["main"]
            tuned = realize_bsr(tuned) or tuned  # a BSR record is a tile choice: emit that kernel
            updates[g_var] = (
                tuned
                .without_attr("global_symbol")
                .with_attr("tirx.is_scheduled", True)
                .with_attr("accelc.schedule_rule", "tuned")
            )
            report.tuned[name] = (entry.best.latency_s, base.latency_s if base is not None and base.ok else None)
        for g_var, func in updates.items():
            mod[g_var] = func
        self.records.applied = report
        return mod

    def _cpu(self) -> bool:
        from tvm.target import Target

        target = self.target or Target.current(allow_none=True)
        return target is not None and str(target.kind.name) == "llvm"

    def _transferred(self, func):
        """``(scheduled func, (donor kernel, distance))`` from the nearest tuned kernel of the
        same op, or None (no such kernel near enough, or its setting does not apply)."""
        from tvm.target import Target

        from .transfer import apply_setting, kernel_op, kernel_shapes, nearest

        settings = self.records.transfer_settings()
        op = kernel_op(func) if settings else None
        if op is None or op not in settings:
            return None
        target = self.target or Target.current(allow_none=True)
        for distance, setting in nearest(settings, op, kernel_shapes(func), k=3):
            if distance > MAX_TRANSFER_DISTANCE or target is None:
                return None
            sch = apply_setting(func, setting, target)
            if sch is not None:
                scheduled = (sch.mod["main"].without_attr("global_symbol").with_attr("tirx.is_scheduled", True)
                             .with_attr("accelc.schedule_rule", "transferred"))
                return scheduled, (setting.task, distance)
        return None


def _is_scheduled(func) -> bool:
    return bool(func.attrs) and bool(func.attrs.get("tirx.is_scheduled", False))
