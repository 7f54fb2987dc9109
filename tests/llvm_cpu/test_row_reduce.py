"""Numeric + rule-fired tests of RowReduce (softmax and LayerNorm rows, with what FuseOps
fuses into them) through accelc's CPU phases."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from accelc.targets import llvm_cpu as cpu
from accelc.targets.llvm_cpu.reduce import RowReduce

RTOL = 1e-4
TARGET = cpu.host_target(2)


def _compile(build, shape):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(build(x))
        bb.emit_func_output(out)
    passes = [*cpu.layout_passes(TARGET), relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
              relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR()]
    sched = cpu.schedule_passes(TARGET)
    with TARGET:
        mod = tvm.transform.Sequential(passes + sched)(bb.get())
    return relax.VirtualMachine(tvm.compile(mod, TARGET), tvm.cpu()), sched[0]


def _close(out, ref):
    np.testing.assert_allclose(out, ref, rtol=RTOL, atol=RTOL * np.abs(ref).max())


@pytest.mark.parametrize("shape", [(1, 12, 128, 128), (3, 5, 37)])
def test_softmax_rows(shape):
    vm, sched = _compile(lambda x: relax.op.nn.softmax(x, axis=-1), shape)
    assert sched.fired == {"RowReduce": 1}, (sched.fired, sched.failed)
    x = np.random.default_rng(0).standard_normal(shape).astype("float32") * 4
    e = np.exp(x - x.max(-1, keepdims=True))
    _close(vm["main"](tvm.runtime.tensor(x)).numpy(), e / e.sum(-1, keepdims=True))


@pytest.mark.parametrize("shape", [(1, 128, 768), (2, 7, 20)])
def test_layer_norm_rows(shape):
    rng = np.random.default_rng(1)
    gamma = rng.standard_normal(shape[-1]).astype("float32")
    beta = rng.standard_normal(shape[-1]).astype("float32")
    vm, sched = _compile(
        lambda x: relax.op.nn.layer_norm(x, relax.const(gamma), relax.const(beta), axes=[-1], epsilon=1e-5), shape)
    assert sched.fired == {"RowReduce": 1}, (sched.fired, sched.failed)
    x = rng.standard_normal(shape).astype("float32") * 2 + 1
    mean = x.mean(-1, keepdims=True)
    ref = (x - mean) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * gamma + beta
    _close(vm["main"](tvm.runtime.tensor(x)).numpy(), ref)


def test_not_a_row_reduction_is_left_alone():
    """Sum over all but the first axis (several reduced axes): not rows, no match."""
    from tvm import te

    a = te.placeholder((4, 8, 16), name="A")
    k1, k2 = te.reduce_axis((0, 8), "k1"), te.reduce_axis((0, 16), "k2")
    s = te.compute((4,), lambda i: te.sum(a[i, k1, k2], axis=[k1, k2]), name="S")
    o = te.compute((4, 8, 16), lambda i, j, l: a[i, j, l] / s[i], name="O")
    assert RowReduce().apply(te.create_prim_func([a, o]), TARGET, False) is None


@pytest.mark.parametrize("shape, partials", [((1, 12, 128, 128), 2), ((1, 128, 768), 2), ((3, 5, 37), 0)])
def test_rows_reduce_into_vector_lane_partials(shape, partials):
    """Rows whose length is a multiple of the vector reduce through an rfactor block of
    ``lanes`` partials, vectorized and computed inside the row loop; other rows stay scalar.
    Softmax: max and sum; LayerNorm: mean and variance (both numerics are checked above)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    n = shape[-1]
    with bb.function("main", [x]):
        with bb.dataflow():
            if len(shape) == 4 or n == 37:
                y = relax.op.nn.softmax(x, axis=-1)
            else:
                y = relax.op.nn.layer_norm(x, relax.const(np.ones(n, "float32")), relax.const(np.zeros(n, "float32")),
                                           axes=[-1])
            out = bb.emit_output(bb.emit(y))
        bb.emit_func_output(out)
    mod = relax.transform.LegalizeOps()(bb.get())
    func = next(f for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc))
    sch = RowReduce().apply(func, TARGET, False)
    assert sch is not None
    text = sch.mod.script()
    lanes = cpu.config_from_target(TARGET).vector_lanes
    assert text.count('_rf_update"') == partials
    if partials:
        assert f"T.vectorized(T.int64({lanes}))" in text
        assert text.count("T.parallel(") == 1  # the partials live inside the one row loop
