"""The one compilation pipeline, in numbered phases.

    1. import cleanup    canonicalize what the ONNX importer produced, fold constants
    2. graph passes      accelc's own graph rewrites (quantization, sparse rewrite) plug in here
    3. fusion            target fusion patterns (FuseOpsByPattern) and accelc fusion passes
    4. target lowering   layout rewrites, legalization to TIR, FuseOps/FuseTIR, default
                         schedules, dataflow lowering and memory planning
    5. build             TIR pipeline and code generation (``relax.build``)

Opt levels choose how much of it runs:

    O0  legalize and build only: one kernel per op, no folding, no scheduling
    O1  + constant folding, dead-code elimination, FuseOps/FuseTIR
    O2  + accelc graph and fusion passes, target default schedules
    O3  + target layout rewrites (packed weights); the default

Phases 1-4 run under one ``PassContext`` whose instruments implement ``--dump-ir`` (IR
after every pass) and ``--time-passes``.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import tvm
from tvm import relax
from tvm.ir import instrument

from .errors import AccelcError, InternalCompilerError


@dataclass(frozen=True)
class PipelineOptions:
    opt_level: int = 3
    dump_ir: str | None = None
    time_passes: bool = False
    graph_passes: tuple = ()  # extra Relax passes for phase 2 (quantize, sparse, ...)
    fusion_passes: tuple = ()  # extra Relax passes for phase 3
    sparse: float | str | None = None  # SparseRewrite threshold in [0, 1] or "auto"; None: dense only
    tuning_records: object = None  # accelc.tuning.TuningRecords: tuned kernels for phase 4
    disabled_passes: tuple[str, ...] = ()  # --disabled-pass: pass names to skip (TVMC's flag)


@dataclass
class PipelineReport:
    """What the pipeline did: phase wall times and, with --time-passes, per-pass timing."""

    phase_seconds: dict[str, float] = field(default_factory=dict)
    pass_timing: str = ""
    kernel_launches: int = 0  # kernel calls per inference in the lowered main (after phase 4)

    def format(self) -> str:
        lines = [f"  {name:<24s}{secs * 1000:10.1f} ms" for name, secs in self.phase_seconds.items()]
        text = f"kernel launches per run: {self.kernel_launches}\nphase timing:\n" + "\n".join(lines)
        if self.pass_timing:
            text += "\npass timing (nested passes indented):\n" + self.pass_timing
        return text


@instrument.pass_instrument
class PassTimer:
    """Wall time of every pass, nested as the passes ran.

    TVM's ``PassTimingInstrument`` cannot render once any pass has raised and been recovered
    from (a pass that tries a transform and falls back, as the CPU layout pass does): its
    profile stack stays unbalanced. This timer pops up to the pass that finished instead.
    """

    def __init__(self):
        self.stack: list[tuple[int, str, float]] = []
        self.rows: list[tuple[int, int, str, float]] = []  # (start order, depth, name, seconds)
        self.started = 0

    def run_before_pass(self, mod, info):
        self.stack.append((self.started, info.name, time.perf_counter()))
        self.started += 1

    def run_after_pass(self, mod, info):
        while self.stack:
            order, name, start = self.stack.pop()
            if name == info.name:
                self.rows.append((order, len(self.stack), name, time.perf_counter() - start))
                return

    def render(self, min_ms: float = 1.0) -> str:
        rows = sorted(self.rows)
        return "\n".join(
            f"  {'  ' * depth}{name:<{40 - 2 * depth}s}{secs * 1000:10.1f} ms"
            for _, depth, name, secs in rows if secs * 1000 >= min_ms
        )


def phase1_import_cleanup(opts: PipelineOptions) -> list:
    if opts.opt_level < 1:
        return []
    from accelc.passes.fold_batch_norm import FoldBatchNorm
    from accelc.passes.fold_constant_numpy import FoldConstantNumpy
    from accelc.passes.simplify_stack_sum import SimplifyStackSum

    # Fold batch norm into its conv/matmul weights while it is still one op: after
    # DecomposeOpsForInference it is five elementwise ops that no weight fold recognizes.
    # FoldConstantNumpy first makes weights that exporters build from fills
    # (ConstantOfShape -> broadcast_to) into constants, so that FoldBatchNorm can see them,
    # and it folds shape/elementwise ops on constants in numpy: relax FoldConstant builds
    # one LLVM kernel per folded op (~30 ms each, hundreds per model).
    # SimplifyStackSum: the importer's ONNX Sum (broadcast_to + stack + sum) as adds; relax's
    # ConvertLayout cannot pass a packed layout through stack.
    bn_fold = [FoldBatchNorm()] if opts.opt_level >= 2 else []
    return [SimplifyStackSum(), FoldConstantNumpy()] + bn_fold + [
        relax.transform.DecomposeOpsForInference(),  # batch_norm etc. in inference form
        relax.transform.CanonicalizeBindings(),
        FoldConstantNumpy(),
        relax.transform.FoldConstant(),  # what numpy folding leaves (integer math, ...)
        relax.transform.DeadCodeElimination(),
    ]


def phase2_graph_passes(opts: PipelineOptions) -> list:
    if opts.opt_level < 2:
        return []
    from accelc.passes.fold_scale_shift import FoldScaleShift
    from accelc.passes.simplify_power import SimplifyPower

    # Scale/shift folding first: later graph passes (quantization, sparsity) see final weights.
    # SimplifyPower: pow by quarter-integer constants (ONNX LRN's ^0.75) as square roots.
    passes = [FoldScaleShift(), SimplifyPower()] + list(opts.graph_passes)
    if opts.sparse is not None:
        from accelc.passes.sparse_rewrite import SparseRewrite

        passes.append(SparseRewrite(opts.sparse))
    return passes


def phase3_fusion(opts: PipelineOptions, backend, target) -> list:
    if opts.opt_level < 2:
        return []
    return list(opts.fusion_passes) + backend.fusion_passes(target)


def phase4_target_lowering(opts: PipelineOptions, backend, target) -> list:
    passes = list(backend.prelower_passes(target))  # e.g. names the target's codegen accepts
    if opts.opt_level >= 3:
        # Layout rewrites first, then fold: constant weights become pre-packed constants.
        passes += backend.layout_passes(target) + [relax.transform.FoldConstant()]
    passes += [
        relax.backend.DispatchSampling(),
        relax.backend.DispatchSortScan(),
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
    ]
    if opts.opt_level >= 1:
        passes += [
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
        ]
    if opts.tuning_records is not None:
        # Tuned kernels first; the default schedules below skip them (tirx.is_scheduled).
        # accelc tune takes its tasks right here (accelc/tuning/tasks.py cuts phase 4 here).
        passes.append(opts.tuning_records.apply_pass(target))
    if opts.opt_level >= 2:
        passes += backend.schedule_passes(target)
    passes += backend.bind_passes(target)  # e.g. GPU thread binding, needed even at O0
    passes += backend.artifact_passes(target)  # e.g. llvm's kernel table for run --profile
    passes += [
        relax.transform.DeadCodeElimination(),
        relax.transform.RewriteDataflowReshape(),
        relax.transform.ToNonDataflow(),
        relax.transform.RemovePurityChecking(),
        relax.transform.CallTIRRewrite(),
        relax.transform.StaticPlanBlockMemory(),
        relax.transform.LowerAllocTensor(),
        relax.transform.KillAfterLastUse(),
        relax.transform.LowerRuntimeBuiltin(),
        relax.transform.ComputePrimValue(),
        relax.transform.VMShapeLower(),
        relax.transform.AttachGlobalSymbol(),
    ]
    return passes


def phases(opts: PipelineOptions, backend, target) -> list[tuple[str, list]]:
    return [
        ("1_import_cleanup", phase1_import_cleanup(opts)),
        ("2_graph_passes", phase2_graph_passes(opts)),
        ("3_fusion", phase3_fusion(opts, backend, target)),
        ("4_target_lowering", phase4_target_lowering(opts, backend, target)),
    ]


@contextlib.contextmanager
def _internal_errors(phase: str):
    """A failure inside the pipeline on a model the front end accepted is accelc's bug:
    report it as one line naming the phase (the traceback stays behind ``--verbose``)."""
    try:
        yield
    except AccelcError:
        raise
    except Exception as exc:  # TVM raises InternalError, AssertionError, ValueError, ...
        lines = str(exc).strip().splitlines()
        detail = next((l for l in reversed(lines) if l.strip()), type(exc).__name__)
        raise InternalCompilerError(
            f"internal compiler error in phase {phase}: {type(exc).__name__}: {detail.strip()[:300]} "
            "(a bug in accelc; please report it with the model; --verbose shows the traceback)"
        ) from exc


def pass_names(opts: PipelineOptions, backend, target) -> list[str]:
    """Names of the passes phases 1-4 run for these options (what ``--disabled-pass`` takes)."""
    return [p.info.name for _, passes in phases(opts, backend, target) for p in passes]


def kernel_launches(mod: tvm.IRModule) -> int:
    """Calls of TIR kernels in the module's Relax functions: kernels launched per inference
    (a call inside a loop or branch counts once)."""
    prims = {gv for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    count = 0

    def visit(expr):
        nonlocal count
        if isinstance(expr, relax.Call):
            op = expr.op
            if isinstance(op, tvm.ir.GlobalVar) and op in prims:
                count += 1
            elif op.same_as(tvm.ir.Op.get("relax.call_tir")) and expr.args[0] in prims:
                count += 1

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return count


def run(mod: tvm.IRModule, backend, target, opts: PipelineOptions):
    """Compile ``mod`` for ``target``; return (VM executable, report)."""
    report = PipelineReport()
    if opts.disabled_passes:
        known = set(pass_names(opts, backend, target))
        unknown = [name for name in opts.disabled_passes if name not in known]
        if unknown:
            raise AccelcError(
                f"--disabled-pass: no pass named {', '.join(unknown)} at O{opts.opt_level} "
                f"(passes: {', '.join(sorted(known))})"
            )
    instruments = []
    if opts.dump_ir:
        Path(opts.dump_ir).mkdir(parents=True, exist_ok=True)
        instruments.append(instrument.DumpIR(opts.dump_ir))
    timing = PassTimer() if opts.time_passes else None
    if timing is not None:
        instruments.append(timing)

    ctx = tvm.transform.PassContext(
        opt_level=opts.opt_level, instruments=instruments, disabled_pass=list(opts.disabled_passes)
    )
    with target, ctx:
        for name, passes in phases(opts, backend, target):
            start = time.perf_counter()
            if passes:
                with _internal_errors(name):
                    mod = tvm.transform.Sequential(passes, name=name)(mod)
            report.phase_seconds[name] = time.perf_counter() - start
        if timing is not None:
            report.pass_timing = timing.render()
        report.kernel_launches = kernel_launches(mod)
        start = time.perf_counter()
        with _internal_errors("5_build"):
            executable = relax.build(mod, target, relax_pipeline=None)
        report.phase_seconds["5_build"] = time.perf_counter() - start
    return executable, report
