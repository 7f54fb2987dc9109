"""The C++ runner ``accelc-run``: same numbers as the Python VM, the latency line, and errors.

The runner is taken from ``$ACCELC_RUN`` if set, else the installed ``accelc-run`` (next to
this Python, or on PATH) when it is newer than its sources, else built with CMake into
``build/pytest-runner`` (incremental, so only the first run pays the ~20 s compile).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
RUNNER_SOURCES = [
    REPO / "runner" / "accelc_run.cc",
    REPO / "runner" / "CMakeLists.txt",
    REPO / "CMakeLists.txt",
    REPO / "cmake" / "AccelcTVM.cmake",
]
LATENCY_RE = re.compile(
    r"^latency_ms: median=\d+\.\d{3} min=\d+\.\d{3} mean=\d+\.\d{3} repeat=(\d+)$", re.M
)

# --- the runner -------------------------------------------------------------------------------


def _newer_than_sources(exe: Path) -> bool:
    stamps = [s.stat().st_mtime for s in RUNNER_SOURCES if s.exists()]
    return exe.is_file() and os.access(exe, os.X_OK) and exe.stat().st_mtime >= max(stamps, default=0)


def _build_runner() -> Path:
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake not found; cannot build accelc-run")
    build = REPO / "build" / "pytest-runner"
    build.mkdir(parents=True, exist_ok=True)
    try:
        from filelock import FileLock

        lock = FileLock(str(build) + ".lock")
    except ImportError:  # pragma: no cover - filelock is a dependency
        import contextlib

        lock = contextlib.nullcontext()
    with lock:
        if not (build / "CMakeCache.txt").exists():
            subprocess.run(
                [cmake, "-S", str(REPO), "-B", str(build), f"-DPython_EXECUTABLE={sys.executable}"],
                check=True, capture_output=True, text=True,
            )
        proc = subprocess.run(
            [cmake, "--build", str(build), "-j2", "--target", "accelc-run"],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            pytest.fail("building accelc-run failed:\n" + proc.stdout[-4000:] + proc.stderr[-4000:])
    return build / "runner" / "accelc-run"


@pytest.fixture(scope="module")
def runner() -> Path:
    if os.environ.get("ACCELC_RUN"):
        return Path(os.environ["ACCELC_RUN"])
    candidates = [Path(sys.executable).parent / "accelc-run"]
    on_path = shutil.which("accelc-run")
    if on_path:
        candidates.append(Path(on_path))
    for exe in candidates:
        if _newer_than_sources(exe):
            return exe
    return _build_runner()


def run(runner: Path, *args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(runner), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


# --- a 2-input / 2-output artifact ---------------------------------------------------------------


def _c_string_literal(text: str) -> str:
    out = []
    for byte in text.encode("utf-8"):
        if byte in (0x22, 0x5C):  # " and backslash
            out.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F and byte != 0x3F:  # no '?': avoid trigraphs
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def export_with_signature(ex, path: Path, signature: dict) -> None:
    """Export like accelc.artifact.export: the .so gets `accelc_signature_json`.

    TVM compiles the extra file with g++ (as C++), where a namespace-scope `const` has
    internal linkage: `extern "C"` keeps the symbol exported and unmangled.
    """
    from tvm.support import cc as tvm_cc

    src = path.with_suffix(".sig.c")
    src.write_text(
        "#ifdef __cplusplus\n#define ACCELC_EXTERN_C extern \"C\"\n#else\n#define ACCELC_EXTERN_C\n#endif\n"
        'ACCELC_EXTERN_C __attribute__((section(".accelc_signature"), used, visibility("default")))\n'
        f"const char accelc_signature_json[] = {_c_string_literal(json.dumps(signature))};\n"
    )

    def fcompile(output, objects, options=None, **kwargs):
        return tvm_cc.create_shared(output, list(objects) + [str(src)], options=options, **kwargs)

    fcompile.output_format = "so"
    ex.export_library(str(path), fcompile=fcompile)


SHAPE = [2, 3, 4]


def _onnx_model():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)
    idx = helper.make_tensor_value_info("idx/in", TensorProto.INT32, SHAPE)
    s = helper.make_tensor_value_info("sum", TensorProto.FLOAT, SHAPE)
    p = helper.make_tensor_value_info("prod/1", TensorProto.INT32, SHAPE)
    nodes = [
        helper.make_node("Cast", ["idx/in"], ["idx_f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["x", "idx_f"], ["sum"]),
        helper.make_node("Mul", ["idx/in", "idx/in"], ["prod/1"]),
    ]
    graph = helper.make_graph(nodes, "two_by_two", [x, idx], [s, p])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


SIGNATURE = {
    "format": 1,
    "accelc_version": "0.1.0",
    "target": {"kind": "llvm", "num-cores": 2},
    "target_name": "llvm",
    "inputs": [
        {"name": "x", "shape": SHAPE, "dtype": "float32"},
        {"name": "idx/in", "shape": SHAPE, "dtype": "int32"},
    ],
    "outputs": [
        {"name": "sum", "shape": SHAPE, "dtype": "float32"},
        {"name": "prod/1", "shape": SHAPE, "dtype": "int32"},
    ],
    "opt_level": 3,
    "model": {"name": "two_by_two", "sha256": "0" * 64},
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(_onnx_model(), keep_params_in_input=False)
    ex = tvm.compile(mod, tvm.target.Target({"kind": "llvm", "num-cores": 2}))
    path = tmp_path_factory.mktemp("artifact") / "two_by_two.so"
    export_with_signature(ex, path, SIGNATURE)
    return ex, path


@pytest.fixture(scope="module")
def artifact(compiled) -> Path:
    return compiled[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    idx = rng.integers(-1000, 1000, SHAPE).astype(np.int32)
    np.save(d / "x.npy", x)
    np.save(d / "idx.npy", idx)
    return {"x": x, "idx": idx, "dir": d}


def _args(inputs):
    return ["--input", f"x={inputs['dir'] / 'x.npy'}", "--input", f"idx/in={inputs['dir'] / 'idx.npy'}"]


# --- tests ---------------------------------------------------------------------------------------


def test_outputs_match_python_vm_and_numpy(runner, compiled, inputs, tmp_path):
    import tvm
    from tvm import relax

    ex, artifact = compiled
    proc = run(runner, artifact, *_args(inputs), "--output-dir", tmp_path / "out",
               "--repeat", 5, "--warmup", 2, "--threads", 2)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""

    m = LATENCY_RE.search(proc.stdout)
    assert m, proc.stdout
    assert m.group(1) == "5"
    assert proc.stdout.rstrip().splitlines()[-1] == m.group(0)

    # Names are sanitized for the file system: "prod/1" -> prod_1.npy.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["prod_1.npy", "sum.npy"]
    got_sum = np.load(tmp_path / "out" / "sum.npy")
    got_prod = np.load(tmp_path / "out" / "prod_1.npy")
    assert got_sum.dtype == np.float32 and got_sum.shape == tuple(SHAPE)
    assert got_prod.dtype == np.int32 and got_prod.shape == tuple(SHAPE)

    x, idx = inputs["x"], inputs["idx"]
    vm = relax.VirtualMachine(ex, tvm.cpu())
    want = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(idx))
    np.testing.assert_array_equal(got_sum, want[0].numpy())
    np.testing.assert_array_equal(got_prod, want[1].numpy())
    np.testing.assert_array_equal(got_sum, x + idx.astype(np.float32))
    np.testing.assert_array_equal(got_prod, idx * idx)


def test_default_output_dir_is_cwd(runner, artifact, inputs, tmp_path):
    proc = run(runner, artifact, *_args(inputs), "--repeat", 1, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "sum.npy").is_file() and (tmp_path / "prod_1.npy").is_file()
    assert LATENCY_RE.search(proc.stdout).group(1) == "1"


def test_signature_flag(runner, artifact):
    proc = run(runner, artifact, "--signature")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == SIGNATURE


def test_npy_variants(runner, artifact, inputs, tmp_path):
    """Big-endian data and .npy format 2.0 read correctly; 1-d Fortran flag is harmless."""
    x_be = inputs["x"].astype(">f4")
    np.save(tmp_path / "x_be.npy", x_be)
    with open(tmp_path / "idx_v2.npy", "wb") as f:
        np.lib.format.write_array(f, inputs["idx"], version=(2, 0))
    proc = run(runner, artifact, "--input", f"x={tmp_path / 'x_be.npy'}",
               "--input", f"idx/in={tmp_path / 'idx_v2.npy'}", "--output-dir", tmp_path, "--repeat", 1)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "sum.npy"),
                                  inputs["x"] + inputs["idx"].astype(np.float32))


def test_fill_mode(runner, artifact, inputs, tmp_path):
    proc = run(runner, artifact, "--input", f"x={inputs['dir'] / 'x.npy'}", "--fill-mode", "ones",
               "--output-dir", tmp_path, "--repeat", 1)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "sum.npy"), inputs["x"] + np.float32(1))
    np.testing.assert_array_equal(np.load(tmp_path / "prod_1.npy"), np.ones(SHAPE, np.int32))


def _bad_inputs(d: Path, inputs) -> dict[str, list[str]]:
    x, idx = inputs["x"], inputs["idx"]
    np.save(d / "x_shape.npy", x.reshape(2, 12))
    np.save(d / "x_f64.npy", x.astype(np.float64))
    np.save(d / "x_fortran.npy", np.asfortranarray(x))
    (d / "not_npy.npy").write_bytes(b"hello")
    (d / "not_an_artifact.so").write_text("not a shared library\n")
    xs, ids = f"x={inputs['dir'] / 'x.npy'}", f"idx/in={inputs['dir'] / 'idx.npy'}"
    return {
        "missing_input": ["--input", xs],
        "unknown_name": ["--input", xs, "--input", ids, "--input", f"y={inputs['dir'] / 'x.npy'}"],
        "duplicate_name": ["--input", xs, "--input", xs, "--input", ids],
        "wrong_shape": ["--input", f"x={d / 'x_shape.npy'}", "--input", ids],
        "wrong_dtype": ["--input", f"x={d / 'x_f64.npy'}", "--input", ids],
        "fortran_order": ["--input", f"x={d / 'x_fortran.npy'}", "--input", ids],
        "not_npy": ["--input", f"x={d / 'not_npy.npy'}", "--input", ids],
        "missing_input_file": ["--input", f"x={d / 'nope.npy'}", "--input", ids],
        "bad_input_syntax": ["--input", str(inputs["dir"] / "x.npy"), "--input", ids],
        "bad_repeat": ["--input", xs, "--input", ids, "--repeat", "0"],
        "unknown_option": ["--input", xs, "--input", ids, "--frobnicate"],
    }


BAD_CASES = ["missing_input", "unknown_name", "duplicate_name", "wrong_shape", "wrong_dtype",
             "fortran_order", "not_npy", "missing_input_file", "bad_input_syntax", "bad_repeat",
             "unknown_option"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_input_errors_exit_2_with_one_line(runner, artifact, inputs, tmp_path, case):
    args = _bad_inputs(tmp_path, inputs)[case]
    proc = run(runner, artifact, *args, "--output-dir", tmp_path / "out")
    assert proc.returncode == 2, (case, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert not (tmp_path / "out").exists(), "no outputs may be written on an input error"
    expect = {
        "missing_input": "missing input 'idx/in'",
        "unknown_name": "unknown input 'y'",
        "wrong_shape": "expects shape (2, 3, 4), got (2, 12)",
        "wrong_dtype": "expects dtype float32, got float64",
        "fortran_order": "Fortran",
        "missing_input_file": "not found",
    }.get(case)
    if expect:
        assert expect in lines[0]


@pytest.mark.parametrize("which", ["missing", "not_elf", "no_signature"])
def test_bad_artifact_exit_2(runner, inputs, tmp_path, which):
    if which == "missing":
        path = tmp_path / "nope.so"
    elif which == "not_elf":
        path = tmp_path / "text.so"
        path.write_text("not a shared library\n")
    else:  # a real shared library without the signature
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            pytest.skip("no C compiler")
        (tmp_path / "plain.c").write_text("int plain(void) { return 1; }\n")
        path = tmp_path / "plain.so"
        subprocess.run([cc, "-shared", "-fPIC", "-o", str(path), str(tmp_path / "plain.c")], check=True)
    proc = run(runner, path, *_args(inputs), "--output-dir", tmp_path / "out")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr


def test_help(runner):
    proc = run(runner, "--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: accelc-run")


def test_accelc_artifact_export_interop(runner, compiled, inputs, tmp_path):
    """Artifacts written by accelc.artifact.export run too (symbol or ELF-section signature)."""
    artifact_mod = pytest.importorskip("accelc.artifact")
    signature_mod = pytest.importorskip("accelc.signature")
    Signature, TensorSpec = signature_mod.Signature, signature_mod.TensorSpec
    sig = Signature(
        inputs=tuple(TensorSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in SIGNATURE["inputs"]),
        outputs=tuple(TensorSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in SIGNATURE["outputs"]),
        target=SIGNATURE["target"], target_name="llvm", accelc_version="0.1.0",
    )
    path = artifact_mod.export(compiled[0], tmp_path / "lead.so", sig)
    proc = run(runner, path, *_args(inputs), "--output-dir", tmp_path / "out", "--repeat", 1)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "prod_1.npy"), inputs["idx"] * inputs["idx"])
    assert json.loads(run(runner, path, "--signature").stdout)["inputs"][1]["name"] == "idx/in"


def test_threads_default_to_the_artifacts_cores(runner, artifact, inputs, tmp_path):
    """TVM's own default is half the logical CPUs (1 thread on a 2-core machine): the runner
    starts the pool with the target's num-cores unless --threads or TVM_NUM_THREADS say."""
    env = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}

    def threads(*extra, environ=env):
        proc = subprocess.run([str(runner), artifact, *_args(inputs), "--output-dir", tmp_path, *extra],
                              capture_output=True, text=True, timeout=120, env=environ)
        assert proc.returncode == 0, proc.stderr
        return int(re.search(r"^threads: (\d+)$", proc.stdout, re.M).group(1))

    assert threads() == SIGNATURE["target"]["num-cores"] == 2
    assert threads("--threads", "1") == 1
    assert threads(environ={**env, "TVM_NUM_THREADS": "1"}) == 1
