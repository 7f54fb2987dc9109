"""The Python API against onnxruntime, and the artifact round trip."""

import numpy as np
import onnxruntime as ort
import pytest

import accelc
from accelc.artifact import SECTION, read_signature
from accelc.elf import machine, read_section
from accelc.errors import InputMismatchError, ShapeError

from onnx_builders import conv_relu_model, two_in_two_out_model


def ort_run(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


@pytest.fixture(scope="module")
def two_io():
    return accelc.compile(two_in_two_out_model())


def test_outputs_match_onnxruntime_by_name(two_io):
    rng = np.random.default_rng(1)
    feeds = {n: rng.standard_normal((2, 3)).astype(np.float32) for n in ("a", "b")}
    got = two_io.run(feeds)
    want = ort_run(two_in_two_out_model(), feeds)
    assert list(got) == ["sum", "prod"]
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)


def test_signature_describes_model(two_io):
    sig = two_io.signature
    assert [(t.name, t.shape, t.dtype) for t in sig.inputs] == [("a", (2, 3), "float32"), ("b", (2, 3), "float32")]
    assert [(t.name, t.shape) for t in sig.outputs] == [("sum", (2, 3)), ("prod", (2, 2))]
    assert sig.target["kind"] == "llvm" and sig.target_name == "llvm"
    assert sig.accelc_version == accelc.__version__


def test_export_embeds_signature_and_load_runs(two_io, tmp_path):
    path = two_io.export(tmp_path / "m.so")
    assert machine(path) == "x86_64"
    assert read_section(path, SECTION) is not None
    assert read_signature(path) == two_io.signature
    loaded = accelc.load(path)
    feeds = {"a": np.ones((2, 3), np.float32), "b": np.full((2, 3), 2, np.float32)}
    np.testing.assert_array_equal(loaded.run(feeds)["prod"], np.full((2, 2), 6, np.float32))  # 3 x (1 * 2)
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize(
    "feeds, message",
    [
        ({"a": np.ones((2, 3), np.float32)}, "missing input 'b'"),
        ({"a": np.ones((2, 3), np.float32), "b": np.ones((2, 3), np.float32), "c": 1}, "unknown input 'c'"),
        ({"a": np.ones((2, 3), np.float64), "b": np.ones((2, 3), np.float32)}, "dtype float64, expected float32"),
        ({"a": np.ones((3, 2), np.float32), "b": np.ones((2, 3), np.float32)}, "shape [3, 2], expected [2, 3]"),
    ],
)
def test_bad_inputs_are_named(two_io, feeds, message):
    with pytest.raises(InputMismatchError, match=message.replace("[", r"\[").replace("]", r"\]")):
        two_io.run(feeds)


def test_dynamic_batch_needs_input_shape():
    with pytest.raises(ShapeError, match=r"input 'x' dimension 0 \('N'\) is dynamic; give --input-shape x:"):
        accelc.compile(conv_relu_model())


@pytest.mark.parametrize("opt_level", [0, 1, 2, 3])
def test_every_opt_level_matches_onnxruntime(opt_level):
    model = conv_relu_model()
    x = np.random.default_rng(opt_level).standard_normal((2, 3, 8, 8)).astype(np.float32)
    cm = accelc.compile(model, input_shapes={"x": [2, 3, 8, 8]}, opt_level=opt_level)
    np.testing.assert_allclose(cm.run({"x": x})["y"], ort_run(model, {"x": x})["y"], rtol=1e-4, atol=1e-5)


def test_dump_ir_and_time_passes(tmp_path):
    cm = accelc.compile(two_in_two_out_model(), dump_ir=str(tmp_path / "ir"), time_passes=True)
    dumps = sorted(p.name for p in (tmp_path / "ir").iterdir())
    assert any("LegalizeOps" in name for name in dumps) and any("FuseOps" in name for name in dumps)
    report = cm.report.format()
    assert "4_target_lowering" in report and "5_build" in report and "LegalizeOps" in report


def test_load_runs_with_the_artifacts_cores(tmp_path):
    """A fresh process that loads an artifact runs it on the target's num-cores threads, not
    TVM's default (half the logical CPUs), unless TVM_NUM_THREADS says otherwise."""
    import os
    import subprocess
    import sys

    model = conv_relu_model(batch=1)
    path = accelc.compile(model, "llvm", target_options={"num-cores": 2}).export(tmp_path / "m.so")
    script = (
        "import numpy as np, accelc, tvm_ffi\n"
        f"m = accelc.load({str(path)!r})\n"
        "m.run({s.name: np.zeros(s.shape, s.dtype) for s in m.signature.inputs})\n"
        "print(tvm_ffi.get_global_func('runtime.NumThreads')())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "2"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**env, "TVM_NUM_THREADS": "1"}, timeout=300)
    assert out.stdout.split()[-1] == "1"
