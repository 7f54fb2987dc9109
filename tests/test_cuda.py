"""The CUDA target without a GPU: presets, options, and artifacts that carry a kernel image for
the requested architecture with every kernel thread-bound (issue 6).

Each compile runs the public ``accelc.compile`` once; the scheduled IR is captured on the way
(after the backend's ``bind_passes``, the last scheduling step) and checked with
``targets.cuda_inspect.unbound_kernels`` (every kernel launched over blocks and threads) and
``cross_thread_local_reads`` (no thread reads registers another thread wrote: the bug that
stock dlight has on ShuffleNet); the exported ``.so`` is read back with
``read_cuda_modules`` (the fatbin entries: ELF cubin ("sass") and PTX, each with its arch).

Compile times on the 2-core CI machine (nvcc included): the digits model ~10 s per arch,
SqueezeNet ~35-100 s, the other light models 1-5 min each: the default run compiles the
digits model for both arches and SqueezeNet for sm_90; the whole zoo for both arches is
``-m slow``. Tests that need a GPU skip with the reason when there is none.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_runner_cpp import runner  # noqa: F401  (fixture: the built accelc-run)
from zoo import light_model_names, load_light_model

from accelc.errors import TargetError
from accelc.targets import cuda, cuda_inspect, registry

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc (CUDA toolkit) on PATH")

ARCHES = ("sm_80", "sm_90")
# SqueezeNet; ShuffleNet is where stock dlight miscompiled (grouped convs, batch 1).
DEFAULT_ZOO = {("squeezenet", "sm_90"), ("shufflenet", "sm_80")}


def has_gpu() -> bool:
    return cuda.detect_arch() is not None


# ------------------------------------------------------------------------------ the target
def test_registered_as_a_gpu_target():
    backend = registry.get("cuda")
    assert "cuda" in registry.names()
    assert backend.device_type() == "cuda"


@pytest.mark.parametrize("arch", sorted(cuda.CUDA_ARCHS))
def test_arch_presets_make_a_cuda_target_with_an_llvm_host(arch):
    target = registry.get("cuda").make({"arch": arch})
    assert target.kind.name == "cuda"
    assert str(target.arch) == arch
    assert target.host.kind.name == "llvm"
    assert int(target.attrs["max_num_threads"]) == 1024


@pytest.mark.parametrize("spelling", ["sm_86", "86", "8.6", "compute_86", "SM_86"])
def test_arch_spellings(spelling):
    assert str(registry.get("cuda").make({"arch": spelling}).arch) == "sm_86"


def test_mcpu_is_an_alias_for_arch():
    # The CLI's --mcpu reaches the backend as "mcpu": `accelc compile --target cuda --mcpu sm_89`.
    options = {"mcpu": "sm_89", "num-cores": None, "mattr": None}
    assert str(registry.get("cuda").make(options).arch) == "sm_89"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"arch": "sm_75"}, "unknown CUDA architecture"),
        ({"arch": "sm_80", "mcpu": "sm_90"}, "disagree"),
        ({"arch": "sm_80", "num-cores": 4}, "does not apply to target 'cuda'"),
        ({"arch": "sm_80", "libs": "cutlass"}, "unknown CUDA library"),
    ],
)
def test_bad_options_are_user_errors(options, message):
    with pytest.raises(TargetError, match=message):
        registry.get("cuda").make(options)


def test_without_arch_and_gpu_asks_for_one(monkeypatch):
    monkeypatch.setattr(cuda, "detect_arch", lambda: None)
    with pytest.raises(TargetError, match="--mcpu"):
        registry.get("cuda").make({})


def test_arch_detected_from_nvidia_smi(monkeypatch):
    monkeypatch.setattr(cuda.shutil, "which", lambda name: "/usr/bin/nvidia-smi")

    def fake_run(cmd, **kwargs):
        assert "--query-gpu=compute_cap" in cmd
        return subprocess.CompletedProcess(cmd, 0, stdout="9.0\n9.0\n", stderr="")

    monkeypatch.setattr(cuda.subprocess, "run", fake_run)
    assert cuda.detect_arch() == "sm_90"
    assert str(registry.get("cuda").make({}).arch) == "sm_90"


def test_no_nvidia_smi_means_no_detection(monkeypatch):
    monkeypatch.setattr(cuda.shutil, "which", lambda name: None)
    assert cuda.detect_arch() is None


@pytest.mark.parametrize("lib", ["cublas", "cudnn"])
def test_library_dispatch_only_where_tvm_has_it(lib):
    if cuda.library_available(lib):
        target = registry.get("cuda").make({"arch": "sm_90", "libs": lib})
        assert lib in [str(x) for x in target.attrs["libs"]]
    else:
        # The PyPI apache-tvm wheels are built without cuBLAS/cuDNN (relax.ext.* missing).
        with pytest.raises(TargetError, match=f"no {lib} support"):
            registry.get("cuda").make({"arch": "sm_90", "libs": lib})


# ------------------------------------------------------------------- passes and inspection
def test_sanitize_param_names_makes_c_identifiers():
    import tvm
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("gpu_0/data_0", relax.TensorType((2, 3), "float32"))
    y = relax.Var("gpu_0_data_0", relax.TensorType((2, 3), "float32"))  # the obvious name is taken
    z = relax.Var("1x", relax.TensorType((2, 3), "float32"))
    with bb.function("main", [x, y, z]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.add(relax.op.add(x, y), z))
        bb.emit_func_output(out)
    before = bb.get()
    after = cuda.sanitize_param_names()(before)
    assert [p.name for p in after["main"].params] == ["gpu_0_data_0_1", "gpu_0_data_0", "v_1x"]
    tvm.ir.assert_structural_equal(after, before)  # same program, only names differ


def _grouped_conv_relu_module():
    """ShuffleNet's 1x1 grouped conv (136 channels, 4 groups, 14x14, batch 1) + bias + ReLU,
    legalized and fused: the shape on which stock dlight's Reduction rule miscompiles."""
    import tvm
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 136, 14, 14), "float32"))
    w = relax.Var("w", relax.TensorType((136, 34, 1, 1), "float32"))
    b = relax.Var("b", relax.TensorType((1, 136, 1, 1), "float32"))
    with bb.function("main", [x, w, b]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, w, groups=4))
            out = bb.emit_output(relax.op.nn.relu(relax.op.add(y, b)))
        bb.emit_func_output(out)
    return tvm.transform.Sequential([
        relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
        relax.transform.FuseOps(), relax.transform.FuseTIR(),
    ])(bb.get())


def test_reduction_rule_keeps_each_thread_on_its_own_registers():
    # Stock dlight (TVM 0.27) schedules this kernel so that the ReLU epilogue reads registers
    # other threads wrote: ShuffleNet batch 1 came out 1.7e7 off on an H200. accelc's rule
    # passes the reduced values through shared memory instead.
    from tvm.s_tir import dlight as dl

    target = registry.get("cuda").make({"arch": "sm_80"})
    with target:
        stock = dl.ApplyDefaultSchedule(dl.gpu.Reduction())(_grouped_conv_relu_module())
        ours = cuda.default_gpu_schedule()(_grouped_conv_relu_module())
    assert cuda_inspect.cross_thread_local_reads(stock), "stock dlight is fixed: drop targets/cuda.py's _reduction_rule"
    assert cuda_inspect.cross_thread_local_reads(ours) == []
    assert cuda_inspect.unbound_kernels(ours) == []


def test_fatbin_reader_rejects_other_bytes():
    assert cuda_inspect.fatbin_images(b"\x7fELF" + b"\0" * 60) == ()
    assert cuda_inspect.read_cuda_modules.__doc__  # documented format


# --------------------------------------------------------------------- compile and export
def compile_and_export(model, arch: str, path: Path, monkeypatch, input_shapes=None, opt_level=3):
    """accelc.compile + export; returns (IR problems, CUDA modules, compiled model), the IR
    problems being the scheduled IR's unbound kernels and cross-thread register reads."""
    import accelc

    captured = []
    original = cuda.CUDABackend.bind_passes

    def capturing(self, target):
        import tvm

        @tvm.transform.module_pass(opt_level=0, name="test.capture")
        def capture(mod, _ctx):
            captured.append(mod)
            return mod

        return original(self, target) + [capture]

    monkeypatch.setattr(cuda.CUDABackend, "bind_passes", capturing)
    compiled = accelc.compile(model, "cuda", input_shapes=input_shapes, opt_level=opt_level, target_options={"arch": arch})
    compiled.export(path)
    assert compiled.signature.target_name == "cuda" and compiled.signature.target["arch"] == arch
    (mod,) = captured
    problems = cuda_inspect.unbound_kernels(mod) + cuda_inspect.cross_thread_local_reads(mod)
    return problems, cuda_inspect.read_cuda_modules(path), compiled


def assert_kernels_for(modules, arch: str):
    assert len(modules) == 1, modules
    (module,) = modules
    assert module.fmt == "cubin"  # compiled at build time, not CUDA source left for the GPU machine
    assert module.kernels, "no kernels"
    assert module.unbound() == [], f"kernels launched without block/thread indices: {module.unbound()}"
    kinds = {(image.kind, image.arch) for image in module.images}
    assert ("sass", arch) in kinds, kinds  # machine code for the requested GPU
    assert ("ptx", arch) in kinds, kinds  # and PTX, so newer GPUs JIT it
    assert all(image.arch == arch for image in module.images), kinds


@pytest.mark.parametrize("arch", ARCHES)
def test_digits_model(arch, tmp_path, monkeypatch):
    from accelc.models import DEFAULT_INPUT_SHAPE, default_model_path

    problems, modules, compiled = compile_and_export(
        str(default_model_path()), arch, tmp_path / "digits.so", monkeypatch, input_shapes=DEFAULT_INPUT_SHAPE
    )
    assert problems == []
    assert_kernels_for(modules, arch)
    data = (tmp_path / "digits.so").read_bytes()
    assert data.count(b"\x7fELF") >= 2  # the host library and the kernels' cubin


def test_opt_level_0_still_binds_every_kernel(tmp_path, monkeypatch):
    # O0 runs no default schedules: bind_passes alone must make each kernel launchable.
    from accelc.models import DEFAULT_INPUT_SHAPE, default_model_path

    problems, modules, _ = compile_and_export(
        str(default_model_path()), "sm_80", tmp_path / "o0.so", monkeypatch,
        input_shapes=DEFAULT_INPUT_SHAPE, opt_level=0,
    )
    assert problems == []
    assert_kernels_for(modules, "sm_80")


def test_cuda_artifact_does_not_run_on_the_cpu(tmp_path, monkeypatch):
    import accelc
    from accelc.models import DEFAULT_INPUT_SHAPE, default_model_path

    _, _, compiled = compile_and_export(
        str(default_model_path()), "sm_90", tmp_path / "d.so", monkeypatch, input_shapes=DEFAULT_INPUT_SHAPE
    )
    loaded = accelc.load(tmp_path / "d.so")
    assert loaded.signature.target_name == "cuda"
    with pytest.raises(TargetError, match="cannot run"):
        loaded.run({"input": np.zeros((1, 1, 8, 8), np.float32)})


ZOO_CASES = [
    pytest.param(name, arch, marks=() if (name, arch) in DEFAULT_ZOO else pytest.mark.slow)
    for name in light_model_names()
    for arch in ARCHES
]


@pytest.mark.parametrize("name, arch", ZOO_CASES)
def test_light_zoo_model(name, arch, tmp_path, monkeypatch):
    problems, modules, _ = compile_and_export(load_light_model(name), arch, tmp_path / f"{name}.so", monkeypatch)
    assert problems == []
    assert_kernels_for(modules, arch)


# ------------------------------------------------------------------------- with a GPU only
@pytest.mark.skipif(not has_gpu(), reason="no NVIDIA GPU here (nvidia-smi finds none): the run on a GPU is benchmarks/gpu_check.sh")
def test_digits_on_the_gpu_match_onnxruntime(tmp_path, monkeypatch):
    from zoo import ort_run

    from accelc.models import DEFAULT_INPUT_SHAPE, default_model_path, load_digits_test

    arch = cuda.detect_arch()
    if arch not in cuda.CUDA_ARCHS:
        pytest.skip(f"this GPU is {arch}; presets are {sorted(cuda.CUDA_ARCHS)}")
    compile_and_export(str(default_model_path()), arch, tmp_path / "d.so", monkeypatch, input_shapes=DEFAULT_INPUT_SHAPE)
    runner = shutil.which("accelc-run")
    if runner is None:
        pytest.skip("accelc-run not installed")
    images, _ = load_digits_test()
    np.save(tmp_path / "x.npy", images[:1])
    proc = subprocess.run(
        [runner, str(tmp_path / "d.so"), "--device", "cuda", "--input", f"input={tmp_path / 'x.npy'}",
         "--output-dir", str(tmp_path / "out"), "--repeat", "3"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    import onnx

    ref = ort_run(onnx.load(str(default_model_path())), {"input": images[:1]})["logits"]
    got = np.load(tmp_path / "out" / "logits.npy")
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------ accelc-run
@pytest.fixture(scope="module")
def digits_sm90(tmp_path_factory):
    """The digits model compiled for sm_90 and exported (through the public API)."""
    import accelc
    from accelc.models import DEFAULT_INPUT_SHAPE, default_model_path

    path = tmp_path_factory.mktemp("cuda_run") / "digits_sm90.so"
    accelc.compile(str(default_model_path()), "cuda", input_shapes=DEFAULT_INPUT_SHAPE,
                   target_options={"arch": "sm_90"}).export(path)
    return path


def _run(runner, *args):
    return subprocess.run([str(runner), *map(str, args)], capture_output=True, text=True, timeout=120)


def test_runner_refuses_a_cuda_artifact_on_the_cpu(runner, digits_sm90):
    proc = _run(runner, digits_sm90, "--device", "cpu", "--fill-mode", "random")
    assert proc.returncode == 2
    assert "holds CUDA kernels" in proc.stderr and "--device cuda" in proc.stderr


def test_runner_device_must_be_cpu_or_cuda(runner, digits_sm90):
    proc = _run(runner, digits_sm90, "--device", "tpu")
    assert proc.returncode == 2 and "--device must be cpu or cuda" in proc.stderr


@pytest.mark.skipif(has_gpu(), reason="a GPU is here: the run itself is checked instead")
def test_runner_without_a_gpu_says_what_is_missing(runner, digits_sm90):
    # A CUDA artifact defaults to --device cuda; here the driver (or a GPU) is missing.
    proc = _run(runner, digits_sm90, "--fill-mode", "random")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert "CUDA" in proc.stderr
