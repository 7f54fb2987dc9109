"""The driver: each CLI command is one function taking a dataclass of options.

The CLI (``accelc/cli.py``) only parses arguments into these dataclasses; everything a
command does lives here, so it can be called from Python and tested without a subprocess.
Functions print their human-readable report through ``out`` (default: stdout).
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import AccelcError, InputMismatchError

FILL_MODES = ("random", "zeros", "ones")


def _print(*args, out=None):
    print(*args, file=out or sys.stdout)


# --------------------------------------------------------------------------------- compile
@dataclass(frozen=True)
class CompileOptions:
    model: str | None = None  # None: the embedded default model
    target: str = "llvm"
    output: str | None = None
    opt_level: int = 3
    input_shapes: tuple[str, ...] = ()
    mcpu: str | None = None
    num_cores: int | None = None
    mattr: str | None = None
    vta_skip_layers: str | None = None  # --vta-skip-layers: conv2d indices vta keeps on the host
    dump_ir: str | None = None
    time_passes: bool = False
    disabled_passes: tuple[str, ...] = ()  # --disabled-pass NAME[,NAME]
    sparse: float | None = None  # --sparse [THRESHOLD]: BSR kernels for sparse constant matmuls
    tuning_records: str | None = None  # --tuning-records: an `accelc tune` log; "auto": the shipped one
    # int8 quantization (accelc.quantize): --quantize int8 --calib DATA [...]
    quantize: str | None = None
    calib: str | None = None
    calib_method: str = "entropy"
    calib_percentile: float = 99.99
    per_tensor: bool = False
    keep_float: tuple[str, ...] = ()
    requantize: str | None = None  # None: the target's choice (fixedpoint on CPUs, shift for vta)
    quantize_mode: str = "realize"
    activation_dtype: str = "int8"  # --activation-dtype int8|uint8


def compile_model(opts: CompileOptions, out=None):
    """Compile ``opts.model`` and export it; return (CompiledModel, artifact path)."""
    from . import api
    from .frontend import parse_input_shapes

    input_shapes = parse_input_shapes(list(opts.input_shapes))
    if opts.model is None:
        from .models import DEFAULT_INPUT_SHAPE, default_model_path

        model = str(default_model_path())
        input_shapes = input_shapes or dict(DEFAULT_INPUT_SHAPE)
    else:
        model = opts.model
    output = Path(opts.output or Path(model).with_suffix(".so").name)
    if output.exists() and output.is_dir():
        raise AccelcError(f"output path is a directory: {output}")

    start = time.perf_counter()
    compiled = api.compile(
        model,
        opts.target,
        input_shapes=input_shapes,
        opt_level=opts.opt_level,
        target_options={"mcpu": opts.mcpu, "num-cores": opts.num_cores, "mattr": opts.mattr,
                        "vta-skip-layers": opts.vta_skip_layers},
        dump_ir=opts.dump_ir,
        time_passes=opts.time_passes,
        disabled_passes=opts.disabled_passes,
        sparse=opts.sparse,
        tuning_records=opts.tuning_records,
        quantize=opts.quantize,
        calib=opts.calib,
        calib_method=opts.calib_method,
        per_tensor=opts.per_tensor,
        keep_float=opts.keep_float,
        requantize=opts.requantize,
        quantize_mode=opts.quantize_mode,
        quantize_options={"percentile": opts.calib_percentile, "activation_dtype": opts.activation_dtype},
    )
    compiled.export(output)
    seconds = time.perf_counter() - start
    sig = compiled.signature
    _print(f"compiled {model} -> {output} ({sig.target_name}, O{opts.opt_level}, {seconds:.1f} s)", out=out)
    _print(f"  target:  {_target_text(sig.target)}", out=out)
    for t in sig.inputs:
        _print(f"  input   {t.describe()}", out=out)
    for t in sig.outputs:
        _print(f"  output  {t.describe()}", out=out)
    if compiled.report is not None:
        _print(f"  kernels: {compiled.report.kernel_launches} launched per run", out=out)
    for line in _target_summary(compiled):  # e.g. vta: which layers were offloaded, which not and why
        _print(f"  {line}", out=out)
    if compiled.tuning_note:  # tuning_records="auto": the shipped log used, or why none
        _print(f"  {compiled.tuning_note}", out=out)
    if compiled.tuning is not None:  # --tuning-records
        for line in compiled.tuning.summary("" if opts.tuning_records == "auto" else opts.tuning_records):
            _print(f"  {line}", out=out)
    if opts.dump_ir:
        _print(f"  IR after every pass written to {opts.dump_ir}/", out=out)
    if opts.time_passes and compiled.report is not None:
        _print(compiled.report.format(), out=out)
    return compiled, output


def _target_summary(compiled) -> list[str]:
    from accelc.targets import registry

    backend = registry.get(compiled.signature.target_name)
    if type(backend).compile_summary is registry.TargetBackend.compile_summary:
        return []  # nothing to say: do not build a VM for it
    return backend.compile_summary(compiled._machine())


def _target_text(target: dict) -> str:
    return " ".join(
        f"{k}={v}" for k, v in target.items()
        if k not in ("tag", "keys") and not k.startswith("feature.") and v not in ("", None)
    )


# ------------------------------------------------------------------------------------- run
@dataclass(frozen=True)
class RunOptions:
    artifact: str
    inputs: tuple[str, ...] = ()  # NAME=FILE.npy
    inputs_npz: str | None = None
    fill_mode: str = "random"
    output: str | None = None
    repeat: int = 1
    print_time: bool = False
    seed: int = 0
    rpc_tracker: str | None = None  # HOST:PORT: run on a device from this TVM RPC tracker
    rpc_key: str | None = None
    profile: bool = False  # --profile: per-kernel report (llvm: in-context times; vta: cycles per layer)
    force_serial: bool = False  # --force-serial: offloaded layers without latency hiding


def _load_array(path: str, what: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise InputMismatchError(f"{what}: file not found: {path}")
    try:
        return np.load(p, allow_pickle=False)
    except Exception as exc:
        raise InputMismatchError(f"{what}: {path} is not a readable .npy file ({exc})") from exc


def gather_inputs(signature, given: tuple[str, ...], npz: str | None, fill_mode: str, seed: int = 0):
    """Inputs by name from ``--input``/``--inputs``; the rest filled per ``fill_mode``."""
    if fill_mode not in FILL_MODES:
        raise AccelcError(f"--fill-mode must be one of {FILL_MODES}, got {fill_mode!r}")
    inputs: dict[str, np.ndarray] = {}
    if npz:
        if not Path(npz).is_file():
            raise InputMismatchError(f"--inputs: file not found: {npz}")
        try:
            with np.load(npz, allow_pickle=False) as data:
                inputs.update({k: data[k] for k in data.files})
        except Exception as exc:
            raise InputMismatchError(f"--inputs: {npz} is not a readable .npz file ({exc})") from exc
    for item in given:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputMismatchError(f"--input {item!r}: expected NAME=FILE.npy")
        inputs[name] = _load_array(path, f"--input {name}")
    rng = np.random.default_rng(seed)
    for spec in signature.inputs:
        if spec.name not in inputs:
            inputs[spec.name] = _fill(spec, fill_mode, rng)
    return inputs


def _fill(spec, mode: str, rng) -> np.ndarray:
    dtype = np.dtype(spec.dtype)
    if mode == "zeros":
        return np.zeros(spec.shape, dtype)
    if mode == "ones":
        return np.ones(spec.shape, dtype)
    if dtype.kind == "f":
        return rng.random(spec.shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, spec.shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -128), min(info.max, 127) + 1, spec.shape).astype(dtype)


def run_artifact(opts: RunOptions, out=None) -> dict[str, np.ndarray]:
    from . import api

    if opts.repeat < 1:
        raise AccelcError(f"--repeat must be >= 1, got {opts.repeat}")
    compiled = api.load(opts.artifact)
    inputs = gather_inputs(compiled.signature, opts.inputs, opts.inputs_npz, opts.fill_mode, opts.seed)
    if opts.rpc_tracker or opts.rpc_key:  # same run/benchmark interface, on the remote device
        from .tuning.rpc import RemoteModel

        compiled = RemoteModel(compiled, opts.rpc_tracker, opts.rpc_key)
        _print(f"note: running on device {opts.rpc_key!r} of RPC tracker {opts.rpc_tracker}", out=out)
    elif compiled.execution_note:  # e.g. an aarch64 artifact on x86-64: runs under qemu-aarch64
        _print(f"note: {compiled.execution_note}", out=out)
    outputs = compiled.run(inputs)
    if opts.output:
        Path(opts.output).parent.mkdir(parents=True, exist_ok=True)
        np.savez(opts.output, **outputs)
        _print(f"wrote {len(outputs)} output(s) to {opts.output}", out=out)
    else:
        for name, value in outputs.items():
            flat = value.reshape(-1)
            head = np.array2string(flat[:8], precision=5, separator=", ")
            _print(f"{name}: {value.dtype}{list(value.shape)} {head}{' ...' if flat.size > 8 else ''}", out=out)
    if opts.print_time or opts.repeat > 1:
        times = compiled.benchmark(inputs, repeat=opts.repeat, warmup=1)
        _print(format_times(times), out=out)
    if opts.profile or opts.force_serial:
        _print(_profile(compiled, inputs, opts.force_serial), out=out)
    return outputs


def _profile(compiled, inputs, force_serial: bool) -> str:
    import tvm

    from accelc.targets import registry

    backend = registry.get(compiled.signature.target_name)
    args = [tvm.runtime.tensor(a, tvm.cpu()) for a in compiled.signature.check_inputs(inputs)]
    return backend.profile(compiled._machine(), args, force_serial)


def format_times(times: list[float]) -> str:
    std = statistics.pstdev(times) if len(times) > 1 else 0.0
    return (
        f"latency (ms) over {len(times)} run(s): median {statistics.median(times):.3f}  "
        f"mean {statistics.fmean(times):.3f}  min {min(times):.3f}  max {max(times):.3f}  std {std:.3f}"
    )


# --------------------------------------------------------------------------------- package
@dataclass(frozen=True)
class PackageOptions:
    artifact: str
    output: str | None = None  # default: <artifact stem>.tar.gz in the current directory


def package(opts: PackageOptions, out=None) -> Path:
    """Write the tarball to copy to the board: model, cross-built runner, runtime, run.sh."""
    from . import cross

    output = Path(opts.output or Path(opts.artifact).with_suffix(".tar.gz").name)
    start = time.perf_counter()
    path = cross.package(opts.artifact, output)
    name = cross.bundle_name(output)
    _print(f"packaged {opts.artifact} -> {path} ({path.stat().st_size / 1e6:.1f} MB, "
           f"{time.perf_counter() - start:.1f} s)", out=out)
    _print(f"  on the board: tar xzf {path.name} && {name}/run.sh --fill-mode random", out=out)
    return path


# -------------------------------------------------------------------------------- quantize
@dataclass(frozen=True)
class QuantizeOptions:
    """``accelc quantize MODEL --calib DATA -o MODEL.q.onnx``: accelc's int8 as a QDQ model."""

    model: str
    calib: str | None = None
    output: str | None = None  # default: MODEL.q.onnx in the current directory
    input_shapes: tuple[str, ...] = ()
    calib_method: str = "entropy"
    calib_percentile: float = 99.99
    per_tensor: bool = False
    keep_float: tuple[str, ...] = ()
    requantize: str = "fixedpoint"
    activation_dtype: str = "int8"

    def config(self):
        from .quantize import QuantizeConfig

        if self.calib is None:
            raise AccelcError("quantization needs calibration data: --calib FILE.npz (arrays keyed by input name, "
                              "samples along the first axis) or a directory of <input>.npy")
        return QuantizeConfig(calib_method=self.calib_method, percentile=self.calib_percentile,
                              per_tensor=self.per_tensor, keep_float=self.keep_float, requantize=self.requantize,
                              activation_dtype=self.activation_dtype)


def quantize_model(opts: QuantizeOptions, out=None) -> Path:
    """Annotate + calibrate ``opts.model`` as ``compile --quantize int8`` would, and write the
    result as a standard QDQ ONNX model (onnxruntime runs it; accelc compiles it back)."""
    from .frontend import parse_input_shapes
    from .quantize.export import write_quantized

    config = opts.config()
    output = opts.output or Path(opts.model).name.removesuffix(".onnx") + ".q.onnx"
    start = time.perf_counter()
    path, report = write_quantized(opts.model, opts.calib, config, output, parse_input_shapes(list(opts.input_shapes)))
    _print(f"quantized {opts.model} -> {path} (QDQ, {time.perf_counter() - start:.1f} s)", out=out)
    _print(report.format(), out=out)
    return path


# --------------------------------------------------------------------------------- inspect
@dataclass(frozen=True)
class InspectOptions:
    model: str
    input_shapes: tuple[str, ...] = ()
    fusion: bool = False  # print the fused kernels (accelc/fusion_report.py)
    target: str = "llvm"
    opt_level: int = 3
    sparse: float | None = None  # --sparse [THRESHOLD]: weight sparsity + SparseRewrite's rewrites
    quantize: QuantizeOptions | None = None  # --quantize int8 --calib ...: what int8 would quantize


def inspect_model(opts: InspectOptions, out=None):
    from .analysis import analyze
    from .artifact import read_signature
    from .frontend import parse_input_shapes

    if Path(opts.model).suffix == ".so":
        sig = read_signature(opts.model)
        _print(f"accelc artifact {opts.model} (accelc {sig.accelc_version}, format 1)", out=out)
        _print(f"  model:   {sig.model.get('name')} sha256 {sig.model.get('sha256', '')[:16]}...", out=out)
        _print(f"  target:  {sig.target_name}: {_target_text(sig.target)}", out=out)
        _print(f"  opt-level: {sig.opt_level}", out=out)
        for t in sig.inputs:
            _print(f"  input   {t.describe()}", out=out)
        for t in sig.outputs:
            _print(f"  output  {t.describe()}", out=out)
        return sig
    report = analyze(opts.model, parse_input_shapes(list(opts.input_shapes)))
    _print(report.format(), out=out)
    if opts.sparse is not None:
        from .prune import sparse_report

        _print(sparse_report(opts.model, parse_input_shapes(list(opts.input_shapes)), opts.sparse), out=out)
    from .quantize.export import prequantized_report, quantization_report

    if opts.quantize is not None:  # which ops --quantize int8 puts in int8, their scales
        q = opts.quantize
        _print(quantization_report(opts.model, q.calib, q.config(), parse_input_shapes(list(opts.input_shapes))).format(), out=out)
    else:  # a QDQ / QOperator model: its quantized ops and the kernels accelc realizes
        pre = prequantized_report(opts.model, parse_input_shapes(list(opts.input_shapes)))
        if pre is not None:
            _print(pre.format(), out=out)
    if opts.fusion:
        from .fusion_report import fusion_report

        fusion = fusion_report(opts.model, parse_input_shapes(list(opts.input_shapes)), opts.target, opts.opt_level)
        _print(fusion.format(), out=out)
        return fusion
    return report


# ------------------------------------------------------------------------------------ demo
@dataclass(frozen=True)
class DemoOptions:
    output: str = "out/demo/digits_cnn.so"
    opt_level: int = 3
    target: str = "llvm"


@dataclass
class DemoResult:
    artifact: Path
    accelc_accuracy: float
    ort_accuracy: float
    max_abs_diff: float
    accelc_ms: float = 0.0
    ort_ms: float = 0.0
    extra: dict = field(default_factory=dict)


def demo(opts: DemoOptions, out=None) -> DemoResult:
    """Compile the embedded digits CNN, run its held-out test set through the exported .so
    and through onnxruntime, and report both accuracies (and, on this host, latencies)."""
    import onnxruntime as ort

    from accelc.targets import registry

    from . import api
    from .models import accuracy, default_model_path, load_digits_test

    images, labels = load_digits_test()
    # Artifacts for another machine run out of process (e.g. under qemu), one process per
    # call: compile the whole test set as one batch there instead of 360 batch-1 calls.
    local = registry.get(opts.target).device_type() == "cpu"
    shapes = () if local else (f"input:{len(images)},1,8,8",)
    _, artifact = compile_model(
        CompileOptions(model=None, target=opts.target, output=opts.output, opt_level=opts.opt_level,
                       input_shapes=shapes),
        out=out,
    )
    compiled = api.load(artifact)  # run what was written, not the in-memory copy
    in_name, out_name = compiled.signature.inputs[0].name, compiled.signature.output_names[0]
    if local:
        logits = np.concatenate([compiled.run({in_name: images[i : i + 1]})[out_name] for i in range(len(images))])
    else:
        _print(f"note: {compiled.execution_note}", out=out)
        logits = compiled.run({in_name: images})[out_name]

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(default_model_path()), options, providers=["CPUExecutionProvider"])
    ref = session.run(None, {in_name: images})[0]
    result = DemoResult(
        artifact=artifact,
        accelc_accuracy=accuracy(logits, labels),
        ort_accuracy=accuracy(ref, labels),
        max_abs_diff=float(np.abs(logits - ref).max()),
    )
    _print(f"digits test set: {len(labels)} held-out images (scikit-learn digits)", out=out)
    _print(f"  top-1 accuracy  accelc (.so): {result.accelc_accuracy:.2f}%   onnxruntime: {result.ort_accuracy:.2f}%", out=out)
    _print(f"  max |logit difference|: {result.max_abs_diff:.2e}", out=out)
    if not local:
        return result  # emulated timings mean nothing

    sample = {in_name: images[:1]}
    result.accelc_ms = statistics.median(compiled.benchmark(sample, repeat=200, warmup=10))
    ort_times = []
    for _ in range(210):
        start = time.perf_counter()
        session.run(None, sample)
        ort_times.append((time.perf_counter() - start) * 1000)
    result.ort_ms = statistics.median(ort_times[10:])
    _print(
        f"  latency batch 1 (median of 200): accelc {result.accelc_ms:.3f} ms   onnxruntime {result.ort_ms:.3f} ms"
        f"   ratio {result.accelc_ms / result.ort_ms:.2f}x",
        out=out,
    )
    return result


# ----------------------------------------------------------------------------------- bench
@dataclass(frozen=True)
class BenchOptions:
    model: str
    target: str = "llvm"
    input_shapes: tuple[str, ...] = ()
    opt_level: int = 3
    repeat: int = 30
    warmup: int = 3
    threads: int = 2
    json_path: str | None = None
    seed: int = 0
    tuning_records: str | None = None  # --tuning-records: an `accelc tune` log


@dataclass
class BenchResult:
    model: str
    compile_seconds: float
    medians_ms: dict[str, float]
    times_ms: dict[str, list[float]]

    def ratio(self, engine: str, reference: str = "onnxruntime") -> float:
        return self.medians_ms[engine] / self.medians_ms[reference]

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "compile_seconds": self.compile_seconds,
            "median_ms": self.medians_ms,
            "ratio_vs_onnxruntime": {k: self.ratio(k) for k in self.medians_ms},
            "times_ms": self.times_ms,
        }


def _ort_session(model, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    source = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def bench(opts: BenchOptions, out=None) -> BenchResult:
    """Time accelc against onnxruntime (and OpenVINO when installed) in one process,
    interleaved run by run so that machine noise hits every engine alike."""
    import os

    os.environ.setdefault("TVM_NUM_THREADS", str(opts.threads))  # before TVM's pool starts
    from . import api
    from .frontend import load_onnx, parse_input_shapes

    if opts.repeat < 1 or opts.warmup < 0:
        raise AccelcError("--repeat must be >= 1 and --warmup >= 0")
    proto = load_onnx(opts.model)
    start = time.perf_counter()
    compiled = api.compile(
        proto, opts.target, input_shapes=parse_input_shapes(list(opts.input_shapes)),
        opt_level=opts.opt_level, target_options={"num-cores": opts.threads},
        tuning_records=opts.tuning_records,
    )
    compile_seconds = time.perf_counter() - start
    inputs = gather_inputs(compiled.signature, (), None, "random", opts.seed)

    import tvm

    vm = compiled._machine()
    args = [tvm.runtime.tensor(a, tvm.cpu()) for a in compiled.signature.check_inputs(inputs)]
    engines = {"accelc": lambda: vm["main"](*args)}
    session = _ort_session(proto, opts.threads)
    engines["onnxruntime"] = lambda: session.run(None, inputs)
    openvino = _openvino_runner(proto, inputs, opts.threads)
    if openvino is not None:
        engines["openvino"] = openvino

    times = _interleaved_blocks(engines, opts.repeat, opts.warmup)
    result = BenchResult(
        model=str(opts.model),
        compile_seconds=compile_seconds,
        medians_ms={k: statistics.median(v) for k, v in times.items()},
        times_ms=times,
    )
    _print(f"{Path(opts.model).name}: {opts.repeat} runs per engine in alternating blocks of {BENCH_BLOCK}, "
           f"{opts.threads} threads, batch as compiled", out=out)
    _print(f"  {'engine':<14s}{'median ms':>12s}{'min ms':>10s}{'vs onnxruntime':>16s}", out=out)
    for name, values in times.items():
        _print(f"  {name:<14s}{result.medians_ms[name]:12.3f}{min(values):10.3f}{result.ratio(name):15.2f}x", out=out)
    _print(f"  accelc compile time: {compile_seconds:.1f} s", out=out)
    if opts.json_path:
        import json

        Path(opts.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.json_path).write_text(json.dumps(result.to_json(), indent=1))
    return result


BENCH_BLOCK = 5
# Idle time before each block: the engine that ran before leaves its worker threads
# spin-waiting (onnxruntime's pool and TVM's both spin before they sleep); on 2 cores a
# spinning thread takes a core from the next engine's pool. Measured on one ResNet-50 conv:
# 6.4 ms right after onnxruntime's block vs 2.3 ms after a 0.1 s pause (alone: 2.3 ms); a
# 128x768x3072 matmul: first call 2.2x slower after pauses up to 0.02 s, as alone from 0.1 s.
BENCH_SWITCH_PAUSE_S = 0.1


def _interleaved_blocks(engines: dict, repeat: int, warmup: int) -> dict[str, list[float]]:
    """``repeat`` timed runs per engine, taken in alternating blocks of ``BENCH_BLOCK``.

    Engines alternate so that machine noise hits them alike, but in blocks, each opened by a
    short pause (``BENCH_SWITCH_PAUSE_S``) and ``warmup`` untimed runs: run-by-run alternation
    would time one engine's worker threads fighting the other's, which are still
    spin-waiting from the run before.
    """
    times: dict[str, list[float]] = {name: [] for name in engines}
    while any(len(t) < repeat for t in times.values()):
        for name, fn in engines.items():
            time.sleep(BENCH_SWITCH_PAUSE_S)
            for _ in range(max(warmup, 1)):
                fn()
            for _ in range(min(BENCH_BLOCK, repeat - len(times[name]))):
                begin = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - begin) * 1000.0)
    return times


def _openvino_runner(proto, inputs, threads: int):
    try:
        import openvino as ov
    except ImportError:
        return None
    core = ov.Core()
    model = core.read_model(proto.SerializeToString(), b"")
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    return lambda: request.infer(inputs)
