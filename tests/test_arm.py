"""The arm target: presets, cross-compiled aarch64 artifacts run under qemu-aarch64 against
onnxruntime's x86 outputs, NEON in the disassembly, the board tarball, and one-line errors.

Needs the Debian packages g++-aarch64-linux-gnu and qemu-user (`make system-deps`); without
them the tests that compile or run skip, saying so. The first run downloads the aarch64 TVM
runtime from PyPI and cross-builds the runner into the cache (~40 s; accelc/cross.py); the
module points ACCELC_CACHE_DIR nowhere else, so that cache is the user's, shared with the CLI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from zoo import ATOL, RTOL, assert_close_normwise, assert_not_constant, ort_run

import accelc
from accelc import cross
from accelc.elf import machine
from accelc.errors import AccelcError, TargetError
from accelc.models import DEFAULT_INPUT_SHAPE, default_model_path
from accelc.targets import registry
from onnx_builders import two_in_two_out_model

TOOLS = ("aarch64-linux-gnu-g++", "aarch64-linux-gnu-objdump", "qemu-aarch64")
MISSING = [t for t in TOOLS if shutil.which(t) is None]
needs_cross = pytest.mark.skipif(
    bool(MISSING), reason=f"not installed: {', '.join(MISSING)} (make system-deps installs them)"
)


def accelc_cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "accelc", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=900)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def digits_input(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(DEFAULT_INPUT_SHAPE["input"]).astype(np.float32)


def digits_reference(x: np.ndarray) -> np.ndarray:
    return ort_run(onnx.load(str(default_model_path())), {"input": x})["logits"]


# ------------------------------------------------------------------------- presets (no tools)
def test_presets_are_data():
    from accelc.targets.arm import PRESETS, PRESETS_FILE

    assert PRESETS_FILE.suffix == ".json"
    assert {"aarch64", "cortex-a72", "cortex-a76", "neoverse-n1", "apple-m1", "graviton3"} <= set(PRESETS)


@pytest.mark.parametrize(
    "target, options, mcpu, mattr, cores",
    [
        ("arm", None, "generic", ["+neon"], 4),
        ("arm:cortex-a72", None, "cortex-a72", ["+neon"], 4),
        ("arm:cortex-a76", None, "cortex-a76", ["+neon", "+dotprod"], 4),
        ("arm:graviton3", {"mattr": "+sve"}, "neoverse-v1", ["+neon", "+dotprod", "+i8mm", "+bf16", "-sve", "+sve"], 4),
        ("arm", {"mcpu": "cortex-a55", "num-cores": 8}, "cortex-a55", ["+neon"], 8),
    ],
)
@needs_cross
def test_preset_to_llvm_target(target, options, mcpu, mattr, cores):
    t = registry.get(target).make(options)
    assert (str(t.kind.name), str(t.attrs["mtriple"]), str(t.attrs["mcpu"])) == ("llvm", "aarch64-linux-gnu", mcpu)
    assert [str(a) for a in t.attrs["mattr"]] == mattr
    assert int(t.attrs["num-cores"]) == cores


@needs_cross
def test_preset_features_reach_llvm():
    from tvm.target import codegen

    def has(target, options, feature):
        return bool(codegen.target_has_features(feature, registry.get(target).make(options)))

    assert has("arm", None, "neon") and not has("arm", None, "dotprod")
    assert has("arm:cortex-a76", None, "dotprod")
    assert not has("arm:graviton3", None, "sve") and has("arm:graviton3", {"mattr": "+sve"}, "sve")


@pytest.mark.parametrize(
    "target, options, fragment",
    [
        ("arm:cortex-a99", None, "unknown arm preset 'cortex-a99'"),
        ("llvm:skylake", None, "has no variants"),
        ("arm", {"mcpu": "pentium4"}, "no aarch64 CPU 'pentium4'"),
        ("arm", {"mtriple": "x86_64-linux-gnu"}, "not an aarch64 triple"),
        ("arm", {"frobnicate": 1}, "unknown option 'frobnicate'"),
    ],
)
@needs_cross
def test_bad_target_choices_are_user_errors(target, options, fragment):
    with pytest.raises(TargetError, match=fragment):
        registry.get(target).make(options)


def test_missing_cross_compiler_is_one_line_error(tmp_path):
    env = dict(os.environ, ACCELC_AARCH64_CXX="no-such-aarch64-g++")
    proc = accelc_cli("compile", default_model_path(), "--input-shape", "input:1,1,8,8",
                      "--target", "arm", "-o", tmp_path / "m.so", env=env)
    assert_one_line_error(proc, "no-such-aarch64-g++ is not installed", "apt-get install")


def test_tuning_against_qemu_is_refused():
    arm = registry.get("arm")
    if arm.device_type() == "cpu":
        pytest.skip("this host is aarch64: tuning measures natively")
    with pytest.raises(TargetError, match="meaningless"):
        arm.check_tuning(rpc_tracker=None)
    arm.check_tuning(rpc_tracker="127.0.0.1:9190")  # a real board through RPC is fine
    registry.get("llvm").check_tuning(rpc_tracker=None)


# ------------------------------------------------------------------------- digits end to end
@pytest.fixture(scope="module")
def digits_arm(tmp_path_factory) -> Path:
    if MISSING:
        pytest.skip(f"not installed: {', '.join(MISSING)} (make system-deps installs them)")
    path = tmp_path_factory.mktemp("arm") / "digits_arm.so"
    proc = accelc_cli("compile", default_model_path(), "--input-shape", "input:1,1,8,8",
                      "--target", "arm", "-o", path)
    assert proc.returncode == 0, proc.stderr
    assert "(arm, O3" in proc.stdout and "mtriple=aarch64-linux-gnu" in proc.stdout
    return path


def test_artifact_is_aarch64_with_neon(digits_arm):
    assert machine(digits_arm) == "aarch64"
    assert accelc.load(digits_arm).signature.target_name == "arm"
    asm = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(digits_arm)], capture_output=True,
                         text=True, check=True).stdout
    # NEON vector FMAs/multiplies on 4 x fp32 (v-registers), e.g. "fmla v0.4s, v1.4s, v2.s[0]".
    neon = [line for line in asm.splitlines() if "\tfmla\tv" in line or "\tfmul\tv" in line]
    print(f"{len(neon)} NEON fmla/fmul vector instructions")
    assert len(neon) >= 32, asm[-2000:]


def test_cli_run_under_qemu_matches_onnxruntime(digits_arm, tmp_path):
    x = digits_input()
    np.save(tmp_path / "x.npy", x)
    proc = accelc_cli("run", digits_arm, "--input", f"input={tmp_path / 'x.npy'}",
                      "--output", tmp_path / "out.npz", "--repeat", 2)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "note: running aarch64 artifact under qemu-aarch64"
    assert "latency (ms) over 2 run(s): median" in proc.stdout
    got = np.load(tmp_path / "out.npz")["logits"]
    np.testing.assert_allclose(got, digits_reference(x), rtol=RTOL, atol=ATOL)


def test_cli_fill_mode_under_qemu(digits_arm, tmp_path):
    proc = accelc_cli("run", digits_arm, "--fill-mode", "ones", "--output", tmp_path / "out.npz")
    assert proc.returncode == 0, proc.stderr
    ones = np.ones(DEFAULT_INPUT_SHAPE["input"], np.float32)
    np.testing.assert_allclose(np.load(tmp_path / "out.npz")["logits"], digits_reference(ones), rtol=RTOL, atol=ATOL)


def test_api_load_run_under_qemu(digits_arm):
    model = accelc.load(digits_arm)
    assert model.execution_note == "running aarch64 artifact under qemu-aarch64"
    x = digits_input(3)
    out = model.run({"input": x})
    assert list(out) == ["logits"]
    np.testing.assert_allclose(out["logits"], digits_reference(x), rtol=RTOL, atol=ATOL)
    with pytest.raises(TargetError, match="cannot run in this process"):
        model._machine()  # in-process VMs (bench) refuse, they do not crash


def test_in_memory_multi_io_model_under_qemu():
    """Compiled in memory (exported to a temp file on first run), preset, two inputs/outputs."""
    if MISSING:
        pytest.skip(f"not installed: {', '.join(MISSING)}")
    model = accelc.compile(two_in_two_out_model(), "arm:cortex-a76")
    rng = np.random.default_rng(1)
    feeds = {n: rng.standard_normal((2, 3)).astype(np.float32) for n in ("a", "b")}
    got = model.run(feeds)
    want = ort_run(two_in_two_out_model(), feeds)
    assert list(got) == list(want) == ["sum", "prod"]
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=RTOL, atol=ATOL)
    assert len(model.benchmark(feeds, repeat=2, warmup=1)) == 2


ALL_PRESETS = ["aarch64", "cortex-a72", "cortex-a76", "neoverse-n1", "apple-m1", "graviton3"]


@pytest.mark.parametrize(
    "preset, mattr",
    [pytest.param(p, None, marks=pytest.mark.slow) for p in ALL_PRESETS]
    + [pytest.param("graviton3", "+sve", id="graviton3-sve")],  # SVE: the riskiest codegen, always run
)
def test_every_preset_runs_digits_under_qemu(preset, mattr):
    if MISSING:
        pytest.skip(f"not installed: {', '.join(MISSING)}")
    model = accelc.compile(str(default_model_path()), f"arm:{preset}", input_shapes=DEFAULT_INPUT_SHAPE,
                           target_options={"mattr": mattr})
    x = digits_input(5)
    np.testing.assert_allclose(model.run({"input": x})["logits"], digits_reference(x), rtol=RTOL, atol=ATOL)
    if mattr == "+sve":  # the SVE code really is in there (qemu-aarch64 emulates SVE)
        asm = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(model._runner.artifact)],
                             capture_output=True, text=True, check=True).stdout
        assert "ptrue\tp" in asm or "\tz0." in asm


def test_input_errors_through_the_aarch64_path(digits_arm, tmp_path):
    # Checked in Python before qemu starts ...
    assert_one_line_error(accelc_cli("run", digits_arm, "--input", f"input={tmp_path / 'nope.npy'}"),
                          "file not found")
    np.save(tmp_path / "wrong.npy", np.zeros((1, 64), np.float32))
    assert_one_line_error(accelc_cli("run", digits_arm, "--input", f"input={tmp_path / 'wrong.npy'}"),
                          "has shape [1, 64]")
    with pytest.raises(AccelcError, match="missing input 'input'"):
        accelc.load(digits_arm).run({})
    # ... and by the aarch64 runner itself (exit 2 there becomes a one-line AccelcError here).
    with pytest.raises(AccelcError, match="missing input 'input'"):
        cross.QemuRunner(digits_arm).run([], [], ["logits"])


def test_missing_qemu_is_one_line_error(digits_arm):
    env = dict(os.environ, PATH="/nonexistent")
    assert_one_line_error(accelc_cli("run", digits_arm, env=env), "qemu-aarch64 is not installed", "qemu-user")


def test_bundle_runs_from_an_empty_directory(digits_arm, tmp_path):
    bundle = tmp_path / "digits-board.tar.gz"
    proc = accelc_cli("package", digits_arm, "-o", bundle)
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(bundle) as tar:
        names = sorted(tar.getnames())
        assert names == sorted(f"digits-board/{n}" for n in (
            "run.sh", "model.so", "bin/accelc-run", "lib/libtvm_runtime.so", "lib/libtvm_ffi.so"))
        board = tmp_path / "board"
        board.mkdir()
        tar.extractall(board, filter="data")
    x = digits_input(7)
    np.save(board / "x.npy", x)
    # From the extracted folder's parent, with a clean environment: nothing of the host's TVM.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    run = subprocess.run(["./digits-board/run.sh", "--input", "input=x.npy", "--output-dir", "out", "--repeat", "1"],
                         cwd=board, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    np.testing.assert_allclose(np.load(board / "out" / "logits.npy"), digits_reference(x), rtol=RTOL, atol=ATOL)
    # The board-side runner keeps the one-line error rule.
    bad = subprocess.run(["./digits-board/run.sh"], cwd=board, env=env, capture_output=True, text=True, timeout=300)
    assert_one_line_error(bad, "missing input 'input'")


def test_package_refuses_host_artifacts(tmp_path):
    host = accelc.compile(two_in_two_out_model()).export(tmp_path / "host.so")
    assert_one_line_error(accelc_cli("package", host, "-o", tmp_path / "b.tar.gz"), "not aarch64", "--target arm")


# ------------------------------------------------------------------------- light model zoo (slow)
@pytest.mark.slow
@pytest.mark.parametrize("name", ["squeezenet", "shufflenet", "resnet50"])
def test_light_model_under_qemu_matches_onnxruntime(name):
    if MISSING:
        pytest.skip(f"not installed: {', '.join(MISSING)}")
    from zoo import expose_pre_softmax, final_softmax_inputs, load_light_model, random_feeds, randomize_weights

    model = expose_pre_softmax(randomize_weights(load_light_model(name), 0))
    feeds = random_feeds(model, 1)
    ref = ort_run(model, feeds)
    for key, value in ref.items():
        assert_not_constant(value, f"{name}:{key}")
    start = time.perf_counter()
    compiled = accelc.compile(model, "arm")
    compiled_at = time.perf_counter()
    out = compiled.run(feeds)
    ran_at = time.perf_counter()
    print(f"{name}: compile {compiled_at - start:.0f} s, export + run under qemu {ran_at - compiled_at:.0f} s")
    assert list(out) == list(ref)
    logits = set(final_softmax_inputs(model))
    for key, expected in ref.items():
        err, scale = np.max(np.abs(out[key] - expected)), np.max(np.abs(expected))
        print(f"{name} {key}: max abs err {err:.3g}, max |ref| {scale:.3g}")
        if key in logits:
            assert_close_normwise(out[key], expected, f"{name}:{key} (logits, aarch64 under qemu)")
        else:
            np.testing.assert_allclose(out[key], expected, rtol=RTOL, atol=ATOL, err_msg=f"{name}:{key}")
