"""--target vta end to end: offloaded layers run on the simulator and the model's outputs
equal, bit for bit, the same int8 graph compiled for the CPU (--target llvm --requantize shift)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper

import accelc
from accelc import cli, models
from accelc.targets import registry

pytest.importorskip("accelc.targets.vta.layer", reason="targets/vta/layer.py (the layer compiler) is not there")


def resnet_style(seed: int = 0, size: int = 8) -> onnx.ModelProto:
    """A small ResNet-18-style net: stem conv, two basic blocks (the second downsamples with a
    strided 1x1 projection), global average pool and a classifier, seeded random weights."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def conv(x, cin, cout, k, stride, name, relu=True):
        w = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
        b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")])
        pad = k // 2
        nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [f"{name}_c"],
                                      strides=[stride, stride], pads=[pad] * 4))
        if not relu:
            return f"{name}_c"
        nodes.append(helper.make_node("Relu", [f"{name}_c"], [f"{name}_r"]))
        return f"{name}_r"

    def block(x, cin, cout, stride, name):
        y = conv(x, cin, cout, 3, stride, f"{name}a")
        y = conv(y, cout, cout, 3, 1, f"{name}b", relu=False)
        skip = x if (cin, stride) == (cout, 1) else conv(x, cin, cout, 1, stride, f"{name}p", relu=False)
        nodes.append(helper.make_node("Add", [y, skip], [f"{name}_sum"]))
        nodes.append(helper.make_node("Relu", [f"{name}_sum"], [f"{name}_out"]))
        return f"{name}_out"

    x = conv("input", 3, 16, 3, 1, "stem")
    x = block(x, 16, 16, 1, "b1")
    x = block(x, 16, 32, 2, "b2")
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    fc = (rng.standard_normal((10, 32)) * 0.2).astype(np.float32)
    inits.append(numpy_helper.from_array(fc, "fc_w"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w"], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes, "resnet_style", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _compile_pair(model, calib, shapes=None, vta_options=None):
    kw = dict(input_shapes=shapes, quantize="int8", calib=calib, calib_method="minmax")
    cpu = accelc.compile(model, "llvm", requantize="shift", **kw)
    vta = accelc.compile(model, "vta", target_options=vta_options, **kw)  # requantize: the target's (shift)
    return cpu, vta


def _layers(compiled):
    from accelc.targets.vta.runtime import layer_table

    return layer_table(compiled._machine())


@pytest.fixture(scope="module")
def digits():
    calib = {"input": models.load_digits_calib()["input"][:32]}
    return _compile_pair(str(models.default_model_path()), calib, dict(models.DEFAULT_INPUT_SHAPE))


def test_digits_outputs_equal_the_cpu_int8_graph(digits):
    cpu, vta = digits
    images, labels = models.load_digits_test()
    for i in range(0, 40, 4):
        x = {"input": images[i : i + 1]}
        np.testing.assert_array_equal(vta.run(x)["logits"], cpu.run(x)["logits"])
    layers = _layers(vta)
    # graph order; the stem (1 input channel) stays on the CPU by default (vta-skip-layers=0)
    assert [r["where"] for r in layers] == ["cpu", "vta", "vta", "cpu"]
    assert layers[0]["reason"].startswith("conv2d layer 0 kept on the CPU by vta-skip-layers=0")
    assert "graph output" in layers[-1]["reason"] or "dequantized" in layers[-1]["reason"]


def test_digits_accuracy_holds(digits):
    _, vta = digits
    images, labels = models.load_digits_test()
    logits = np.concatenate([vta.run({"input": images[i : i + 1]})["logits"] for i in range(60)])
    assert models.accuracy(logits, labels[:60]) >= 90.0


def test_profile_reports_every_layer(digits):
    _, vta = digits
    backend = registry.get("vta")
    args = [tvm.runtime.tensor(models.load_digits_test()[0][:1], tvm.cpu())]
    text = backend.profile(vta._machine(), args)
    assert text.count(" vta ") == 2 and "cpu" in text and "GEMM util" in text
    # host time: the CPU stem's kernel is timed, and the total adds VTA and host time
    kernels = text.split("host time per kernel")[1].split("VTA total:")[0]
    assert "conv2d" in kernels and "host total:" in text and "estimated run time:" in text
    serial = backend.profile(vta._machine(), args, force_serial=True)
    assert "latency hiding:" in serial


def test_resnet_style_outputs_equal_the_cpu_int8_graph(tmp_path):
    model = resnet_style()
    rng = np.random.default_rng(1)
    calib = {"input": rng.random((8, 3, 8, 8), dtype=np.float32)}
    cpu, vta = _compile_pair(model, calib, vta_options={"vta-skip-layers": "none"})  # the stem on VTA too
    for seed in range(3):
        x = {"input": np.random.default_rng(10 + seed).random((1, 3, 8, 8), dtype=np.float32)}
        np.testing.assert_array_equal(vta.run(x)["logits"], cpu.run(x)["logits"])
    layers = _layers(vta)
    # every conv is int8 in, int8 out (the residual adds read requantized int8): all on VTA,
    # the strided 3x3 and the strided 1x1 projection included; the classifier's int32 result
    # is dequantized for the float output, so it stays on the CPU, with the reason
    assert [r["where"] for r in layers] == ["vta"] * 6 + ["cpu"]
    assert {r["op"].split(" in ")[0] for r in layers[:6]} >= {"conv2d 16->32 k3x3 s2", "conv2d 16->32 k1x1 s2"}
    assert "dequantized to float32" in layers[-1]["reason"]
    # the artifact runs the same after export + load
    path = vta.export(tmp_path / "r.so")
    x = {"input": np.random.default_rng(10).random((1, 3, 8, 8), dtype=np.float32)}
    np.testing.assert_array_equal(accelc.load(path).run(x)["logits"], cpu.run(x)["logits"])


# ---------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize(
    "argv,message",
    [
        (["compile", "M", "--target", "vta"], "--target vta runs int8 layers: add --quantize int8"),
        (["compile", "M", "--target", "vta:nonsense"], "--target vta:nonsense"),
        (["compile", "M", "--target", "vta", "--quantize", "int8", "--calib", "C", "--requantize", "fixedpoint"],
         "--requantize fixedpoint: the vta target computes shift-only"),
        (["compile", "M", "--target", "vta", "--quantize", "int8", "--calib", "C", "--vta-skip-layers", "x"],
         "--vta-skip-layers 'x': expected conv2d layer indices"),
        (["compile", "M", "--target", "llvm", "--vta-skip-layers", "0"], "unknown option 'vta-skip-layers'"),
        (["compile", "M", "--input-shape", "input:1,1,8,8", "--target", "vta", "--quantize", "int8", "--calib", "C",
          "--vta-skip-layers", "0,7"], "--vta-skip-layers 0,7: the model has 3 conv2d layer(s) (0..2), no layer 7"),
    ],
)
def test_cli_errors_exit_2(argv, message, capsys):
    files = {"M": str(models.default_model_path()), "C": str(models.DATA_DIR / "digits_calib.npz")}
    argv = [files.get(a, a) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def fallback_model(seed: int = 0) -> onnx.ModelProto:
    """conv (VTA) -> grouped conv -> 1x1 conv padded by 1 (no VTA tiling: rows of pure padding)
    -> conv kept in float -> classifier: one layer per reason to stay on the CPU."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def conv(x, cin, cout, k, pad, name, group=1):
        w = (rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"{name}_w"),
                      numpy_helper.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32), f"{name}_b")])
        nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [f"{name}_c"], pads=[pad] * 4, group=group))
        nodes.append(helper.make_node("Relu", [f"{name}_c"], [f"{name}_r"]))
        return f"{name}_r"

    x = conv("input", 4, 16, 3, 1, "a")
    x = conv(x, 16, 16, 1, 1, "padded1x1")  # 6x6 -> 8x8
    x = conv(x, 16, 16, 3, 1, "grouped", group=2)
    x = conv(x, 16, 16, 3, 1, "float")
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    inits.append(numpy_helper.from_array((rng.standard_normal((10, 16)) * 0.2).astype(np.float32), "fc_w"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w"], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes, "fallbacks", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_fallbacks_stay_on_cpu_and_outputs_still_match():
    rng = np.random.default_rng(2)
    calib = {"input": rng.random((8, 4, 6, 6), dtype=np.float32)}
    kw = dict(quantize="int8", calib=calib, calib_method="minmax", keep_float=("conv2d:3",))
    cpu = accelc.compile(fallback_model(), "llvm", requantize="shift", **kw)
    vta = accelc.compile(fallback_model(), "vta", target_options={"vta_skip_layers": ()}, **kw)
    x = {"input": rng.random((1, 4, 6, 6), dtype=np.float32)}
    np.testing.assert_array_equal(vta.run(x)["logits"], cpu.run(x)["logits"])
    rows = {r["op"]: r for r in _layers(vta)}
    assert [r["where"] for r in rows.values()] == ["vta", "cpu", "cpu", "cpu", "cpu"]
    assert rows["conv2d 4->16 k3x3 s1 in 6x6 +relu"]["where"] == "vta"
    assert "does not fit VTA" in rows["conv2d 16->16 k1x1 s1 in 6x6 +relu"]["reason"]
    assert rows["conv2d 16->16 k3x3 s1 in 8x8 int8"]["reason"] == "grouped conv2d (groups=2)"
    assert "float32 conv2d, not quantized" in rows["conv2d 16->16 k3x3 s1 in 8x8 float32"]["reason"]


def test_tune_then_compile_with_the_best_plans(tmp_path, capsys, digits):
    calib = str(models.DATA_DIR / "digits_calib.npz")
    log = tmp_path / "vta.log"
    assert cli.main(["tune", "--target", "vta", "--calib", calib, "-o", str(log), "--trials", "6"]) == 0
    assert "layer 2/2" in capsys.readouterr().out  # the stem, kept on the CPU, is not tuned
    from accelc.targets.vta.tune import load_best_plans

    assert len(load_best_plans(log, registry.get("vta").cfg)) == 2
    out = tmp_path / "t.so"
    assert cli.main(["compile", str(models.default_model_path()), "--input-shape", "input:1,1,8,8",
                     "--target", "vta", "--quantize", "int8", "--calib", calib, "--calib-method", "minmax",
                     "--tuning-records", str(log), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "requantize: shift (the vta target computes shift-only)" in text
    assert "vta: 2 of 4 conv2d/dense layers offloaded to VTA (2 with tuned plans)" in text
    assert "cpu.conv2d_0     cpu  conv2d 1->16 k3x3 s1 in 8x8 +relu: conv2d layer 0 kept on the CPU" in text
    assert "cpu.matmul_0     cpu  matmul [1, 512] x [512, 10] int8: its result is dequantized" in text
    assert cli.main(["run", str(out), "--profile", "--force-serial"]) == 0
    text = capsys.readouterr().out
    assert "force-serial (no latency hiding)" in text and "latency hiding:" in text and "vta.conv2d_1" in text
    images = models.load_digits_test()[0]
    x = {"input": images[:1]}
    np.testing.assert_array_equal(accelc.load(out).run(x)["logits"], digits[0].run(x)["logits"])


def test_tune_needs_calibration(capsys):
    assert cli.main(["tune", "--target", "vta", "-o", "unused.log"]) == 2
    assert "--calib DATA is required" in capsys.readouterr().err


@pytest.mark.slow
def test_cpp_runner_refuses_vta_artifacts(tmp_path, digits):
    import subprocess
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import test_runner_cpp

    exe = test_runner_cpp._build_runner()  # incremental: rebuilt only when runner/ changed
    path = digits[1].export(tmp_path / "d.so")
    proc = subprocess.run([str(exe), str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "targets 'vta'" in proc.stderr and "accelc run" in proc.stderr
