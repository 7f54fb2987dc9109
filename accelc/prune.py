"""Sparsity tools: magnitude pruning of an ONNX model's weights (``accelc prune``) and the
per-weight sparsity / rewrite report of ``accelc inspect --sparse``.

Pruning zeroes, in every float weight of MatMul, Gemm and Conv, the blocks of smallest
magnitude until ``sparsity`` of the weight's blocks are zero. A block is ``rows x cols`` of
the weight seen as (output channels x input features), the orientation ``SparseRewrite``
uses (16x1 = 16 output channels of one input feature; a conv's input features are
``in_channels * kh * kw``); its magnitude is its L2 (or L1) norm. Each weight is pruned to
the same sparsity (layer-wise uniform magnitude pruning): real accuracy needs fine-tuning,
this is for trying the speed of a sparse model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import AccelcError

NORMS = ("l2", "l1")


@dataclass(frozen=True)
class PruneOptions:
    model: str
    sparsity: float
    block: str | None = None  # "16x1"; default 1x1 (unstructured)
    norm: str = "l2"
    output: str | None = None  # default MODEL.sparse.onnx next to the model


@dataclass(frozen=True)
class WeightInfo:
    name: str
    op_type: str
    shape: tuple
    sparsity: float
    matrix: tuple  # (output channels, input features): the 2-D view blocks are taken in


def check_sparsity(sparsity) -> float:
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise AccelcError(f"--sparsity must be a number in [0, 1], got {sparsity!r}") from None
    if not 0.0 <= value <= 1.0:  # also rejects nan
        raise AccelcError(f"--sparsity must be in [0, 1], got {sparsity}")
    return value


def _as_matrix(op_type: str, weight: np.ndarray, trans_b: bool) -> np.ndarray:
    """The weight as (output channels, input features)."""
    if op_type == "Conv":
        return weight.reshape(weight.shape[0], -1)
    if op_type == "Gemm" and trans_b:
        return weight
    return weight.T  # MatMul / Gemm weight (K, N)


def _weights(proto: onnx.ModelProto):
    """(node, initializer) of every float 2-D+ weight feeding input 1 of MatMul/Gemm/Conv."""
    inits = {i.name: i for i in proto.graph.initializer}
    seen = set()
    for node in proto.graph.node:
        if node.op_type not in ("MatMul", "Gemm", "Conv") or len(node.input) < 2:
            continue
        init = inits.get(node.input[1])
        if init is None or init.name in seen or len(init.dims) < 2:
            continue
        if init.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
            continue
        if node.op_type == "MatMul" and len(init.dims) != 2:
            continue
        seen.add(init.name)
        yield node, init


def _trans_b(node) -> bool:
    return any(a.name == "transB" and helper.get_attribute_value(a) for a in node.attribute)


def weight_sparsity(model) -> list[WeightInfo]:
    """Sparsity of each MatMul/Gemm/Conv weight of ``model``, in graph order."""
    from .frontend import load_onnx

    proto = load_onnx(model)
    out = []
    for node, init in _weights(proto):
        weight = numpy_helper.to_array(init)
        matrix = _as_matrix(node.op_type, weight, _trans_b(node))
        out.append(WeightInfo(init.name, node.op_type, tuple(weight.shape),
                              1.0 - np.count_nonzero(weight) / weight.size, tuple(matrix.shape)))
    return out


def prune_matrix(matrix: np.ndarray, sparsity: float, block: tuple[int, int], norm: str = "l2") -> np.ndarray:
    """``matrix`` (rows x cols, both divisible by ``block``) with the ``sparsity`` fraction of
    its blocks of least magnitude set to zero (ties: the earlier block goes first)."""
    rows, cols = matrix.shape
    br, bc = block
    blocks = matrix.reshape(rows // br, br, cols // bc, bc)
    mags = np.abs(blocks) if norm == "l1" else np.square(blocks.astype("float64"))
    mags = mags.sum(axis=(1, 3)).ravel()
    n_zero = int(round(sparsity * mags.size))
    keep = np.ones(mags.size, bool)
    keep[np.argsort(mags, kind="stable")[:n_zero]] = False
    keep = keep.reshape(rows // br, 1, cols // bc, 1)
    return (blocks * keep).reshape(rows, cols).astype(matrix.dtype)


def prune_proto(source: onnx.ModelProto, sparsity: float, block: tuple[int, int] = (1, 1),
                norm: str = "l2") -> tuple[onnx.ModelProto, list[tuple[WeightInfo, float]]]:
    """A pruned copy of ``source``; (weight, new sparsity) for each pruned weight."""
    proto = onnx.ModelProto()
    proto.CopyFrom(source)
    weights = list(_weights(proto))
    if not weights:
        raise AccelcError("the model has no MatMul/Gemm/Conv weight initializers to prune")
    bad = []
    for node, init in weights:
        matrix_shape = _as_matrix(node.op_type, np.empty(tuple(init.dims), "int8"), _trans_b(node)).shape
        if matrix_shape[0] % block[0] or matrix_shape[1] % block[1]:
            bad.append(f"{init.name} ({matrix_shape[0]}x{matrix_shape[1]})")
    if bad:
        raise AccelcError(
            f"block {block[0]}x{block[1]} does not divide weight {', '.join(bad[:3])}"
            f"{' and %d more' % (len(bad) - 3) if len(bad) > 3 else ''} (output channels x input features)")
    report = []
    for node, init in weights:
        weight = numpy_helper.to_array(init)
        trans_b = _trans_b(node)
        matrix = _as_matrix(node.op_type, weight, trans_b)
        pruned = prune_matrix(matrix, sparsity, block, norm)
        if node.op_type == "Conv":
            new = pruned.reshape(weight.shape)
        elif node.op_type == "Gemm" and trans_b:
            new = pruned
        else:
            new = np.ascontiguousarray(pruned.T)
        before = 1.0 - np.count_nonzero(weight) / weight.size
        init.CopyFrom(numpy_helper.from_array(new, init.name))
        report.append((WeightInfo(init.name, node.op_type, tuple(weight.shape), before, matrix.shape),
                       1.0 - np.count_nonzero(new) / new.size))
    return proto, report


def prune(opts: PruneOptions, out=None) -> tuple[Path, list[tuple[WeightInfo, float]]]:
    """Write the pruned model; return its path and (weight, new sparsity) pairs."""
    import sys

    from .frontend import load_onnx
    from accelc.passes.sparse_rewrite import parse_block

    sparsity = check_sparsity(opts.sparsity)
    block = parse_block(opts.block) if opts.block is not None else (1, 1)
    if opts.norm not in NORMS:
        raise AccelcError(f"--norm must be one of {', '.join(NORMS)}, got {opts.norm!r}")
    proto, report = prune_proto(load_onnx(opts.model), sparsity, block, opts.norm)
    model = Path(opts.model) if not isinstance(opts.model, onnx.ModelProto) else Path("model.onnx")
    output = Path(opts.output) if opts.output else model.with_name(model.stem + ".sparse.onnx")
    if output.is_dir():
        raise AccelcError(f"output path is a directory: {output}")
    output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(output))
    stream = out or sys.stdout
    print(f"pruned {len(report)} weights of {opts.model} to {sparsity:.0%} sparsity "
          f"(block {block[0]}x{block[1]}, {opts.norm} magnitude) -> {output}", file=stream)
    for info, after in report:
        print(f"  {info.name:<32s}{info.op_type:<8s}{'x'.join(map(str, info.shape)):>16s}"
              f"  {info.sparsity:6.1%} -> {after:6.1%}", file=stream)
    return output, report


def sparse_report(model, input_shapes: dict | None, threshold: float, block=None) -> str:
    """``accelc inspect --sparse``: each weight's sparsity and what ``SparseRewrite`` rewrites
    at ``threshold`` (runs the import and phases 1-2 of the pipeline)."""
    import tvm

    from accelc.passes.sparse_rewrite import SparseRewrite, check_options

    from .frontend import import_onnx
    from .pipeline import PipelineOptions, phase1_import_cleanup, phase2_graph_passes

    threshold, block = check_options(threshold, block)
    weights = weight_sparsity(model)
    imported = import_onnx(model, input_shapes)
    rewrite = SparseRewrite(threshold, block)
    opts = PipelineOptions(opt_level=3)
    with tvm.transform.PassContext(opt_level=3):
        mod = tvm.transform.Sequential(phase1_import_cleanup(opts) + phase2_graph_passes(opts))(imported.mod)
        rewrite(mod)
    shown = threshold if isinstance(threshold, str) else f"{threshold:g}"
    lines = [f"weights (MatMul/Gemm/Conv): {len(weights)}; sparse rewrite at threshold {shown}: "
             f"{rewrite.num_rewrites} op(s)"]
    claimed = list(rewrite.rewritten)
    for info in weights:
        match = next((r for r in claimed if _same_weight(r, info)), None)
        if match is not None:
            claimed.remove(match)
            what = f"-> {match.kind} BSR {match.block[0]}x{match.block[1]} ({match.kernel})"
        elif info.sparsity >= (0.8 if isinstance(threshold, str) else threshold) and info.sparsity > 0:
            what = "kept dense (op not covered, or below its block's break-even)"
        else:
            what = "dense"
        lines.append(f"  {info.name:<32s}{info.op_type:<8s}{'x'.join(map(str, info.shape)):>16s}"
                     f"  {info.sparsity:6.1%}  {what}")
    for shape, why in rewrite.skipped:
        lines.append(f"  kept dense: weight {'x'.join(map(str, shape))}: {why}")
    return "\n".join(lines)


def _same_weight(rewrite, info: WeightInfo) -> bool:
    if abs(rewrite.sparsity - info.sparsity) > 1e-3:
        return False
    if rewrite.kind == "conv2d_1x1":
        return info.op_type == "Conv" and tuple(rewrite.weight_shape) == info.shape
    return info.op_type in ("MatMul", "Gemm") and tuple(rewrite.weight_shape) == (info.matrix[1], info.matrix[0])
