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

import time
from dataclasses import dataclass, field
from pathlib import Path

import tvm
from tvm import relax
from tvm.ir import instrument


@dataclass(frozen=True)
class PipelineOptions:
    opt_level: int = 3
    dump_ir: str | None = None
    time_passes: bool = False
    graph_passes: tuple = ()  # extra Relax passes for phase 2 (quantize, sparse, ...)
    fusion_passes: tuple = ()  # extra Relax passes for phase 3


@dataclass
class PipelineReport:
    """What the pipeline did: phase wall times and, with --time-passes, TVM's pass timing."""

    phase_seconds: dict[str, float] = field(default_factory=dict)
    pass_timing: str = ""

    def format(self) -> str:
        lines = [f"  {name:<24s}{secs * 1000:10.1f} ms" for name, secs in self.phase_seconds.items()]
        text = "phase timing:\n" + "\n".join(lines)
        if self.pass_timing:
            text += "\npass timing (TVM PassTimingInstrument):\n" + self.pass_timing
        return text


def phase1_import_cleanup(opts: PipelineOptions) -> list:
    if opts.opt_level < 1:
        return []
    return [
        relax.transform.DecomposeOpsForInference(),  # batch_norm etc. in inference form
        relax.transform.CanonicalizeBindings(),
        relax.transform.FoldConstant(),
        relax.transform.DeadCodeElimination(),
    ]


def phase2_graph_passes(opts: PipelineOptions) -> list:
    return list(opts.graph_passes) if opts.opt_level >= 2 else []


def phase3_fusion(opts: PipelineOptions, backend, target) -> list:
    if opts.opt_level < 2:
        return []
    return list(opts.fusion_passes) + backend.fusion_passes(target)


def phase4_target_lowering(opts: PipelineOptions, backend, target) -> list:
    passes = []
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
    if opts.opt_level >= 2:
        passes += backend.schedule_passes(target)
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


def run(mod: tvm.IRModule, backend, target, opts: PipelineOptions):
    """Compile ``mod`` for ``target``; return (VM executable, report)."""
    report = PipelineReport()
    instruments = []
    if opts.dump_ir:
        Path(opts.dump_ir).mkdir(parents=True, exist_ok=True)
        instruments.append(instrument.DumpIR(opts.dump_ir))
    timing = instrument.PassTimingInstrument() if opts.time_passes else None
    if timing is not None:
        instruments.append(timing)

    with target, tvm.transform.PassContext(opt_level=opts.opt_level, instruments=instruments):
        for name, passes in phases(opts, backend, target):
            start = time.perf_counter()
            if passes:
                mod = tvm.transform.Sequential(passes, name=name)(mod)
            report.phase_seconds[name] = time.perf_counter() - start
        if timing is not None:
            report.pass_timing = timing.render()
        start = time.perf_counter()
        executable = relax.build(mod, target, relax_pipeline=None)
        report.phase_seconds["5_build"] = time.perf_counter() - start
    return executable, report
