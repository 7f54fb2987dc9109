"""Numeric + rule-fired tests of the CPU rules for attention and MobileNet-style blocks:
BatchMatmul (Q @ K^T, P @ V with the scale epilogue), ScalarClampToRelax (ONNX Clip ->
packed-layout ReLU6 fused into the conv), 3-D dense fused with its GELU epilogue, and the
vectorized fast erf."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from accelc.targets import llvm_cpu as cpu
from accelc.targets.llvm_cpu.batch_matmul import BatchMatmul, matmul_tile
from accelc.targets.llvm_cpu.config import CpuScheduleConfig
from accelc.targets.llvm_cpu.scalar_clamp_to_relax import ScalarClampToRelax

RTOL = 1e-4
TARGET = cpu.host_target(2)


def _lower(mod):
    passes = [relax.transform.FoldConstant(), *cpu.layout_passes(TARGET), relax.transform.FoldConstant(),
              relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
              relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR()]
    sched = cpu.schedule_passes(TARGET)
    with TARGET:
        mod = tvm.transform.Sequential(passes + sched)(mod)
    rules = {g.name_hint: str(f.attrs["accelc.schedule_rule"]) for g, f in mod.functions_items()
             if isinstance(f, tvm.tirx.PrimFunc) and f.attrs and "accelc.schedule_rule" in f.attrs}
    return mod, sched[0], rules


def _run(mod, inputs):
    vm = relax.VirtualMachine(tvm.compile(mod, TARGET), tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in inputs]).numpy()


def _close(out, ref):
    np.testing.assert_allclose(out, ref, rtol=RTOL, atol=RTOL * np.abs(ref).max())


@pytest.mark.parametrize("ashape,bshape", [
    ((1, 12, 128, 64), (1, 12, 64, 128)),  # BERT-base scores Q @ K^T (K^T materialized)
    ((1, 12, 128, 128), (1, 12, 128, 64)),  # P @ V
    ((3, 10, 24), (3, 24, 48)),  # 3-D, rows not a multiple of the tile
    ((2, 1, 7, 16), (1, 3, 16, 32)),  # broadcast batch axes
])
def test_batch_matmul_scaled(ashape, bshape):
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType(ashape, "float32"))
    b = relax.Var("b", relax.TensorType(bshape, "float32"))
    with bb.function("main", [a, b]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.divide(relax.op.matmul(a, b), relax.const(8.0, "float32")))
        bb.emit_func_output(out)
    mod, sched, rules = _lower(bb.get())
    assert sched.fired.get("BatchMatmul") == 1, (sched.fired, sched.failed)
    fused = [n for n, r in rules.items() if r == "BatchMatmul"]
    assert fused and "divide" in fused[0], rules  # the scale runs in the matmul's epilogue
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(ashape).astype("float32"), rng.standard_normal(bshape).astype("float32")
    _close(_run(mod, [x, y]), np.matmul(x, y) / 8.0)


def test_batch_matmul_tile_follows_vector_width():
    avx2 = CpuScheduleConfig(vector_lanes=8, num_vector_regs=16, dense_max_accum=10)
    avx512 = CpuScheduleConfig(vector_lanes=16, num_vector_regs=32, dense_max_accum=24)
    assert matmul_tile(128, 128, avx2) == (4, 16)  # 4 rows x 2 ymm = 8 of 10 accumulators
    assert matmul_tile(128, 128, avx512)[1] == 32
    assert matmul_tile(128, 64, avx512) == (8, 32)  # 8 rows x 2 zmm = 16 of 24 accumulators
    assert matmul_tile(10, 12, avx2) is None  # no whole vector: left to the generic rule


def test_transposed_operand_materialized_then_batch_matmul():
    """A @ B^T: FuseOps keeps the transpose as its own (generic) kernel, so the matmul reads
    B contiguous in j and BatchMatmul schedules it."""
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType((4, 16, 32), "float32"))
    b = relax.Var("b", relax.TensorType((4, 16, 32), "float32"))
    with bb.function("main", [a, b]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.matmul(a, relax.op.permute_dims(b, [0, 2, 1])))
        bb.emit_func_output(out)
    mod, sched, _ = _lower(bb.get())
    assert sched.fired == {"BatchMatmul": 1, "GenericCpu": 1}, sched.fired
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((4, 16, 32)).astype("float32"), rng.standard_normal((4, 16, 32)).astype("float32")
    _close(_run(mod, [x, y]), np.matmul(x, y.transpose(0, 2, 1)))


def _onnx_conv_relu6(c: int, depthwise: bool, stride: int, residual: bool, h: int = 14):
    rng = np.random.default_rng(2)
    groups = c if depthwise else 1
    w = rng.standard_normal((c, c // groups, 3, 3)).astype("float32") * 0.3
    b = rng.standard_normal(c).astype("float32")
    nodes = [
        helper.make_node("Constant", [], ["lo"], value=numpy_helper.from_array(np.array(0.0, np.float32))),
        helper.make_node("Constant", [], ["hi"], value=numpy_helper.from_array(np.array(6.0, np.float32))),
        helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3], strides=[stride] * 2,
                         pads=[1] * 4, group=groups),
        helper.make_node("Clip", ["y", "lo", "hi"], ["z"]),
    ]
    out = "z"
    if residual:
        nodes.append(helper.make_node("Add", ["z", "x"], ["r"]))
        out = "r"
    oh = (h + 2 - 3) // stride + 1
    graph = helper.make_graph(
        nodes, "conv_relu6", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, h])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, c, oh, oh])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("depthwise,stride,residual,width", [
    (True, 1, False, 14), (True, 2, False, 14), (True, 2, False, 15),  # 15: odd width, padded tile + crop
    (True, 1, True, 29), (False, 1, True, 14),
])
def test_relu6_fuses_into_packed_conv(depthwise, stride, residual, width):
    import onnxruntime as ort

    from accelc.frontend import import_onnx

    model = _onnx_conv_relu6(32, depthwise, stride, residual, width)
    mod = import_onnx(model, None).mod
    clamp = ScalarClampToRelax()
    with TARGET:
        mod = tvm.transform.Sequential([relax.transform.FoldConstant()])(mod)
        clamp(mod)
    assert clamp.rewrites == 2  # max(x, 0) and min(x, 6)
    mod, sched, rules = _lower(mod)
    rule = "DepthwiseConv2dNCHWc" if depthwise else "Conv2dNCHWc"
    assert sched.fired.get(rule) == 1, sched.fired
    conv = [n for n, r in rules.items() if r == rule][0]
    assert "maximum" in conv and "minimum" in conv, rules  # ReLU6 is the conv's epilogue
    # only the model's input/output layout changes remain (none around the ReLU6)
    assert sum("layout_transform" in n for n in rules) <= 2, rules
    x = np.random.default_rng(3).standard_normal((1, 32, width, width)).astype("float32") * 3
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    _close(_run(mod, [x]), ref)


def test_dense_3d_fuses_gelu_epilogue():
    """(1, rows, K) x W: the packed dense runs on the 3-D activation and the bias + erf GELU
    is its epilogue (no reshape between them); erf is the vectorizable polynomial."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((64, 96)).astype("float32") * 0.1
    bias = rng.standard_normal(96).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 20, 64), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = relax.op.add(relax.op.matmul(x, relax.const(w)), relax.const(bias))
            g = relax.op.multiply(relax.op.multiply(y, relax.const(0.5, "float32")),
                                  relax.op.add(relax.op.erf(relax.op.divide(y, relax.const(np.float32(np.sqrt(2))))),
                                               relax.const(1.0, "float32")))
            out = bb.emit_output(g)
        bb.emit_func_output(out)
    mod, sched, rules = _lower(bb.get())
    dense = [n for n, r in rules.items() if r == "DensePacked"]
    assert len(dense) == 1 and "erf" in dense[0] and "add" in dense[0], rules
    assert len(rules) == 1, rules  # nothing left outside the dense kernel
    xv = rng.standard_normal((1, 20, 64)).astype("float32")
    from math import erf

    yv = xv @ w + bias
    ref = 0.5 * yv * (1 + np.vectorize(erf)(yv / np.sqrt(2)).astype("float32"))
    _close(_run(mod, [xv]), ref)
    asm = tvm.compile(tvm.IRModule({"main": mod[dense[0]].with_attr("global_symbol", "main")}), TARGET)
    text = asm.mod.inspect_source("asm") if hasattr(asm, "mod") else asm.inspect_source("asm")
    assert "erff" not in text  # no scalar libm call per lane


def test_operand_not_contiguous_in_j_is_not_matched():
    """C[i, j] += A[i, k] * B[j, k] does not match: the rule vectorizes B's loads over j."""
    from tvm import s_tir, te

    from accelc.targets.llvm_cpu.batch_matmul import match_batch_matmul

    a, b = te.placeholder((4, 16, 32), name="A"), te.placeholder((4, 16, 32), name="B")
    k = te.reduce_axis((0, 32), "k")
    c = te.compute((4, 16, 16), lambda n, i, j: te.sum(a[n, i, k] * b[n, j, k], axis=k), name="C")
    assert match_batch_matmul(s_tir.Schedule(te.create_prim_func([a, b, c]))) is None
    assert BatchMatmul().apply(te.create_prim_func([a, b, c]), TARGET, False) is None
