"""accelc prune (magnitude pruning) and accelc inspect --sparse; compile --sparse end to end."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from accelc import api
from accelc.cli import main
from accelc.errors import AccelcError
from accelc.prune import prune_matrix, prune_proto, weight_sparsity


def _model(seed=0):
    """MatMul (64 -> 96) then a 1x1 Conv (16 -> 32) on a separate input."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((64, 96)).astype("float32")
    c = rng.standard_normal((32, 16, 1, 1)).astype("float32")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y0"]), helper.make_node("Relu", ["y0"], ["y"]),
             helper.make_node("Conv", ["img", "C"], ["c"])]
    graph = helper.make_graph(
        nodes, "m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5, 64]),
         helper.make_tensor_value_info("img", TensorProto.FLOAT, [2, 16, 7, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5, 96]),
         helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, 32, 7, 9])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(c, "C")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 6), cols=st.integers(1, 6), br=st.sampled_from([1, 2, 4]), bc=st.sampled_from([1, 2]),
       sparsity=st.floats(0.0, 1.0), norm=st.sampled_from(["l1", "l2"]), seed=st.integers(0, 1000))
def test_prune_matrix_zeroes_the_weakest_blocks(rows, cols, br, bc, sparsity, norm, seed):
    m = np.random.default_rng(seed).standard_normal((rows * br, cols * bc)).astype("float32")
    out = prune_matrix(m, sparsity, (br, bc), norm)
    blocks = out.reshape(rows, br, cols, bc).transpose(0, 2, 1, 3).reshape(rows * cols, -1)
    orig = m.reshape(rows, br, cols, bc).transpose(0, 2, 1, 3).reshape(rows * cols, -1)
    zero = ~blocks.any(axis=1)
    assert zero.sum() == round(sparsity * rows * cols)  # exactly that many whole blocks
    np.testing.assert_array_equal(blocks[~zero], orig[~zero])  # the rest untouched
    mag = np.abs(orig).sum(1) if norm == "l1" else np.square(orig.astype("float64")).sum(1)
    if zero.any() and (~zero).any():
        assert mag[zero].max() <= mag[~zero].min()


def test_prune_proto_blocks_follow_output_channels():
    pruned, report = prune_proto(_model(), 0.75, (16, 1))
    assert [r[0].name for r in report] == ["W", "C"]
    w = numpy_helper.to_array(pruned.graph.initializer[0])  # (K=64, N=96): blocks of 16 along N
    runs = (w.T.reshape(6, 16, 64) != 0).any(axis=1)
    assert np.array_equal(runs, (w.T.reshape(6, 16, 64) != 0).all(axis=1))
    assert all(abs(after - 0.75) < 1e-6 for _, after in report)
    assert [round(i.sparsity, 2) for i in weight_sparsity(pruned)] == [0.75, 0.75]


def test_prune_cli_writes_model_and_sparse_compile_matches_onnxruntime(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    onnx.save(_model(), src)
    assert main(["prune", str(src), "--sparsity", "0.9", "--block", "16x1"]) == 0
    out = tmp_path / "m.sparse.onnx"
    assert out.exists() and "-> " in capsys.readouterr().out
    compiled = api.compile(str(out), "llvm", sparse=0.8)
    rng = np.random.default_rng(1)
    inputs = {"x": rng.standard_normal((3, 5, 64)).astype("float32"),
              "img": rng.standard_normal((2, 16, 7, 9)).astype("float32")}
    got = compiled.run(inputs)
    want = ort.InferenceSession(str(out)).run(None, inputs)
    for g, w in zip(got.values(), want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    assert main(["inspect", str(out), "--sparse"]) == 0
    text = capsys.readouterr().out
    assert "sparse rewrite at threshold auto: 2 op(s)" in text
    assert "matmul BSR 16x1" in text and "conv2d_1x1 BSR 16x1" in text


@pytest.mark.parametrize("args, message", [
    (["--sparsity", "1.5"], "--sparsity must be in [0, 1]"),
    (["--sparsity", "-0.1"], "--sparsity must be in [0, 1]"),
    (["--sparsity", "nan"], "--sparsity must be in [0, 1]"),
    (["--sparsity", "0.9", "--block", "5x1"], "block 5x1 does not divide weight"),
    (["--sparsity", "0.9", "--block", "0x1"], "block shape"),
    (["--sparsity", "0.9", "--block", "big"], "block shape"),
])
def test_prune_bad_input_is_one_line_exit_2(tmp_path, capsys, args, message):
    src = tmp_path / "m.onnx"
    onnx.save(_model(), src)
    assert main(["prune", str(src), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "m.sparse.onnx").exists()


@pytest.mark.parametrize("threshold", ["1.5", "-1", "abc"])
def test_compile_bad_threshold_is_one_line_exit_2(tmp_path, capsys, threshold):
    src = tmp_path / "m.onnx"
    onnx.save(_model(), src)
    assert main(["compile", str(src), "--sparse", threshold, "-o", str(tmp_path / "m.so")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "threshold" in err and "\n" not in err


def test_prune_error_names_the_weight():
    with pytest.raises(AccelcError, match=r"C \(32x16\)"):
        prune_proto(_model(), 0.5, (1, 3))
