"""FuseTargetPatterns: group ops into the named kernels a target declared.

Wraps ``relax.transform.FuseOpsByPattern`` with the target's patterns from
``accelc.targets.fusion_patterns`` (names ``accelc.<target>.<ops>``). Each group becomes a
function with ``Primitive`` and ``Composite=<pattern name>`` attributes that LegalizeOps,
FuseOps and FuseTIR later turn into one TIR kernel.

Position: phase 3 (fusion), before target lowering. Precondition: graph passes done, ops still
high-level Relax (not legalized). Invariant: only regroups bindings; the computation is unchanged.
``num_rewrites`` is the number of groups made.

For the llvm target this pass is *not* in the default pipeline: TVM's FuseOps already fuses
conv2d/matmul + bias + residual add + relu/clip/gelu/sigmoid/silu into one kernel (checked in
tests/passes/test_fusion.py), and grouping early would hide the convolutions from the CPU
layout passes of phase 4. Targets whose kernels must match a shape exactly (VTA) use it.
"""

from __future__ import annotations

import tvm
from tvm import relax


@tvm.transform.module_pass(opt_level=0, name="FuseTargetPatterns")
class FuseTargetPatterns:
    def __init__(self, target: str, patterns: tuple | None = None):
        from accelc.targets.fusion_patterns import patterns_for

        self.target = target
        self.patterns = tuple(patterns) if patterns is not None else patterns_for(target)
        self.num_rewrites = 0

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        if not self.patterns:
            return mod
        before = set(str(g.name_hint) for g in mod.functions)
        out = relax.transform.FuseOpsByPattern(list(self.patterns), bind_constants=False)(mod)
        self.num_rewrites = sum(
            _count_calls(out["main"], g) for g in out.functions if str(g.name_hint) not in before
        ) if "main" in [str(g.name_hint) for g in out.functions] else 0
        return out


def _count_calls(func, gvar) -> int:
    count = 0

    def visit(expr):
        nonlocal count
        if isinstance(expr, relax.Call) and expr.op.same_as(gvar):
            count += 1

    relax.analysis.post_order_visit(func, visit)
    return count
