"""Tuning tasks: the distinct kernels of a model, exactly as ``accelc compile`` schedules them.

A task is one PrimFunc taken at the point where compile applies tuning records (phase 4,
after FuseOps/FuseTIR, before the target's default schedules: see ``accelc/pipeline.py``).
Extraction runs the same pipeline phases as compile and cuts phase 4 at the records pass,
so every workload hash the tuner writes is one compile will look up. Kernels that are
structurally equal are one task; its weight is how many times the model calls them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from accelc.errors import AccelcError


def workload_key(func) -> str:
    """Structural hash of an unscheduled PrimFunc: stable across processes and runs."""
    import tvm_ffi

    return format(tvm_ffi.structural_hash(func) & (2**64 - 1), "016x")


def schedule_key(mod_or_func) -> str:
    import tvm_ffi

    return format(tvm_ffi.structural_hash(mod_or_func) & (2**64 - 1), "016x")


def as_tune_module(func):
    """The IRModule MetaSchedule tunes and replays: a deep copy of the kernel alone, named
    ``main``. A copy because a Schedule may rewrite a uniquely held function in place."""
    import tvm

    func = tvm.ir.load_json(tvm.ir.save_json(func))
    return tvm.IRModule({"main": func.with_attr("global_symbol", "main")})


@dataclass
class Task:
    index: int
    name: str
    workload: str
    func: object  # tvm.tirx.PrimFunc, unscheduled
    weight: int  # calls per model run
    flops: float  # per call
    names: list[str] = field(default_factory=list)  # every function with this workload
    # Parameter index -> the module's constant bound to it at the call (e.g. a BSR kernel's
    # data / indices / indptr): measured with the real values, not random ones.
    arrays: dict = field(default_factory=dict)

    @property
    def mod(self):
        return as_tune_module(self.func)

    @cached_property
    def op(self) -> str | None:
        """The llvm_cpu template tag of the kernel (``accelc.llvm_cpu.*``), None for others."""
        from .transfer import kernel_op

        return kernel_op(self.func)

    @cached_property
    def shapes(self) -> list[list[int]]:
        from .transfer import kernel_shapes

        return kernel_shapes(self.func)


@dataclass
class ModelTasks:
    tasks: list[Task]
    backend: object
    target: object
    opt_level: int
    model_name: str
    model_sha256: str


def extract_tasks(model, target_name: str = "llvm", *, input_shapes=None, opt_level: int = 3,
                  target_options: dict | None = None, sparse=None) -> ModelTasks:
    """Import ``model`` and run compile's pipeline up to the records pass; one task per
    distinct kernel, in the order the model first calls them. ``sparse``: compile's
    ``--sparse`` threshold (BSR kernels become tasks too)."""
    import tvm

    from accelc.frontend import import_onnx
    from accelc.pipeline import PipelineOptions, phases
    from accelc.targets import registry

    from .apply_tuning_records import TuningRecords

    backend = registry.get(target_name)
    target = backend.make(target_options)
    imported = import_onnx(model, input_shapes)
    # Empty records put the records pass into phase 4: its position is where tasks are taken.
    opts = PipelineOptions(opt_level=opt_level, tuning_records=TuningRecords.empty(target), sparse=sparse)
    mod = imported.mod
    with target, tvm.transform.PassContext(opt_level=opt_level):
        for name, passes in phases(opts, backend, target):
            cut = [i for i, p in enumerate(passes) if p.info.name == "ApplyTuningRecords"]
            if cut:
                passes = passes[: cut[0]]
            if passes:
                mod = tvm.transform.Sequential(passes, name=name)(mod)
            if cut:
                break
        else:
            raise AccelcError("internal: the pipeline has no tuning-records pass")
    return ModelTasks(_tasks_of(mod), backend, target, opt_level, imported.name, imported.sha256)


def _tasks_of(mod) -> list[Task]:
    import tvm
    from tvm import relax, tirx

    calls: dict[str, int] = {}
    order: list[str] = []
    constants: dict[str, dict] = {}  # first call's constant arguments, by parameter index
    call_tir = tvm.ir.Op.get("relax.call_tir")

    def visit(expr):
        if isinstance(expr, relax.Call) and expr.op.same_as(call_tir):
            callee = expr.args[0]
            if isinstance(callee, relax.GlobalVar):
                name = callee.name_hint
                if name not in calls:
                    order.append(name)
                    args = expr.args[1].fields if isinstance(expr.args[1], relax.Tuple) else [expr.args[1]]
                    constants[name] = {i: a.value.numpy() for i, a in enumerate(args) if isinstance(a, tvm.ir.expr.Constant)}
                calls[name] = calls.get(name, 0) + 1

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)

    by_workload: dict[str, Task] = {}
    for name in order:
        func = mod[name]
        if not isinstance(func, tirx.PrimFunc) or _is_scheduled(func):
            continue
        key = workload_key(func)
        task = by_workload.get(key)
        if task is None:
            task = by_workload[key] = Task(len(by_workload), name, key, func, 0, _flops(func))
            if func.attrs is not None and "accelc.bsr" in func.attrs:  # random indices: wrong work
                task.arrays = constants.get(name, {})
        task.weight += calls[name]
        task.names.append(name)
    return list(by_workload.values())


def _is_scheduled(func) -> bool:
    return bool(func.attrs) and bool(func.attrs.get("tirx.is_scheduled", False))


def _flops(func) -> float:
    if func.attrs is not None and "accelc.bsr" in func.attrs:  # the stored blocks' work, not the loop bounds
        from accelc.passes.sparse_kernels import BsrSpec

        spec = BsrSpec.from_attr(func.attrs["accelc.bsr"])
        return 2.0 * spec.batch * spec.m * spec.nnzb * spec.bs_r * spec.bs_c
    try:
        from tvm.s_tir.analysis import estimate_tir_flops

        return float(estimate_tir_flops(as_tune_module(func)))
    except Exception:  # noqa: BLE001  (data-dependent loops: unknown, not fatal)
        return 0.0


def default_schedule(task: Task, backend, target, opt_level: int):
    """The kernel as compile builds it without records: ``(IRModule, rule name)``."""
    import tvm

    mod = task.mod
    passes = list(backend.schedule_passes(target)) if opt_level >= 2 else []
    passes += list(getattr(backend, "bind_passes", lambda t: [])(target))
    if passes:
        with target, tvm.transform.PassContext(opt_level=opt_level):
            mod = tvm.transform.Sequential(passes)(mod)
    func = mod["main"]
    rule = str(func.attrs.get("accelc.schedule_rule", "")) if func.attrs else ""
    return mod, rule


# ------------------------------------------------------------------------------ selection
def select_tasks(spec: str | None, tasks: list[Task]) -> list[Task]:
    """``--tasks``: ``all``, or a comma list of indices, ranges (``5-7``) and task names."""
    if spec is None or spec.strip().lower() in ("", "all"):
        return list(tasks)
    by_name = {}
    for t in tasks:
        for n in [t.name, *t.names]:
            by_name.setdefault(n, t)
    chosen: dict[int, Task] = {}
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item in by_name:
            chosen[by_name[item].index] = by_name[item]
            continue
        lo, sep, hi = item.partition("-")
        try:
            first, last = (int(lo), int(hi)) if sep else (int(item), int(item))
        except ValueError:
            raise AccelcError(
                f"--tasks {spec!r}: {item!r} is neither a task index, a range like 2-5, "
                "nor a task name (see --list-tasks)"
            ) from None
        if first > last or first < 0 or last >= len(tasks):
            raise AccelcError(f"--tasks {spec!r}: {item!r} is outside the task indices 0-{len(tasks) - 1}")
        for i in range(first, last + 1):
            chosen[i] = tasks[i]
    if not chosen:
        raise AccelcError(f"--tasks {spec!r} selects no task")
    return [chosen[i] for i in sorted(chosen)]
