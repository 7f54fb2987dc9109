"""Fusion: what FuseOps already does, the target pattern registry, and the fusion report."""

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from accelc.passes.fuse_target_patterns import FuseTargetPatterns
from accelc.targets.fusion_patterns import patterns_for, register_patterns, standard_patterns

W = np.random.default_rng(0).standard_normal((8, 8, 3, 3)).astype("float32")
BC = np.ones((1, 8, 1, 1), "float32")
WM = np.ones((16, 32), "float32")
BM = np.ones((32,), "float32")


@I.ir_module
class Epilogues:
    @R.function
    def main(x: R.Tensor((1, 8, 8, 8), "float32"), r: R.Tensor((1, 8, 8, 8), "float32"), a: R.Tensor((4, 16), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, R.const(W), padding=[1, 1, 1, 1])
            y = R.nn.relu(R.add(R.add(c, R.const(BC)), r))  # conv + bias + residual + relu
            c2 = R.nn.conv2d(y, R.const(W), padding=[1, 1, 1, 1])
            z = R.clip(R.add(c2, R.const(BC)), 0, 6)  # relu6
            s = R.sigmoid(R.nn.conv2d(z, R.const(W), padding=[1, 1, 1, 1]))
            t = R.nn.silu(R.nn.conv2d(s, R.const(W), padding=[1, 1, 1, 1]))
            g = R.nn.gelu(R.add(R.matmul(a, R.const(WM)), R.const(BM)))
            p = R.nn.max_pool2d(t, pool_size=[2, 2], strides=[2, 2])
            out = (p, g)
            R.output(out)
        return out


LOWER = [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant(),
         relax.transform.FuseOps(), relax.transform.FuseTIR()]


def _kernels(mod):
    with tvm.target.Target("llvm"):
        mod = tvm.transform.Sequential(LOWER)(mod)
    calls = [b.value for b in mod["main"].body.blocks[0].bindings if isinstance(b.value, relax.Call)]
    return [str(c.args[0].name_hint) for c in calls if c.op.same_as(tvm.ir.Op.get("relax.call_tir"))]


def test_fuseops_already_fuses_every_epilogue():
    # The finding behind FuseTargetPatterns staying out of the llvm pipeline: TVM's FuseOps
    # alone makes one kernel per conv/matmul with its whole epilogue.
    kernels = _kernels(Epilogues)
    assert kernels == [
        "fused_conv2d_add_add1_relu", "fused_conv2d_add_tir_clip", "fused_conv2d_tir_sigmoid",
        "fused_conv2d_silu", "fused_matmul_add2_gelu", "max_pool2d",
    ]


def test_target_patterns_make_named_groups_and_same_kernels():
    p = FuseTargetPatterns("llvm")
    grouped = p(Epilogues)
    assert p.num_rewrites == 5
    composites = sorted(str(f.attrs["Composite"]) for g, f in grouped.functions.items() if f.attrs and "Composite" in f.attrs)
    assert composites == [
        "accelc.llvm.conv2d_bias_add_relu", "accelc.llvm.conv2d_bias_relu6", "accelc.llvm.conv2d_sigmoid",
        "accelc.llvm.conv2d_silu", "accelc.llvm.matmul_bias_gelu",
    ]
    assert len(_kernels(grouped)) == len(_kernels(Epilogues))
    x, r, a = (np.random.default_rng(1).standard_normal(s).astype("float32") for s in ((1, 8, 8, 8), (1, 8, 8, 8), (4, 16)))
    outs = []
    for mod in (Epilogues, grouped):
        vm = relax.VirtualMachine(tvm.compile(mod, "llvm"), tvm.cpu())
        outs.append([o.numpy() for o in vm["main"](*(tvm.runtime.tensor(v) for v in (x, r, a)))])
    for got, ref in zip(*outs):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_pattern_names_carry_the_target_prefix():
    assert all(name.startswith("accelc.llvm.") for name, _ in patterns_for("llvm"))
    with pytest.raises(ValueError, match="accelc.vta."):
        register_patterns("vta", standard_patterns("llvm"))
    assert patterns_for("no-such-target") == ()


def test_fusion_report_on_digits_model():
    from accelc.fusion_report import fusion_report
    from accelc.models import default_model_path

    report = fusion_report(str(default_model_path()), {"input": [1, 1, 8, 8]}, opt_level=2)
    text = report.format()
    convs = [k for k in report.kernels if any(op.startswith("conv2d") for op in k.ops)]
    assert len(convs) == 3 and all("relu" in k.ops for k in convs)  # conv + bias + relu each
    assert all("batch_norm" not in op for k in report.kernels for op in k.ops)  # folded away
    assert "max_pool2d" in text and "not fused" in text
