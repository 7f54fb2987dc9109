"""``accelc quantize``: accelc's annotate + calibrate written as a standard QDQ ONNX model.

The written model must (1) run in onnxruntime with accuracy close to fp32 on the digits test
set, (2) compile back with accelc to the same integer kernels, i.e. the same outputs bit for
bit as ``accelc compile MODEL --quantize int8`` with the same options, and (3) be described by
``accelc inspect`` (quantized ops, their scales, the ops that stayed float and why).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import accelc
from accelc.cli import main as cli_main
from accelc.models import DATA_DIR, accuracy, default_model_path, load_digits_calib, load_digits_test
from accelc.quantize import QuantizeConfig
from accelc.quantize.export import write_quantized

SHAPES = {"input": [1, 1, 8, 8]}
MODEL = str(default_model_path())
CALIB = str(DATA_DIR / "digits_calib.npz")


def _logits(compiled, images) -> np.ndarray:
    return np.concatenate([compiled.run({"input": x[None]})["logits"] for x in images])


def _round_trip(tmp_path, config: QuantizeConfig, images) -> tuple[np.ndarray, np.ndarray, onnx.ModelProto]:
    path, report = write_quantized(MODEL, load_digits_calib(), config, tmp_path / "digits.q.onnx", SHAPES)
    back = accelc.compile(str(path), input_shapes=SHAPES, requantize=config.requantize)
    direct = accelc.compile(
        MODEL, input_shapes=SHAPES, quantize="int8", calib=load_digits_calib(), calib_method=config.calib_method,
        per_tensor=config.per_tensor, keep_float=config.keep_float, requantize=config.requantize,
    )
    return _logits(back, images), _logits(direct, images), onnx.load(str(path))


def test_digits_qdq_round_trip_and_onnxruntime_accuracy(tmp_path):
    import onnxruntime as ort

    images, labels = load_digits_test()
    ours, direct, q = _round_trip(tmp_path, QuantizeConfig(calib_method="mse"), images[:120])
    np.testing.assert_array_equal(ours, direct)  # same integer kernels, same outputs

    ops = Counter(n.op_type for n in q.graph.node)
    # 3 Conv (batch norms folded) + Gemm -> MatMul + Add; one Q/DQ pair per activation, one
    # DQ per int8 weight.
    assert ops["Conv"] == 3 and ops["MatMul"] == 1 and ops["BatchNormalization"] == 0 and ops["Gemm"] == 0
    assert ops["QuantizeLinear"] == 4 and ops["DequantizeLinear"] == 8
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    weight_dqs = [n for n in q.graph.node if n.op_type == "DequantizeLinear" and inits.get(n.input[0]) is not None]
    assert len(weight_dqs) == 4 and all(inits[n.input[0]].dtype == np.int8 for n in weight_dqs)
    assert all(inits[n.input[1]].ndim == 1 for n in weight_dqs)  # per output channel, with axis
    assert {helper_axis(n) for n in weight_dqs} == {0, 1}  # OIHW: 0; MatMul [K, N]: 1

    session = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"])
    fp32 = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
    int8_acc = accuracy(session.run(None, {"input": images})[0], labels)
    fp32_acc = accuracy(fp32.run(None, {"input": images})[0], labels)
    assert int8_acc >= fp32_acc - 1.0, (int8_acc, fp32_acc)


def helper_axis(node) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


@pytest.mark.slow
def test_round_trip_per_tensor_shift_keep_float(tmp_path):
    images, _ = load_digits_test()
    config = QuantizeConfig(calib_method="percentile", per_tensor=True, requantize="shift", keep_float=("conv2d:0",))
    ours, direct, q = _round_trip(tmp_path, config, images[:60])
    np.testing.assert_array_equal(ours, direct)
    assert Counter(n.op_type for n in q.graph.node)["QuantizeLinear"] == 3  # the first conv stayed float


def test_cli_quantize_and_inspect(tmp_path, capsys):
    out = tmp_path / "d.q.onnx"
    base = ["--input-shape", "input:1,1,8,8", "--calib", CALIB]
    assert cli_main(["quantize", MODEL, *base, "--keep-float", "conv2d:0", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 of 4 conv2d/matmul ops in int8" in text
    assert "float  (kept float by --keep-float" in text and "weight scales" in text

    # inspect of the written QDQ model: its quantized ops and the kernels accelc realizes
    assert cli_main(["inspect", str(out), "--input-shape", "input:1,1,8,8"]) == 0
    text = capsys.readouterr().out
    assert "int8 quantization (pre-quantized model): 3 of 4" in text and "realized: " in text
    assert "conv2d 2" in text and "matmul 1" in text


def test_cli_inspect_quantize_shows_scales(capsys):
    argv = ["inspect", MODEL, "--input-shape", "input:1,1,8,8", "--quantize", "int8", "--calib", CALIB,
            "--calib-method", "minmax", "--per-tensor"]
    assert cli_main(argv) == 0
    text = capsys.readouterr().out
    assert "int8 quantization (calibration: minmax): 4 of 4 conv2d/matmul ops in int8" in text
    assert text.count("activation scale") == 4 and "weight scale " in text  # per tensor: one scale


@pytest.mark.parametrize(
    "data, message",
    [
        ({"x": np.zeros((4, 1, 8, 8), np.float32)}, "has unknown name(s) x"),
        ({"input": np.zeros((4, 1, 8, 8), np.float64)}, "has dtype float64"),
        ({"input": np.zeros((4, 1, 7, 8), np.float32)}, "has shape [4, 1, 7, 8]"),
    ],
)
def test_cli_quantize_bad_calibration_is_one_line(tmp_path, capsys, data, message):
    np.savez(tmp_path / "bad.npz", **data)
    argv = ["quantize", MODEL, "--input-shape", "input:1,1,8,8", "--calib", str(tmp_path / "bad.npz"),
            "-o", str(tmp_path / "q.onnx")]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: calibration") and "\n" not in err and message in err
    assert not (tmp_path / "q.onnx").exists()


def test_cli_quantize_without_calib_is_one_line(tmp_path, capsys):
    assert cli_main(["quantize", MODEL, "-o", str(tmp_path / "q.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs calibration data" in err and "\n" not in err


@pytest.mark.slow
@pytest.mark.parametrize("activation_dtype", ["int8", "uint8"])
def test_residual_net_round_trip_and_onnxruntime(tmp_path, activation_dtype):
    """conv -> maxpool -> conv -> residual add -> matmul: the add's summands get Q/DQ pairs
    (accelc adds them in integers), uint8 activations keep their zero points; accelc and
    onnxruntime both give the same outputs as the direct int8 compile."""
    import onnxruntime as ort

    from test_prequantized_onnx import _conv_net

    rng = np.random.default_rng(0)
    model = _conv_net(rng)
    calib = {"x": rng.standard_normal((16, 3, 8, 8)).astype(np.float32)}
    config = QuantizeConfig(calib_method="minmax", activation_dtype=activation_dtype)
    path, report = write_quantized(model, calib, config, tmp_path / "res.q.onnx")
    assert "add (tensor + tensor)   int8" in report.format()
    q = onnx.load(str(path))
    add = next(n for n in q.graph.node if n.op_type == "Add")
    producers = {o: n.op_type for n in q.graph.node for o in n.output}
    assert [producers[i] for i in add.input] == ["DequantizeLinear", "DequantizeLinear"]
    back = accelc.compile(str(path))
    direct = accelc.compile(model, quantize="int8", calib=calib, calib_method="minmax",
                            quantize_options={"activation_dtype": activation_dtype})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for _ in range(4):
        x = {"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}
        np.testing.assert_array_equal(back.run(x)["y"], direct.run(x)["y"])
        ort_y = session.run(None, x)[0]
        assert np.abs(ort_y - back.run(x)["y"]).max() <= 1e-5 * max(1.0, np.abs(ort_y).max()) + 1e-6
