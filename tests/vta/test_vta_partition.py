"""Partitioning for --target vta: which realized int8 chains become accelc.vta.* groups,
and, for the rest, the reason they stay on the CPU (targets/vta/patterns.py)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from accelc.passes.fuse_target_patterns import FuseTargetPatterns
from accelc.quantize.fixed_point import rounding_half
from accelc.targets.vta import patterns as P
from accelc.targets.vta.offload import cpu_layers

RNG = np.random.default_rng(0)


def _chain(kind="conv2d", *, groups=1, dtype="int8", bias=True, relu=True, shift=(3, 4), multiplier=False,
           half=None, dilation=1, extra_use=False):
    """main(x) = the realized int8 layer (QuantizeRealize(requantize=shift)'s form)."""
    oc = len(shift)
    bb = relax.BlockBuilder()
    if kind == "conv2d":
        x = relax.Var("x", relax.TensorType((1, 4, 6, 6), dtype))
        w = relax.const(RNG.integers(-5, 5, (oc, 4 // groups, 3, 3)).astype(dtype))
        axis_shape = (1, oc, 1, 1)
    else:
        x = relax.Var("x", relax.TensorType((2, 8), dtype))
        w = relax.const(RNG.integers(-5, 5, (8, oc)).astype(dtype))
        axis_shape = (1, oc)
    out_dtype = "int32" if dtype == "int8" else dtype
    with bb.function("main", [x]):
        with bb.dataflow():
            if kind == "conv2d":
                acc = bb.emit(relax.op.nn.conv2d(x, w, padding=[1, 1, 1, 1], groups=groups,
                                                 dilation=[dilation, dilation], out_dtype=out_dtype))
            else:
                acc = bb.emit(relax.op.matmul(x, w, out_dtype=out_dtype))
            if dtype != "int8":
                out = bb.emit_output(relax.op.nn.relu(acc))
            else:
                if bias:
                    acc = bb.emit(relax.op.add(acc, relax.const(RNG.integers(-99, 99, axis_shape).astype("int32"))))
                if relu:
                    acc = bb.emit(relax.op.nn.relu(acc))
                y = bb.emit(relax.op.astype(acc, "int64"))
                if multiplier:
                    y = bb.emit(relax.op.multiply(y, relax.const(np.full(axis_shape, 1 << 30, "int64"), "int64")))
                s = np.array(shift, np.int64).reshape(axis_shape)
                h = rounding_half(s) if half is None else np.full(axis_shape, half, np.int64)
                y = bb.emit(relax.op.right_shift(relax.op.add(y, relax.const(h, "int64")), relax.const(s, "int64")))
                y = bb.emit(relax.op.astype(relax.op.clip(y, -128, 127), "int8"))
                if extra_use:  # the int32 accumulator is also read outside the layer
                    f = bb.emit(relax.op.astype(acc, "float32"))
                    out = bb.emit_output(relax.Tuple([y, f]))
                else:
                    out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def _partition(mod):
    p = FuseTargetPatterns("vta")
    return p(mod), p.num_rewrites


def _ops(func) -> list[str]:
    ops = []

    def visit(e):
        if isinstance(e, relax.Call):
            ops.append(e.op.name if isinstance(e.op, tvm.ir.Op) else "call " + str(e.op.name_hint))

    relax.analysis.post_order_visit(func, visit)
    return ops


def _group(mod):
    groups = [(g, f) for g, f in mod.functions_items() if f.attrs is not None and "Composite" in f.attrs]
    assert len(groups) == 1
    return groups[0]


@pytest.mark.parametrize("kind,name", [("conv2d", P.CONV2D), ("dense", P.DENSE)])
def test_layer_chain_becomes_one_group(kind, name):
    out, rewrites = _partition(_chain(kind))
    assert rewrites == 1
    gv, func = _group(out)
    assert func.attrs["Composite"] == name
    root = "relax.nn.conv2d" if kind == "conv2d" else "relax.matmul"
    # golden: the whole chain is inside the group, main only calls it
    assert _ops(func) == [root, "relax.add", "relax.nn.relu", "relax.astype", "relax.add",
                          "relax.right_shift", "relax.clip", "relax.astype"]
    assert _ops(out["main"]) == [f"call {gv.name_hint}"]


def test_variants_without_bias_relu_or_shift():
    out, rewrites = _partition(_chain(bias=False, relu=False))
    assert rewrites == 1
    assert _ops(_group(out)[1])[:2] == ["relax.nn.conv2d", "relax.astype"]


@pytest.mark.parametrize(
    "kwargs,reason",
    [
        (dict(groups=2), "grouped conv2d (groups=2)"),
        (dict(dilation=2), "dilated conv2d"),
        (dict(dtype="float32"), "float32 conv2d, not quantized"),
        (dict(multiplier=True), "--requantize shift"),
        (dict(half=1), "not half of the shift"),
        (dict(shift=(3, 40)), "shift outside 0..30"),
        (dict(extra_use=True), "2 consumers"),
    ],
)
def test_unsupported_layers_stay_on_cpu_with_a_reason(kwargs, reason):
    out, rewrites = _partition(_chain(**kwargs))
    assert rewrites == 0
    assert not [f for _, f in out.functions_items() if f.attrs is not None and "Composite" in f.attrs]
    (layer,) = cpu_layers(out["main"])
    assert layer["where"] == "cpu" and reason in layer["reason"], layer


def test_layer_params_read_off_the_chain():
    mod = _chain(shift=(3, 0))
    out, _ = _partition(mod)
    from accelc.targets.vta.offload import _matched

    gv, func = _group(out)
    call = next(b.value for b in out["main"].body.blocks[0].bindings if isinstance(b.value, relax.Call))
    params = P.layer_params(P.CONV2D, _matched(P.CONV2D, func, call.args))
    assert params.kind == "conv2d" and params.relu and params.padding == (1, 1, 1, 1)
    assert params.shift.tolist() == [3, 0] and params.bias.dtype == np.int32 and params.bias.shape == (2,)
    assert params.weight.shape == (2, 4, 3, 3) and params.out_shape == (1, 2, 6, 6)


@pytest.mark.parametrize("kind", ["conv2d", "dense"])
def test_offload_replaces_the_group_with_a_call_to_the_simulator(kind, cfg):
    from accelc.targets.vta.layer import reference_layer
    from accelc.targets.vta.offload import VTAOffload, layer_spec, layer_weight
    from accelc.targets.vta.runtime import RUN_LAYER, _decode, register, run_layer_packed

    grouped, _ = _partition(_chain(kind, shift=(3, 0)))
    gv, func = _group(grouped)
    offload = VTAOffload(cfg)
    out = offload(grouped)
    assert offload.num_offloaded == 1 and [r["where"] for r in offload.layers] == ["vta"]
    assert gv.name_hint not in [g.name_hint for g in out.get_global_vars()]  # the group is gone
    # golden: main is one call_dps_packed of accelc.vta.run_layer(x, blob)
    (call,) = [b.value for blk in out["main"].body.blocks for b in blk.bindings if isinstance(b.value, relax.Call)]
    assert call.op.name == "relax.call_dps_packed" and str(call.args[0].global_symbol) == RUN_LAYER
    x, blob = call.args[1].fields
    assert x.same_as(out["main"].params[0]) and str(blob.ty.dtype) == "uint8"
    # the blob runs the layer the group computed
    from accelc.targets.vta.offload import _matched

    main_call = next(b.value for blk in grouped["main"].body.blocks for b in blk.bindings)
    params = P.layer_params(P.CONV2D if kind == "conv2d" else P.DENSE, _matched(func.attrs["Composite"], func, main_call.args))
    spec = layer_spec(params)
    data = np.random.default_rng(3).integers(-128, 128, spec.input_shape).astype(np.int8)
    result = tvm.runtime.empty(spec.output_shape, "int8")
    register()
    run_layer_packed(tvm.runtime.tensor(data), tvm.runtime.tensor(blob.value.numpy()), result)
    expect = reference_layer(spec, data, layer_weight(params), params.bias, params.shift)
    np.testing.assert_array_equal(result.numpy(), expect)
    assert _decode(blob.value.numpy()).name == f"vta.{kind}_0"


def test_skip_layers_keep_a_conv_on_the_cpu_with_the_reason(cfg):
    from accelc.errors import TargetError
    from accelc.targets.vta.backend import parse_skip_layers
    from accelc.targets.vta.offload import VTAOffload

    grouped, _ = _partition(_chain("conv2d"))
    offload = VTAOffload(cfg, skip_layers=(0,))
    out = offload(grouped)
    assert offload.num_offloaded == 0
    # the group is inlined back: main holds the plain conv2d chain, no call of a Relax function
    calls = [b.value for blk in out["main"].body.blocks for b in blk.bindings if isinstance(b.value, relax.Call)]
    assert not any(isinstance(c.op, relax.GlobalVar) for c in calls)
    assert [c.op.name for c in calls][0] == "relax.nn.conv2d" and len(calls) == 8
    assert sorted(g.name_hint for g in out.get_global_vars()) == ["accelc_vta_layers", "main"]
    (row,) = offload.layers
    assert row["where"] == "cpu" and row["skipped"]
    assert row["reason"] == ("conv2d layer 0 kept on the CPU by vta-skip-layers=0 "
                             "(its 4 input channels would fill 4 of VTA's 16 GEMM lanes)")
    # a TargetError in accelc's pipeline (exit 2); called bare, the pass's FFI frame re-raises it as RuntimeError
    with pytest.raises((TargetError, RuntimeError), match="the model has 1 conv2d layer"):
        VTAOffload(cfg, skip_layers=(0, 2), check_skip_layers=True)(grouped)
    assert parse_skip_layers("2, 0") == (0, 2) and parse_skip_layers("none") == parse_skip_layers([]) == ()
    with pytest.raises(TargetError, match="expected conv2d layer indices"):
        parse_skip_layers("-1")
