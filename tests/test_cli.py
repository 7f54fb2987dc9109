"""The command line: every user error is one line `error: ...` and exit code 2."""

import subprocess
from pathlib import Path
import sys

import numpy as np
import onnx
import pytest

from onnx_builders import conv_relu_model, two_in_two_out_model, unsupported_ops_model


def accelc(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "accelc", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def assert_user_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """A compiled two-input, two-output model and its source."""
    d = tmp_path_factory.mktemp("cli")
    onnx.save(two_in_two_out_model(), d / "m.onnx")
    result = accelc("compile", d / "m.onnx", "-o", d / "m.so")
    assert result.returncode == 0, result.stderr
    return d


def test_compile_and_run_round_trip(artifact):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.save(artifact / "a.npy", a)
    np.savez(artifact / "in.npz", b=np.ones((2, 3), np.float32))
    result = accelc("run", artifact / "m.so", "--input", f"a={artifact / 'a.npy'}", "--inputs",
                    artifact / "in.npz", "--output", artifact / "out.npz", "--repeat", 3, "--print-time")
    assert result.returncode == 0, result.stderr
    assert "latency (ms) over 3 run(s): median" in result.stdout
    out = np.load(artifact / "out.npz")
    np.testing.assert_allclose(out["sum"], a + 1)
    np.testing.assert_allclose(out["prod"], a @ np.ones((3, 2), np.float32))


@pytest.mark.parametrize("mode, value", [("zeros", 0.0), ("ones", 1.0)])
def test_fill_modes(artifact, mode, value):
    result = accelc("run", artifact / "m.so", "--fill-mode", mode, "--output", artifact / f"{mode}.npz")
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(artifact / f"{mode}.npz")["sum"], np.full((2, 3), 2 * value))


def test_inspect_model_and_artifact(artifact):
    result = accelc("inspect", artifact / "m.onnx")
    assert result.returncode == 0, result.stderr
    assert "MatMul" in result.stdout and "unsupported ops: none" in result.stdout
    assert "a: float32[2,3]" in result.stdout
    result = accelc("inspect", artifact / "m.so")
    assert result.returncode == 0 and "target:  llvm" in result.stdout


def test_missing_file(tmp_path):
    assert_user_error(accelc("compile", tmp_path / "nope.onnx"), "model file not found")


def test_not_onnx(tmp_path):
    (tmp_path / "x.onnx").write_text("this is not a protobuf\n" * 10)
    assert_user_error(accelc("compile", tmp_path / "x.onnx"), "not a readable ONNX model")


def test_truncated_file(tmp_path):
    data = conv_relu_model(batch=1).SerializeToString()
    (tmp_path / "t.onnx").write_bytes(data[: len(data) // 2])
    assert_user_error(accelc("compile", tmp_path / "t.onnx"), "t.onnx")


def test_unsupported_ops_listed_at_once(tmp_path):
    onnx.save(unsupported_ops_model(), tmp_path / "u.onnx")
    assert_user_error(
        accelc("compile", tmp_path / "u.onnx"),
        "NoSuchOpA x2 (nodes 'first_a', 'second_a')", "NoSuchOpB x1 (nodes 'only_b')",
    )
    result = accelc("inspect", tmp_path / "u.onnx")
    assert result.returncode == 0 and "NoSuchOpA x2: first_a, second_a" in result.stdout


def test_dynamic_dimension_needs_input_shape(tmp_path):
    onnx.save(conv_relu_model(), tmp_path / "d.onnx")
    assert_user_error(accelc("compile", tmp_path / "d.onnx"), "input 'x' dimension 0 ('N') is dynamic")
    result = accelc("compile", tmp_path / "d.onnx", "--input-shape", "x:2,3,8,8", "-o", tmp_path / "d.so")
    assert result.returncode == 0, result.stderr


def test_unknown_target(artifact):
    assert_user_error(accelc("compile", artifact / "m.onnx", "--target", "tpu9000"), "unknown target 'tpu9000'")


def test_wrong_input_name(artifact):
    np.save(artifact / "z.npy", np.zeros((2, 3), np.float32))
    assert_user_error(accelc("run", artifact / "m.so", "--input", f"zz={artifact / 'z.npy'}"), "unknown input 'zz'")


def test_wrong_input_shape(artifact):
    np.save(artifact / "s.npy", np.zeros((3, 3), np.float32))
    assert_user_error(accelc("run", artifact / "m.so", "--input", f"a={artifact / 's.npy'}"), "shape [3, 3], expected [2, 3]")


def test_wrong_input_dtype(artifact):
    np.save(artifact / "i.npy", np.zeros((2, 3), np.int32))
    assert_user_error(accelc("run", artifact / "m.so", "--input", f"a={artifact / 'i.npy'}"), "dtype int32, expected float32")


def test_run_on_a_non_artifact(artifact):
    assert_user_error(accelc("run", artifact / "m.onnx"), "not an accelc artifact")


def test_bad_usage_is_one_line(artifact):
    assert_user_error(accelc("compile", artifact / "m.onnx", "--opt-level", "9"), "opt-level")


def test_verbose_shows_traceback(tmp_path):
    result = accelc("--verbose", "compile", tmp_path / "nope.onnx")
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_internal_compiler_error_is_one_line(tmp_path):
    """A model the front end accepts but TVM fails to lower (PRelu-6 with a per-channel
    slope, a known accelc bug) is one line naming the phase, not a traceback."""
    import onnx.backend.test

    case = (Path(onnx.backend.test.__file__).parent / "data" / "pytorch-converted"
            / "test_PReLU_1d_multiparam" / "model.onnx")
    result = accelc("compile", case, "-o", tmp_path / "p.so")
    assert result.returncode == 2, result.stderr
    # TVM's C++ log may add a warning line before it; the error itself is the last line.
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: internal compiler error in phase "), result.stderr
    assert "Traceback" not in result.stderr and sum(l.startswith("error: ") for l in result.stderr.splitlines()) == 1
