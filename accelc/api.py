"""The Python API: ``accelc.compile`` and ``accelc.load``."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from . import __version__
from .artifact import export as export_artifact
from .artifact import read_signature
from .errors import ArtifactError, TargetError
from .signature import Signature


class CompiledModel:
    """A compiled model: run it, export it, read its signature.

    Built by ``accelc.compile`` (in memory, exportable) or ``accelc.load`` (from an artifact).
    """

    def __init__(self, signature: Signature, executable=None, path: Path | None = None, report=None):
        self.signature = signature
        self.report = report
        self._executable = executable
        self._path = path
        self._vm = None
        self.tuning = None  # with --tuning-records: which kernels were tuned, which fell back
        self.tuning_note = None  # tuning_records="auto": which shipped log was used, or why none
        self._runner = None  # out-of-process runner (artifacts for another machine)
        self._tmp = None

    def __repr__(self) -> str:
        ins = ", ".join(t.describe() for t in self.signature.inputs)
        outs = ", ".join(t.describe() for t in self.signature.outputs)
        return f"CompiledModel(target={self.signature.target_name}, inputs=[{ins}], outputs=[{outs}])"

    # -- running ---------------------------------------------------------------------------
    @property
    def execution_note(self) -> str | None:
        """How ``run`` executes when not in this process (e.g. under qemu-aarch64), else None."""
        runner = self._out_of_process()
        return None if runner is None else runner.note

    def _out_of_process(self):
        """The backend's runner for an artifact built for another machine; None: run here."""
        if self._runner is None:
            from accelc.targets import registry

            backend = registry.get(self.signature.target_name)
            if backend.device_type() == "cpu":
                return None
            path = self._path
            if path is None:  # compiled in memory: the runner needs a file
                self._tmp = tempfile.TemporaryDirectory(prefix="accelc-")
                path = self.export(Path(self._tmp.name) / "model.so")
            self._runner = backend.artifact_runner(path, self.signature)
            if self._runner is None:
                raise TargetError(
                    f"this artifact targets {self.signature.target_name!r} "
                    f"({backend.device_type()}); it cannot run on this machine"
                )
        return self._runner

    def _machine(self):
        if self._vm is None:
            _default_threads(self.signature.target.get("num-cores"))
            import tvm
            from tvm import relax

            from accelc.targets import registry

            backend = registry.get(self.signature.target_name)
            if backend.device_type() != "cpu":
                raise TargetError(
                    f"this artifact targets {self.signature.target_name!r} "
                    f"({backend.device_type()}); it cannot run in this process"
                )
            module = self._executable
            if module is None:
                from ._stderr import quiet_tvm_logs

                try:
                    with quiet_tvm_logs():
                        module = tvm.runtime.load_module(str(self._path))
                except Exception as exc:
                    raise ArtifactError(f"cannot load artifact {self._path}: {exc}") from exc
            backend.load_runtime()  # e.g. vta: the packed function that runs offloaded layers
            self._vm = relax.VirtualMachine(module, tvm.cpu())
        return self._vm

    def _call(self, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
        runner = self._out_of_process()
        if runner is not None:
            return runner.run(self.signature.input_names, arrays, self.signature.output_names)
        import tvm

        vm = self._machine()
        device = tvm.cpu()
        result = vm["main"](*[tvm.runtime.tensor(a, device) for a in arrays])
        values = list(result) if not hasattr(result, "numpy") else [result]
        return {spec.name: v.numpy() for spec, v in zip(self.signature.outputs, values)}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; inputs by name, outputs by name in the graph's output order."""
        return self._call(self.signature.check_inputs(inputs))

    def benchmark(self, inputs: dict[str, np.ndarray], repeat: int = 10, warmup: int = 1) -> list[float]:
        """Latencies in milliseconds of ``repeat`` runs after ``warmup`` untimed ones."""
        arrays = self.signature.check_inputs(inputs)
        runner = self._out_of_process()
        if runner is not None:
            return runner.benchmark(self.signature.input_names, arrays, repeat, warmup)
        import tvm

        vm = self._machine()
        args = [tvm.runtime.tensor(a, tvm.cpu()) for a in arrays]
        for _ in range(warmup):
            vm["main"](*args)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            vm["main"](*args)
            times.append((time.perf_counter() - start) * 1000.0)
        return times

    # -- saving ----------------------------------------------------------------------------
    def export(self, path: str | Path) -> Path:
        """Write a self-contained ``.so`` with the signature embedded."""
        path = Path(path)
        if self._executable is None:
            shutil.copyfile(self._path, path)
            return path
        from accelc.targets import registry

        backend = registry.get(self.signature.target_name)
        target = _target_from_signature(self.signature)
        return export_artifact(self._executable, path, self.signature, backend.export_compiler(target))


def _target_from_signature(signature: Signature):
    import tvm

    return tvm.target.Target(signature.target)


def compile(  # noqa: A001  (the natural name for a compiler's entry point)
    model,
    target: str = "llvm",
    *,
    input_shapes: dict[str, list[int]] | None = None,
    opt_level: int = 3,
    target_options: dict | None = None,
    dump_ir: str | None = None,
    time_passes: bool = False,
    disabled_passes: tuple[str, ...] = (),
    sparse: float | None = None,
    tuning_records=None,
    quantize: str | None = None,
    calib=None,
    calib_method: str = "entropy",
    per_tensor: bool = False,
    keep_float: tuple[str, ...] = (),
    requantize: str | None = None,
    quantize_mode: str = "realize",
    quantize_options: dict | None = None,
) -> CompiledModel:
    """Compile an ONNX model (path or ``onnx.ModelProto``) for ``target``.

    ``quantize="int8"`` quantizes conv2d/matmul post-training (see ``accelc.quantize``):
    ``calib`` is required (an .npz, a directory of .npy or a dict of arrays keyed by input
    name, samples along the first axis); ``quantize_options`` passes further
    ``QuantizeConfig`` fields (``percentile``, ``skip_first_conv``, ``skip_last_dense``, ...).
    ``requantize`` None is the target's choice: ``fixedpoint`` on CPUs, ``shift`` for vta
    (which refuses ``fixedpoint``).
    """
    from accelc.targets import registry

    from .frontend import import_onnx
    from .pipeline import PipelineOptions, run

    if opt_level not in (0, 1, 2, 3):
        from .errors import AccelcError

        raise AccelcError(f"--opt-level must be 0..3, got {opt_level}")
    backend = registry.get(target).with_options(target_options)  # e.g. vta: vta-skip-layers
    tvm_target = backend.make(target_options)
    requantize = backend.requantize_mode(quantize, requantize)  # None -> the target's choice; vta: shift
    records, tuning_note = None, None
    if isinstance(tuning_records, str) and tuning_records == "auto":  # the shipped log, if any
        from .tuning.shipped import auto_records

        records, tuning_note = auto_records(backend, model, input_shapes, tvm_target)
    elif tuning_records is not None:  # an `accelc tune` log; refused if tuned for another target
        backend, records = backend.with_tuning_records(tuning_records, tvm_target)
    if sparse is not None:  # validate before the (slow) import: a bad threshold is a user error
        from accelc.passes.sparse_rewrite import check_options

        sparse, _ = check_options(sparse, None)
    imported = import_onnx(model, input_shapes)
    from .quantize.onnx_import import realize_prequantized

    # A pre-quantized (QDQ) model's int8 kernels: realized before phase 1, whose constant
    # folding would turn the int8 weights' dequantize into float weights.
    mod, _ = realize_prequantized(imported.mod, requantize)
    graph_passes = ()
    if quantize is not None:  # int8: annotate -> calibrate -> realize in phase 2
        graph_passes = _quantize_passes(
            imported, opt_level, quantize, calib,
            dict(calib_method=calib_method, per_tensor=per_tensor, keep_float=tuple(keep_float),
                 requantize=requantize, mode=quantize_mode, **(quantize_options or {})),
        )
    options = PipelineOptions(opt_level=opt_level, dump_ir=dump_ir, time_passes=time_passes, sparse=sparse,
                              tuning_records=records, graph_passes=graph_passes,
                              disabled_passes=tuple(disabled_passes))
    executable, report = run(mod, backend, tvm_target, options)
    signature = Signature(
        inputs=imported.inputs,
        outputs=imported.outputs,
        target=_jsonable(tvm_target.export()),
        target_name=backend.name,
        accelc_version=__version__,
        opt_level=opt_level,
        model={"name": imported.name, "sha256": imported.sha256},
    )
    compiled = CompiledModel(signature, executable=executable, report=report)
    compiled.tuning = None if records is None else records.applied
    compiled.tuning_note = tuning_note
    return compiled


def _quantize_passes(imported, opt_level: int, quantize: str, calib, fields: dict) -> tuple:
    """Check the quantization request and the calibration data (before any slow work)."""
    from .errors import AccelcError
    from .quantize import QuantizeConfig, calibration_runs, quantize_passes

    if quantize != "int8":
        raise AccelcError(f"--quantize supports only int8, got {quantize!r}")
    if calib is None:
        raise AccelcError(
            "--quantize int8 needs calibration data: --calib FILE.npz (arrays keyed by input name, "
            "samples along the first axis) or a directory of <input>.npy; random data is not calibration"
        )
    if opt_level < 2:
        raise AccelcError(f"--quantize needs -O2 or -O3 (graph passes run from O2), got -O{opt_level}")
    config = QuantizeConfig(**fields)
    runs = calibration_runs(calib, imported.inputs, config.max_calib_samples)
    return tuple(quantize_passes(config, runs))


def _jsonable(value):
    """TVM's target export holds tuples and TVM containers; make it plain JSON."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or (hasattr(value, "__iter__") and not isinstance(value, str)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    return str(value)


def _default_threads(num_cores) -> None:
    """Run with the threads the kernels were parallelized for: ``TVM_NUM_THREADS`` (when the
    user has not set it) = the target's ``num-cores``. TVM's own default is half the logical
    CPUs (it assumes hyper-threads): one thread on this 2-core machine, 1.7x slower on
    SqueezeNet. TVM reads the variable when its pool starts (the first parallel kernel), so
    this is a default for processes that have not run a TVM kernel yet."""
    import os

    if isinstance(num_cores, int) and num_cores > 0:
        os.environ.setdefault("TVM_NUM_THREADS", str(num_cores))


def load(path: str | Path) -> CompiledModel:
    """Load an artifact written by ``accelc compile`` / ``CompiledModel.export``."""
    path = Path(path)
    return CompiledModel(read_signature(path), path=path)
