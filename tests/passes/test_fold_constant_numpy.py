"""FoldConstantNumpy folds what relax FoldConstant folds, bit for bit, without building kernels."""

from __future__ import annotations

import os
import sys

import numpy as np


import tvm  # noqa: E402
from tvm import relax, tirx  # noqa: E402

from accelc.passes.fold_constant_numpy import FoldConstantNumpy  # noqa: E402


def _consts(mod):
    found = []
    relax.analysis.post_order_visit(
        mod["main"],
        lambda e: found.append(e.value.numpy()) if isinstance(e, tvm.ir.expr.Constant) and hasattr(e.value, "numpy") else None,
    )
    return found


def _fold_value(build):
    """Fold ``build(bb)`` (a constant expression returned as the output) both ways."""
    bb = relax.BlockBuilder()
    with bb.function("main", []):
        with bb.dataflow():
            out = bb.emit_output(build(bb))
        bb.emit_func_output(out)
    mod = bb.get()
    fold = FoldConstantNumpy()
    ours = fold(mod)
    with tvm.target.Target({"kind": "llvm"}):
        ref = relax.transform.FoldConstant()(mod)
    (a,), (b,) = _consts(ours), _consts(ref)
    return a, b, fold.folded


def test_layout_transform_with_padding_equals_fold_constant():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((20, 12, 3, 3)).astype("float32")
    scale = rng.standard_normal((20, 1, 1, 1)).astype("float32")
    pack = tirx.IndexMap.from_func(lambda o, i, h, kw: [o // 8, i // 4, h, kw, i % 4, o % 8])

    def build(bb):
        ws = bb.emit(relax.op.multiply(relax.const(w), relax.const(scale)))
        return bb.emit(relax.op.layout_transform(ws, pack, pad_value=0.0))

    ours, ref, folded = _fold_value(build)
    assert folded == 2
    assert ours.shape == ref.shape == (3, 3, 3, 3, 4, 8)
    np.testing.assert_array_equal(ours, ref)


def test_importer_weight_forms_equal_fold_constant():
    # ConstantOfShape fills (broadcast_to) and decomposed batch-norm arithmetic
    var = np.abs(np.random.default_rng(1).standard_normal(16)).astype("float32")

    def build(bb):
        fill = bb.emit(relax.op.broadcast_to(relax.const(np.float32(0.5)), (16, 8)))
        inv = bb.emit(relax.op.divide(relax.const(np.float32(1.0)),
                                      relax.op.sqrt(relax.op.add(relax.const(var), relax.const(np.float32(1e-5))))))
        col = bb.emit(relax.op.expand_dims(inv, axis=[1]))
        scaled = bb.emit(relax.op.subtract(relax.op.multiply(fill, col), relax.const(np.float32(0.25))))
        return bb.emit(relax.op.permute_dims(relax.op.reshape(scaled, (8, 16)), [1, 0]))

    ours, ref, folded = _fold_value(build)
    assert folded == 9
    np.testing.assert_array_equal(ours, ref)


def test_integer_arithmetic_is_left_to_fold_constant():
    def build(bb):
        return bb.emit(relax.op.divide(relax.const(np.array([7, -7], "int32")), relax.const(np.int32(2))))

    bb = relax.BlockBuilder()
    with bb.function("main", []):
        with bb.dataflow():
            out = bb.emit_output(build(bb))
        bb.emit_func_output(out)
    fold = FoldConstantNumpy()
    fold(bb.get())
    assert fold.folded == 0
