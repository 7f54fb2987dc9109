"""Fusion patterns per target: the names and shapes of the kernels a target wants whole.

A target contributes its patterns with ``register_patterns("vta", [...])``; pattern names
carry the target prefix (``accelc.<target>.<ops>``) so that a kernel's name says whose rule
made it. ``passes/fuse_target_patterns.py`` (``FuseTargetPatterns``) partitions a module with
them through ``relax.transform.FuseOpsByPattern``; ``accelc inspect --fusion`` lists them.

Patterns are ordered most specific first (FuseOpsByPattern takes the first that matches).
"""

from __future__ import annotations

from tvm.relax.dpl import is_const, is_op, wildcard

_PATTERNS: dict[str, tuple] = {}

# Activations FuseOps (and a target kernel) can put in a conv/matmul epilogue.
ACTIVATIONS = {
    "relu": ("relax.nn.relu",),
    "relu6": ("relax.clip",),  # ONNX Clip(0, 6) imports as clip
    "gelu": ("relax.nn.gelu",),
    "sigmoid": ("relax.sigmoid",),
    "silu": ("relax.nn.silu",),
}


def epilogue_pattern(op_name: str, bias: bool, activation: str | None, residual: bool):
    """``op(x, w) [+ bias] [+ residual] [-> activation]`` (the residual add comes before the
    activation, as in ResNet blocks: ``relu(conv(x) + b + skip)``)."""
    out = is_op(op_name)(wildcard(), wildcard())
    if bias:  # a bias is a constant (FoldConstant ran in phase 1) ...
        out = is_op("relax.add")(out, is_const())
    if residual:  # ... a residual is a computed tensor
        out = is_op("relax.add")(out, ~is_const())
    if activation:
        (act_op,) = ACTIVATIONS[activation]
        extra = [wildcard(), wildcard()] if act_op == "relax.clip" else []  # clip(x, min, max)
        out = is_op(act_op)(out, *extra)
    return out


def standard_patterns(prefix: str, ops=("conv2d", "matmul")) -> list[tuple]:
    """``(name, pattern)`` for every op x bias x residual x activation, most specific first."""
    op_names = {"conv2d": "relax.nn.conv2d", "matmul": "relax.matmul"}
    out = []
    for op in ops:
        for residual in (True, False):
            for activation in (*ACTIVATIONS, None):
                for bias in (True, False):
                    if not (bias or residual or activation):
                        continue  # a bare op is not a fusion
                    parts = [op] + (["bias"] if bias else []) + (["add"] if residual else [])
                    parts += [activation] if activation else []
                    name = f"accelc.{prefix}.{'_'.join(parts)}"
                    pattern = epilogue_pattern(op_names[op], bias, activation, residual)
                    out.append((len(parts), name, pattern))
    # Longest first: FuseOpsByPattern takes the first pattern that matches at a root, and a
    # short one (conv2d_bias) would otherwise cut a longer epilogue (conv2d_bias_relu6) in two.
    out.sort(key=lambda item: -item[0])
    return [(name, pattern) for _, name, pattern in out]


def register_patterns(target: str, patterns: list[tuple]) -> None:
    """Declare ``target``'s fusion patterns (``(name, pattern[, check])`` triples)."""
    bad = [p[0] for p in patterns if not p[0].startswith(f"accelc.{target}.")]
    if bad:
        raise ValueError(f"pattern names must start with 'accelc.{target}.': {bad[:3]}")
    _PATTERNS[target] = tuple(patterns)


def patterns_for(target: str) -> tuple:
    """The patterns ``target`` registered (empty when it registered none)."""
    if target == "llvm" and target not in _PATTERNS:
        register_patterns("llvm", standard_patterns("llvm"))
    return _PATTERNS.get(target, ())
