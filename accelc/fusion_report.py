"""``accelc inspect --fusion``: which ops went into which kernel, and why neighbours did not.

Runs the real pipeline (phases 1-3 and phase 4 up to, not including, ``FuseTIR``) so the groups
are exactly those that will be compiled, then reads each fused function's TIR calls. Reasons
for a kernel boundary follow FuseOps' rules on the op patterns ``AnnotateTIROpPattern`` set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# tvm/relax/op_attr_types.h OpPatternKind
_PATTERN = {0: "elementwise", 1: "broadcast", 2: "injective", 3: "reduction", 4: "complex (out-elementwise-fusable)", 8: "opaque"}


@dataclass
class Kernel:
    index: int
    name: str
    ops: list[str]
    patterns: list[int]
    composite: str | None = None
    consumers: list[int] = field(default_factory=list)


@dataclass
class FusionReport:
    kernels: list[Kernel]
    boundaries: list[tuple[int, int, str]]  # (producer, consumer, why not fused)

    def format(self) -> str:
        lines = [f"fused groups: {len(self.kernels)} kernel(s) launched per run"]
        for k in self.kernels:
            tag = f"  [{k.composite}]" if k.composite else ""
            lines.append(f"  #{k.index:<3d} {k.name}: {' + '.join(k.ops)}{tag}")
            for producer, consumer, why in self.boundaries:
                if producer == k.index:
                    target = f"#{consumer} {self.kernels[consumer].name}" if consumer >= 0 else "graph output"
                    lines.append(f"         -> {target}: not fused: {why}")
        return "\n".join(lines)


def _op_name(prim_name: str) -> str:
    return re.sub(r"\d+$", "", prim_name)


def _reason(producer: Kernel, consumer: Kernel, fanout: int) -> str:
    if fanout > 1:
        return f"output feeds {fanout} kernels (fusing would compute it {fanout} times)"
    first, head = consumer.patterns[0], consumer.ops[0]
    if first == 4:
        return f"{head} is a complex op; a kernel holds at most one (FuseOps)"
    if first == 3:
        return f"{head} is a reduction; it cannot follow {producer.ops[0]} in one kernel"
    if first == 8:
        return f"{head} is opaque (not fusable)"
    if first == 2 and max(producer.patterns) == 4:
        return f"{head} is injective (layout change); FuseOps does not put it in a complex op's epilogue"
    return f"{head} ({_PATTERN.get(first, first)}) left separate by FuseOps"


def analyze_module(mod) -> FusionReport:
    """The kernels ``main`` launches after FuseOps, in order, with the reasons at each edge."""
    import tvm
    from tvm import relax

    main = mod["main"]
    kernels: list[Kernel] = []
    producer_of: dict = {}
    uses: list[list] = []

    def prim_info(gvar):
        func = mod[gvar]
        return _op_name(str(gvar.name_hint)), int((func.attrs or {}).get("op_pattern", 8))

    call_tir = tvm.ir.Op.get("relax.call_tir")
    for block in main.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if not isinstance(value, relax.Call):
                continue
            if value.op.same_as(call_tir):
                name, pat = prim_info(value.args[0])
                k = Kernel(len(kernels), str(value.args[0].name_hint), [name], [pat])
                args = list(value.args[1].fields)
            elif isinstance(value.op, tvm.ir.GlobalVar) and isinstance(mod[value.op], relax.Function):
                func = mod[value.op]
                ops, pats = [], []

                def visit(expr):
                    if isinstance(expr, relax.Call) and expr.op.same_as(call_tir):
                        n, p = prim_info(expr.args[0])
                        ops.append(n)
                        pats.append(p)

                relax.analysis.post_order_visit(func.body, visit)
                composite = (func.attrs or {}).get("Composite")
                k = Kernel(len(kernels), str(value.op.name_hint), ops or ["?"], pats or [8], str(composite) if composite else None)
                args = list(value.args)
            else:
                continue
            kernels.append(k)
            producer_of[binding.var] = k.index
            uses.append([producer_of[a] for a in args if a in producer_of])
    boundaries = []
    for consumer, producers in enumerate(uses):
        for p in producers:
            kernels[p].consumers.append(consumer)
    for k in kernels:
        for c in k.consumers:
            boundaries.append((k.index, c, _reason(k, kernels[c], len(k.consumers))))
    return FusionReport(kernels, boundaries)


def fusion_report(model, input_shapes=None, target: str = "llvm", opt_level: int = 3) -> FusionReport:
    """Import ``model``, run the pipeline up to FuseTIR, and report the fused groups."""
    import tvm

    from accelc.targets import registry

    from .frontend import import_onnx
    from .pipeline import PipelineOptions, phases

    backend = registry.get(target)
    tvm_target = backend.make(None)
    mod = import_onnx(model, input_shapes).mod
    opts = PipelineOptions(opt_level=opt_level)
    with tvm_target, tvm.transform.PassContext(opt_level=opt_level):
        for name, passes in phases(opts, backend, tvm_target):
            names = [p.info.name for p in passes]
            if "FuseTIR" in names:
                passes = passes[: names.index("FuseTIR")]
            if passes:
                mod = tvm.transform.Sequential(passes)(mod)
            if "FuseTIR" in names:
                break
    return analyze_module(mod)
