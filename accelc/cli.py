"""The ``accelc`` command line: parse arguments into driver option dataclasses, nothing more.

Every user error becomes one line ``error: ...`` and exit code 2 (``--verbose`` adds the
traceback); an unexpected exception is a bug and keeps its traceback (exit code 1).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings

from . import __version__, driver
from .errors import AccelcError

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors follow the one-line rule too
        raise AccelcError(f"{self.prog}: {message}")


def sparsity_threshold(text: str):
    """--sparse THRESHOLD: a number (range-checked by the driver) or auto."""
    return "auto" if text.strip().lower() == "auto" else float(text)


def _add_target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="llvm",
                   help="target name (default: llvm, the host CPU); arm or arm:PRESET for 64-bit ARM boards")
    p.add_argument("--mcpu", help="LLVM CPU name (default: detected host CPU)")
    p.add_argument("--num-cores", type=int, help="threads the kernels use (default: host cores)")
    p.add_argument("--mattr", help="comma-separated LLVM features, e.g. +avx2,+fma")
    p.add_argument("--vta-skip-layers", metavar="N[,N]|none",
                   help="vta: conv2d layers (graph order, from 0) to keep on the host CPU (default 0: the stem)")


def _add_quantize_args(p: argparse.ArgumentParser) -> None:
    from .quantize import ACTIVATION_DTYPES, CALIB_METHODS, QUANTIZE_MODES, REQUANTIZE_MODES

    g = p.add_argument_group("int8 quantization")
    g.add_argument("--quantize", choices=["int8"], help="quantize conv2d/matmul post-training (needs --calib)")
    g.add_argument("--calib", metavar="DATA", help="calibration data: .npz keyed by input name, or a dir of <input>.npy")
    g.add_argument("--calib-method", choices=CALIB_METHODS, default="entropy", help="activation ranges (default entropy)")
    g.add_argument("--calib-percentile", type=float, default=99.99, metavar="P", help="for --calib-method percentile")
    g.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor (default: per channel)")
    g.add_argument("--keep-float", default="", metavar="OPS",
                   help="comma-separated ops to keep in float: conv2d, matmul, conv2d:0, or a Relax variable name")
    g.add_argument("--requantize", choices=REQUANTIZE_MODES, default=None,
                   help="fixedpoint (multiplier + shift) or shift (power-of-two scales, for shift-only hardware); "
                        "default: the target's choice (fixedpoint on CPUs, shift for vta)")
    g.add_argument("--quantize-mode", choices=QUANTIZE_MODES, default="realize",
                   help="realize (integer kernels) or simulate (fake-quant float math, for debugging accuracy)")
    g.add_argument("--activation-dtype", choices=ACTIVATION_DTYPES, default="int8",
                   help="int8 (symmetric) or uint8 (zero point 0 after relu, 128 elsewhere) activations")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="accelc", description="Compile ONNX models to fast shared libraries with TVM.")
    parser.add_argument("--version", action="version", version=f"accelc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("compile", help="compile a model to a .so (no model: the embedded demo model)")
    p.add_argument("model", nargs="?", help="ONNX model file")
    p.add_argument("-o", "--output", help="artifact path (default: MODEL.so in the current directory)")
    p.add_argument("-O", "--opt-level", type=int, default=3, choices=range(4), metavar="{0,1,2,3}")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME:D0,D1,...",
                   help="fix an input's shape (needed for dynamic dimensions); repeatable")
    p.add_argument("--dump-ir", metavar="DIR", help="write the IR after every pass to DIR")
    p.add_argument("--time-passes", action="store_true", help="print per-phase and per-pass timing")
    p.add_argument("--disabled-pass", action="append", default=[], metavar="NAME[,NAME]",
                   help="skip these passes (names as --time-passes prints them), e.g. FoldBatchNorm; repeatable")
    p.add_argument("--sparse", nargs="?", type=sparsity_threshold, const="auto", default=None, metavar="THRESHOLD",
                   help="block-sparse kernels for matmuls and 1x1 convs whose constant weight is at least "
                        "THRESHOLD sparse (default auto: the measured break-even of the weight's block, "
                        "80%% for 16x1, 90%% for 1x1)")
    p.add_argument("--tuning-records", metavar="PATH",
                   help="schedule kernels from an `accelc tune` log (default: the log shipped for this "
                        "model and target, if any)")
    p.add_argument("--no-tuning-records", action="store_true",
                   help="default schedules only: do not look up a shipped tuning log")
    _add_quantize_args(p)
    _add_target_args(p)

    p = sub.add_parser("run", help="run a compiled artifact")
    p.add_argument("artifact", help="artifact .so written by accelc compile")
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy")
    p.add_argument("--inputs", metavar="FILE.npz", help="inputs keyed by name")
    p.add_argument("--fill-mode", choices=driver.FILL_MODES, default="random",
                   help="how to fill inputs not given (default: random)")
    p.add_argument("--output", metavar="OUT.npz", help="write outputs keyed by name")
    p.add_argument("--repeat", type=int, default=1, help="timed runs (default 1)")
    p.add_argument("--print-time", action="store_true", help="print latency statistics")
    p.add_argument("--seed", type=int, default=0, help="seed for --fill-mode random")
    p.add_argument("--rpc-tracker", metavar="HOST:PORT", help="run on a device from this TVM RPC tracker")
    p.add_argument("--rpc-key", metavar="KEY", help="device key registered at the tracker")
    p.add_argument("--profile", action="store_true",
                   help="per-kernel report (llvm: in-context ms, calls, GFLOP/s and share of the FMA peak of "
                        "every kernel over 10 runs; vta: cycles, GEMM utilization, bytes, where each layer ran)")
    p.add_argument("--force-serial", action="store_true",
                   help="vta: profile with every layer in program order (no latency hiding) and compare")

    p = sub.add_parser("package", help="tarball of an aarch64 artifact + runner + runtime to copy to a board")
    p.add_argument("artifact", help="artifact .so compiled with --target arm")
    p.add_argument("-o", "--output", metavar="BUNDLE.tar.gz", help="default: ARTIFACT.tar.gz here")

    p = sub.add_parser("inspect", help="describe an ONNX model (or an accelc .so artifact)")
    p.add_argument("model")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME:D0,D1,...")
    p.add_argument("--fusion", action="store_true", help="list the fused kernels and why neighbours were not fused")
    p.add_argument("--target", default="llvm", help="target for --fusion (default: llvm)")
    p.add_argument("-O", "--opt-level", type=int, default=3, choices=range(4), metavar="{0,1,2,3}")
    p.add_argument("--sparse", nargs="?", type=sparsity_threshold, const="auto", default=None, metavar="THRESHOLD",
                   help="list each weight's sparsity and the layers `compile --sparse THRESHOLD` rewrites")
    _add_quantize_args(p)  # --quantize int8 --calib DATA: which ops go int8, their scales, why others not

    p = sub.add_parser("quantize", help="quantize to int8 with calibration data; write a QDQ ONNX model")
    p.add_argument("model", help="ONNX model file")
    p.add_argument("-o", "--output", metavar="MODEL.q.onnx", help="default: MODEL.q.onnx in the current directory")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME:D0,D1,...")
    _add_quantize_args(p)

    p = sub.add_parser("prune", help="magnitude-prune a model's MatMul/Gemm/Conv weights (to try --sparse)")
    p.add_argument("model", help="ONNX model file")
    p.add_argument("--sparsity", type=float, required=True, help="fraction of each weight's blocks to zero, in [0, 1]")
    p.add_argument("--block", help="block of output channels x input features, e.g. 16x1 (default 1x1)")
    p.add_argument("--norm", choices=["l2", "l1"], default="l2", help="block magnitude (default l2)")
    p.add_argument("-o", "--output", help="default: MODEL.sparse.onnx next to the model")

    p = sub.add_parser("bench", help="time accelc against onnxruntime (and OpenVINO) side by side")
    p.add_argument("model")
    p.add_argument("-O", "--opt-level", type=int, default=3, choices=range(4), metavar="{0,1,2,3}")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME:D0,D1,...")
    p.add_argument("--target", default="llvm")
    p.add_argument("--repeat", type=int, default=30, help="timed runs per engine (default 30)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="threads for every engine (default 2)")
    p.add_argument("--json", dest="json_path", metavar="OUT", help="write the results as JSON")
    p.add_argument("--tuning-records", metavar="PATH", help="schedule kernels from an `accelc tune` log")

    from .tuning.cli import add_tune_parser  # accelc tune (arguments live with the tuner)

    add_tune_parser(sub)

    p = sub.add_parser("vta", help="tools for the VTA-like accelerator target")
    vta = p.add_subparsers(dest="vta_command", metavar="VTA_COMMAND", parser_class=_Parser)
    q = vta.add_parser("disasm", help="disassemble a VTA instruction stream (128-bit instructions)")
    q.add_argument("program", help="binary file of encoded instructions")
    q.add_argument("--config", help="VTA config: preset name, JSON file or JSON text (default 1x16_i8w8a32_15_15_18_17)")

    p = sub.add_parser("demo", help="compile and run the embedded digits CNN, compare with onnxruntime")
    p.add_argument("-o", "--output", default="out/demo/digits_cnn.so")
    p.add_argument("--target", default="llvm", help="target to compile for (default: llvm, the host CPU)")
    p.add_argument("-O", "--opt-level", type=int, default=3, choices=range(4), metavar="{0,1,2,3}")
    return parser


def _dispatch(args) -> None:
    if args.command == "compile":
        if args.model is None and args.output is None:
            # `accelc compile` with no model is the demo: compile and run the embedded model.
            driver.demo(driver.DemoOptions(opt_level=args.opt_level, target=args.target))
            return
        driver.compile_model(
            driver.CompileOptions(
                model=args.model, target=args.target, output=args.output, opt_level=args.opt_level,
                input_shapes=tuple(args.input_shape), mcpu=args.mcpu, num_cores=args.num_cores,
                mattr=args.mattr, vta_skip_layers=args.vta_skip_layers, dump_ir=args.dump_ir,
                time_passes=args.time_passes,
                disabled_passes=tuple(n for arg in args.disabled_pass for n in arg.split(",") if n),
                sparse=args.sparse,
                tuning_records=args.tuning_records or (None if args.no_tuning_records else "auto"),
                quantize=args.quantize, calib=args.calib, calib_method=args.calib_method,
                calib_percentile=args.calib_percentile, per_tensor=args.per_tensor,
                keep_float=tuple(k for k in args.keep_float.split(",") if k),
                requantize=args.requantize, quantize_mode=args.quantize_mode, activation_dtype=args.activation_dtype,
            )
        )
    elif args.command == "run":
        driver.run_artifact(
            driver.RunOptions(
                artifact=args.artifact, inputs=tuple(args.input), inputs_npz=args.inputs,
                fill_mode=args.fill_mode, output=args.output, repeat=args.repeat,
                print_time=args.print_time, seed=args.seed,
                rpc_tracker=args.rpc_tracker, rpc_key=args.rpc_key,
                profile=args.profile, force_serial=args.force_serial,
            )
        )
    elif args.command == "package":
        driver.package(driver.PackageOptions(args.artifact, args.output))
    elif args.command == "inspect":
        driver.inspect_model(
            driver.InspectOptions(args.model, tuple(args.input_shape), fusion=args.fusion,
                                  target=args.target, opt_level=args.opt_level, sparse=args.sparse,
                                  quantize=_quantize_options(args) if args.quantize else None)
        )
    elif args.command == "quantize":
        driver.quantize_model(_quantize_options(args))
    elif args.command == "prune":
        from .prune import PruneOptions, prune

        prune(PruneOptions(args.model, args.sparsity, args.block, args.norm, args.output))
    elif args.command == "bench":
        driver.bench(
            driver.BenchOptions(
                model=args.model, target=args.target, input_shapes=tuple(args.input_shape),
                opt_level=args.opt_level, repeat=args.repeat, warmup=args.warmup,
                threads=args.threads, json_path=args.json_path,
                tuning_records=args.tuning_records,
            )
        )
    elif args.command == "tune":
        from .tuning.cli import run_tune

        run_tune(args)
    elif args.command == "vta":
        if args.vta_command != "disasm":
            raise AccelcError("accelc vta: choose a command: disasm")
        from accelc.targets.vta.isa import main_disasm

        print(main_disasm(args.program, args.config))
    elif args.command == "demo":
        driver.demo(driver.DemoOptions(output=args.output, opt_level=args.opt_level, target=args.target))


def _quantize_options(args) -> driver.QuantizeOptions:
    return driver.QuantizeOptions(
        model=args.model, calib=args.calib, output=getattr(args, "output", None),
        input_shapes=tuple(args.input_shape), calib_method=args.calib_method,
        calib_percentile=args.calib_percentile, per_tensor=args.per_tensor,
        keep_float=tuple(k for k in args.keep_float.split(",") if k), requantize=args.requantize or "fixedpoint",
        activation_dtype=args.activation_dtype,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    verbose = "-v" in argv or "--verbose" in argv
    if not verbose:  # library warnings (TVM's TagScope, onnx checker) are not for users
        warnings.simplefilter("ignore")
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return EXIT_USER_ERROR
        _dispatch(args)
        return 0
    except AccelcError as exc:
        if verbose:
            traceback.print_exc()
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # `accelc inspect m.onnx | head`: the reader left, not an error
        sys.stdout = open(os.devnull, "w")
        return 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
