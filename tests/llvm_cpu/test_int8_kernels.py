"""int8 CPU kernels (targets/llvm_cpu/int8.py): bit-exactness and the instructions they compile to.

Each case is the integer graph QuantizeRealize produces (int8 conv2d/matmul -> int32, bias,
relu, fixed-point requantize in int64 -> int8) with seeded random int8 data. Outputs of the
tensorized kernels must equal (1) the generic-schedule build of the same graph and (2) the numpy
integer reference (``requantize_reference``), for the AVX-512-VNNI, AVX-VNNI (256-bit) and
AVX2-only (``mcpu=haswell``) dot products; this machine executes all three. The assembly tests
grep the generated code for ``vpdpbusd`` / ``vpmaddubsw``.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.target import codegen

from accelc.quantize.fixed_point import fixed_point_multiplier, requantize_reference
from accelc.targets import llvm_cpu as cpu
from accelc.targets.llvm_cpu import int8

HOST = codegen.llvm_get_system_cpu()
TARGETS = {
    "avx512vnni": {"kind": "llvm", "mcpu": HOST, "num-cores": 2},
    "avxvnni": {"kind": "llvm", "mcpu": "alderlake", "num-cores": 2},
    "avx2": {"kind": "llvm", "mcpu": "haswell", "num-cores": 2},
}
EXPECTED_KIND = {"avx512vnni": int8.VNNI512, "avxvnni": int8.VNNI256, "avx2": int8.AVX2}


def _host_runs(name: str) -> bool:
    flags = open("/proc/cpuinfo").read()
    need = {"avx512vnni": "avx512_vnni", "avxvnni": "avx_vnni", "avx2": "avx2"}[name]
    return f" {need}" in flags


def _int8_graph(x_shape, w, bias, m0, shift, conv=None):
    """x int8 -> conv2d (attrs ``conv``) or matmul by constant w -> int32 + bias -> relu ->
    requantize -> int8, as QuantizeRealize writes it."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "int8"))
    axis_shape = [1, -1, 1, 1] if conv is not None else [1, -1]
    with bb.function("main", [x]):
        with bb.dataflow():
            if conv is not None:
                acc = bb.emit(relax.op.nn.conv2d(x, relax.const(w), out_dtype="int32", **conv))
            else:
                acc = bb.emit(relax.op.matmul(x, relax.const(w), out_dtype="int32"))
            acc = bb.emit(relax.op.add(acc, relax.const(bias.reshape(axis_shape), "int32")))
            acc = bb.emit(relax.op.nn.relu(acc))
            v = bb.emit(relax.op.astype(acc, "int64"))
            v = bb.emit(relax.op.multiply(v, relax.const(m0.reshape(axis_shape), "int64")))
            v = bb.emit(relax.op.add(v, relax.const((np.int64(1) << (shift - 1)).reshape(axis_shape), "int64")))
            v = bb.emit(relax.op.right_shift(v, relax.const(shift.reshape(axis_shape), "int64")))
            out = bb.emit_output(relax.op.astype(relax.op.clip(v, -128, 127), "int8"))
        bb.emit_func_output(out)
    return bb.get()


def _build(mod, target, int8_kernels: bool):
    """accelc's CPU phases; ``int8_kernels=False`` drops LegalizeInt8Ops (the generic path)."""
    target = tvm.target.Target(target)
    layout = [p for p in cpu.layout_passes(target) if int8_kernels or type(p).__name__ != "LegalizeInt8Ops"]
    sched = cpu.schedule_passes(target)
    passes = [*layout, relax.transform.FoldConstant(), relax.transform.LegalizeOps(),
              relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant(),
              relax.transform.FuseOps(), relax.transform.FuseTIR(), *sched]
    with target:
        mod = tvm.transform.Sequential(passes)(mod)
        ex = tvm.compile(mod, target)
    return ex, layout, sched[0]


def _run(ex, x):
    return relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


def _conv_ref(x, w, stride, pad, groups=1):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride][:, :, :oh, :ow]
    og = o // groups
    outs = [np.einsum("nchwij,ocij->nohw", win[:, g * cg:(g + 1) * cg], w[g * og:(g + 1) * og].astype(np.int64))
            for g in range(groups)]
    return np.concatenate(outs, axis=1)


def _case(rng, out_ch, k_total):
    w_scale = rng.uniform(0.5, 2.0, out_ch) / (127.0 * 127.0 * np.sqrt(k_total))
    m0, shift = fixed_point_multiplier(w_scale * 40.0)
    bias = rng.integers(-3000, 3000, out_ch).astype(np.int32)
    return bias, m0, shift


CONV_CASES = [  # (N, C, H, W, O, k, stride, pad, groups)
    (1, 16, 14, 14, 32, 3, 1, 1, 1),
    (1, 3, 17, 17, 24, 7, 2, 3, 1),  # stem: 3 channels (quad padding), odd O (lane padding)
    (1, 64, 9, 9, 40, 1, 1, 0, 1),
    (2, 20, 11, 13, 16, 3, 2, 1, 1),
    (1, 32, 28, 28, 64, 1, 2, 0, 1),  # 1x1 stride 2 (ResNet downsample; int16 column pairs)
    (1, 3, 28, 28, 32, 3, 2, 1, 1),  # MobileNetV2 stem: stride 2, pad 1, even width, 3 channels
    (1, 3, 28, 28, 16, 7, 2, 3, 1),  # ResNet stem: 7x7 stride 2, pad 3 (odd phase offset)
    (1, 32, 10, 10, 32, 3, 1, 1, 32),  # depthwise (rows of 10: one padded vector)
    (1, 48, 14, 14, 48, 3, 1, 1, 48),  # depthwise
    (1, 24, 14, 14, 24, 3, 2, 1, 24),  # depthwise stride 2 (rows of 7 on half vectors; int16 column pairs)
    (2, 16, 15, 13, 16, 3, 2, 0, 16),  # depthwise stride 2, no padding, odd width (byte loads), batch 2
    (2, 16, 12, 12, 16, 3, 2, 0, 16),  # depthwise stride 2, no padding, even width (int16 column pairs)
    (1, 24, 7, 7, 24, 3, 1, 1, 24),  # depthwise 7x7 (MobileNetV2's last blocks)
    (1, 16, 12, 12, 16, 5, 1, 2, 16),  # depthwise 5x5: KW > 3 stays on the multiply-add kernel
    (1, 8, 2, 2, 8, 3, 1, 1, 8),  # depthwise on rows shorter than the vector (reads clamped near the end)
    (1, 8, 3, 3, 16, 3, 1, 1, 1),  # tiny dense conv
]
# Which kernel each case gets on a VNNI target (pixel lanes where output rows fill vectors).
VNNI_KERNEL = {14: "conv2d_int8_rows", 9: "conv2d_int8", 5: "conv2d_int8", 7: "conv2d_int8_rows", 3: "conv2d_int8"}


def _params(cases, ids):
    """Every case on AVX-512-VNNI; on the other two dot products the first case by default and
    the rest under ``-m slow`` (each case is two LLVM builds)."""
    out = []
    for name in TARGETS:
        for i, case in enumerate(cases):
            marks = [pytest.mark.slow] if name != "avx512vnni" and i > 0 else []
            out.append(pytest.param(name, case, marks=marks, id=f"{name}-{ids(case)}"))
    return out


@pytest.mark.parametrize("target_name,case", _params(CONV_CASES, lambda c: "x".join(map(str, c))))
def test_conv2d_int8_bit_exact(target_name, case):
    if not _host_runs(target_name):
        pytest.skip(f"this CPU cannot execute {target_name} code")
    n, c, h, wd, o, k, stride, pad, groups = case
    rng = np.random.default_rng(sum(case))
    x = rng.integers(-128, 128, (n, c, h, wd)).astype(np.int8)
    w = rng.integers(-127, 128, (o, c // groups, k, k)).astype(np.int8)
    w[0, 0, 0, 0], x.flat[0] = -127, -128  # the extremes the AVX2 sign trick must survive
    bias, m0, shift = _case(rng, o, c // groups * k * k)
    conv = dict(strides=[stride, stride], padding=[pad, pad, pad, pad], groups=groups)
    mod = _int8_graph(x.shape, w, bias, m0, shift, conv)
    fast, layout, sched = _build(mod, TARGETS[target_name], True)
    legalize = next(p for p in layout if type(p).__name__ == "LegalizeInt8Ops")
    ow = (wd + 2 * pad - k) // stride + 1
    if groups > 1:  # KW <= 3 on AVX-512 VNNI: the taps of a kernel row in one vpdpbusd word
        kernel = "depthwise_conv2d_int8_words" if target_name == "avx512vnni" and k <= 3 else "depthwise_conv2d_int8"
    elif target_name == "avx2":
        kernel = "conv2d_int8"
    else:
        kernel = VNNI_KERNEL[ow]
    # the requantize multiplier (< 2**31) is held as int32 and widened in the kernel (vpmuldq)
    assert legalize.rewrites == {kernel: 1, "multiply_32x32": 1}
    rule = {"conv2d_int8": "Conv2dInt8", "conv2d_int8_rows": "Conv2dInt8Rows",
            "depthwise_conv2d_int8": "DepthwiseInt8Lanes", "depthwise_conv2d_int8_words": "DepthwiseInt8Lanes"}[kernel]
    assert sched.fired.get(rule) == 1, (sched.fired, sched.failed)
    acc = _conv_ref(x, w, stride, pad, groups) + bias.reshape(1, -1, 1, 1)
    ref = requantize_reference(np.maximum(acc, 0), m0.reshape(1, -1, 1, 1), shift.reshape(1, -1, 1, 1))
    got = _run(fast, x)
    np.testing.assert_array_equal(got, ref)
    generic, _, _ = _build(mod, TARGETS[target_name], False)
    np.testing.assert_array_equal(got, _run(generic, x))


@pytest.mark.parametrize("target_name,shape", _params([(5, 70, 24), (1, 2048, 1000)], str))
def test_dense_int8_bit_exact(target_name, shape):
    if not _host_runs(target_name):
        pytest.skip(f"this CPU cannot execute {target_name} code")
    m, k, n = shape
    rng = np.random.default_rng(m + k + n)
    x = rng.integers(-128, 128, (m, k)).astype(np.int8)
    w = rng.integers(-127, 128, (k, n)).astype(np.int8)
    bias, m0, shift = _case(rng, n, k)
    mod = _int8_graph(x.shape, w, bias, m0, shift)
    fast, layout, sched = _build(mod, TARGETS[target_name], True)
    assert sched.fired.get("DenseInt8") == 1, (sched.fired, sched.failed)
    acc = x.astype(np.int64) @ w.astype(np.int64) + bias
    ref = requantize_reference(np.maximum(acc, 0), m0, shift)
    got = _run(fast, x)
    np.testing.assert_array_equal(got, ref)
    generic, _, _ = _build(mod, TARGETS[target_name], False)
    np.testing.assert_array_equal(got, _run(generic, x))


def test_dot_kind_from_target():
    for name, kind in EXPECTED_KIND.items():
        assert int8.dot_kind(tvm.target.Target(TARGETS[name])) == kind
    assert int8.dot_kind(tvm.target.Target({"kind": "llvm"})) is None  # plain x86-64: no int8 kernels


def test_avx2_keeps_minus_128_weights_off_the_sign_path():
    """vpsignb cannot negate -128: such a layer keeps the generic kernel on AVX2 (exact)."""
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (1, 8, 6, 6)).astype(np.int8)
    w = rng.integers(-128, 128, (8, 8, 3, 3)).astype(np.int8)
    w[0, 0, 0, 0] = -128
    bias, m0, shift = _case(rng, 8, 72)
    mod = _int8_graph(x.shape, w, bias, m0, shift, dict(padding=[1, 1, 1, 1]))
    _, layout, _ = _build(mod, TARGETS["avx2"], True)
    # no int8 conv kernel (only the requantize multiply is rewritten)
    assert next(p for p in layout if type(p).__name__ == "LegalizeInt8Ops").rewrites == {"multiply_32x32": 1}


def _assembly(target_name, conv):
    rng = np.random.default_rng(1)
    x_shape = (1, 32, 8, 8) if conv else (4, 64)
    w = rng.integers(-127, 128, (32, 32, 3, 3) if conv else (64, 32)).astype(np.int8)
    bias, m0, shift = _case(rng, 32, 288)
    mod = _int8_graph(x_shape, w, bias, m0, shift, dict(padding=[1, 1, 1, 1]) if conv else None)
    ex, _, _ = _build(mod, TARGETS[target_name], True)
    return ex.mod.imports[0].inspect_source("asm")


@pytest.mark.parametrize("conv", [True, False], ids=["conv2d", "dense"])
def test_assembly_uses_dot_product_instructions(conv):
    asm512 = _assembly("avx512vnni", conv)
    assert "vpdpbusd" in asm512 and "zmm" in asm512
    asm256 = _assembly("avxvnni", conv)
    assert "vpdpbusd" in asm256 and "zmm" not in asm256.split("vpdpbusd", 1)[1].split("\n", 1)[0]
    asm2 = _assembly("avx2", conv)
    assert "vpmaddubsw" in asm2 and "vpmaddwd" in asm2 and "vpsignb" in asm2
    assert "vpdpbusd" not in asm2 and "zmm" not in asm2
    # requantize: int32 multiplier widened in the kernel -> vpmuldq, no 3-uop vpmullq
    assert "vpmuldq" in asm512 and "vpmullq" not in asm512


def test_multiply_32x32_only_for_multipliers_that_fit_int32():
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, (1, 8, 6, 6)).astype(np.int8)
    w = rng.integers(-127, 128, (8, 8, 1, 1)).astype(np.int8)
    bias, m0, shift = _case(rng, 8, 8)
    big = m0.astype(np.int64) * 2  # >= 2**31 for the channels in [2**30, 2**31): stays int64
    assert big.max() >= 2**31
    legalize = int8.LegalizeInt8Ops(tvm.target.Target(TARGETS["avx512vnni"]))
    legalize(_int8_graph(x.shape, w, bias, big, shift + 1, {}))
    assert "multiply_32x32" not in legalize.rewrites
    legalize(_int8_graph(x.shape, w, bias, m0, shift, {}))
    assert legalize.rewrites["multiply_32x32"] == 1


@pytest.mark.parametrize("pool", [
    dict(pool_size=(3, 3), strides=(2, 2), padding=(1, 1, 1, 1)),  # ResNet's stem pool
    dict(pool_size=(3, 3), strides=(1, 1), padding=(1, 1, 1, 1)),
    dict(pool_size=(2, 2), strides=(2, 2), padding=(0, 1, 0, 1)),  # asymmetric (SAME_UPPER)
])
def test_int8_max_pool_padded_first_exact(pool):
    """LegalizeInt8Ops pads an int8 max pool with -128 and pools without padding; GenericCpu
    vectorizes that pool along its rows (no border test left). Same bits as numpy's max over
    the -128-padded input, and the rewrite counted once."""
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (1, 5, 20, 22)).astype(np.int8)
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(x.shape, "int8"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.nn.max_pool2d(xv, **pool)))
        bb.emit_func_output(out)
    ex, layout, sched = _build(bb.get(), TARGETS["avx512vnni"], int8_kernels=True)
    assert next(p for p in layout if type(p).__name__ == "LegalizeInt8Ops").rewrites == {"max_pool2d_padded": 1}
    (kh, kw), (sh, sw), (top, left, bottom, right) = pool["pool_size"], pool["strides"], pool["padding"]
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=-128)
    oh, ow = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    ref = np.full((1, 5, oh, ow), -128, np.int8)
    for i in range(kh):
        for j in range(kw):
            ref = np.maximum(ref, xp[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw])
    if _host_runs("avx512vnni"):
        np.testing.assert_array_equal(_run(ex, x), ref)


def test_int8_max_pool_rows_vectorized():
    """The padded int8 pool's row loop is a vector loop (the scalar form took 1.4 ms on
    ResNet-50's stem pool, 0.06 ms vectorized)."""
    from accelc.targets.llvm_cpu.schedule_generic import GenericCpu

    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType((1, 8, 34, 34), "int8"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.nn.max_pool2d(xv, (3, 3), (2, 2), (0, 0))))
        bb.emit_func_output(out)
    target = tvm.target.Target(TARGETS["avx512vnni"])
    with target:
        mod = relax.transform.LegalizeOps()(bb.get())
    func = next(f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc))
    sch = GenericCpu(cpu.config_from_target(target)).apply(func, target, False)
    assert "T.vectorized(T.int64(16))" in sch.mod.script()


@pytest.mark.slow
def test_whole_model_int8_same_bits_as_generic_kernels(monkeypatch):
    """accelc.compile(quantize="int8") of the embedded digits CNN: the int8 kernels change
    no bit of the logits against the same pipeline with LegalizeInt8Ops removed."""
    import accelc
    from accelc.models import default_model_path, load_digits_calib, load_digits_test

    model, shapes = str(default_model_path()), {"input": [1, 1, 8, 8]}
    images, _ = load_digits_test()
    original, seen = cpu.layout_passes, []

    def keep(target, config=None):
        passes = original(target, config)
        seen.extend(p for p in passes if type(p).__name__ == "LegalizeInt8Ops")
        return passes

    monkeypatch.setattr(cpu, "layout_passes", keep)
    fast = accelc.compile(model, input_shapes=shapes, quantize="int8", calib=load_digits_calib())
    assert sum(sum(p.rewrites.values()) for p in seen) >= 2, [p.rewrites for p in seen]
    monkeypatch.setattr(cpu, "layout_passes", lambda target, config=None: [
        p for p in original(target, config) if type(p).__name__ != "LegalizeInt8Ops"])
    generic = accelc.compile(model, input_shapes=shapes, quantize="int8", calib=load_digits_calib())
    for x in images[:16]:
        a, b = fast.run({"input": x[None]})["logits"], generic.run({"input": x[None]})["logits"]
        np.testing.assert_array_equal(a, b)
