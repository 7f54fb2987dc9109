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


def _add_target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="llvm",
                   help="target name (default: llvm, the host CPU); arm or arm:PRESET for 64-bit ARM boards")
    p.add_argument("--mcpu", help="LLVM CPU name (default: detected host CPU)")
    p.add_argument("--num-cores", type=int, help="threads the kernels use (default: host cores)")
    p.add_argument("--mattr", help="comma-separated LLVM features, e.g. +avx2,+fma")


def _add_quantize_args(p: argparse.ArgumentParser) -> None:
    from .quantize import CALIB_METHODS, QUANTIZE_MODES, REQUANTIZE_MODES

    g = p.add_argument_group("int8 quantization")
    g.add_argument("--quantize", choices=["int8"], help="quantize conv2d/matmul post-training (needs --calib)")
    g.add_argument("--calib", metavar="DATA", help="calibration data: .npz keyed by input name, or a dir of <input>.npy")
    g.add_argument("--calib-method", choices=CALIB_METHODS, default="entropy", help="activation ranges (default entropy)")
    g.add_argument("--calib-percentile", type=float, default=99.99, metavar="P", help="for --calib-method percentile")
    g.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor (default: per channel)")
    g.add_argument("--keep-float", default="", metavar="OPS",
                   help="comma-separated ops to keep in float: conv2d, matmul, conv2d:0, or a Relax variable name")
    g.add_argument("--requantize", choices=REQUANTIZE_MODES, default="fixedpoint",
                   help="fixedpoint (multiplier + shift) or shift (power-of-two scales, for shift-only hardware)")
    g.add_argument("--quantize-mode", choices=QUANTIZE_MODES, default="realize",
                   help="realize (integer kernels) or simulate (fake-quant float math, for debugging accuracy)")


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
    p.add_argument("--sparse", nargs="?", type=float, const=0.8, default=None, metavar="THRESHOLD",
                   help="block-sparse kernels for matmuls whose constant weight is at least "
                        "THRESHOLD sparse (default 0.8)")
    p.add_argument("--tuning-records", metavar="PATH", help="schedule kernels from an `accelc tune` log")
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

    p = sub.add_parser("package", help="tarball of an aarch64 artifact + runner + runtime to copy to a board")
    p.add_argument("artifact", help="artifact .so compiled with --target arm")
    p.add_argument("-o", "--output", metavar="BUNDLE.tar.gz", help="default: ARTIFACT.tar.gz here")

    p = sub.add_parser("inspect", help="describe an ONNX model (or an accelc .so artifact)")
    p.add_argument("model")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME:D0,D1,...")
    p.add_argument("--fusion", action="store_true", help="list the fused kernels and why neighbours were not fused")
    p.add_argument("--target", default="llvm", help="target for --fusion (default: llvm)")
    p.add_argument("-O", "--opt-level", type=int, default=3, choices=range(4), metavar="{0,1,2,3}")

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
                mattr=args.mattr, dump_ir=args.dump_ir, time_passes=args.time_passes,
                sparse=args.sparse, tuning_records=args.tuning_records,
                quantize=args.quantize, calib=args.calib, calib_method=args.calib_method,
                calib_percentile=args.calib_percentile, per_tensor=args.per_tensor,
                keep_float=tuple(k for k in args.keep_float.split(",") if k),
                requantize=args.requantize, quantize_mode=args.quantize_mode,
            )
        )
    elif args.command == "run":
        driver.run_artifact(
            driver.RunOptions(
                artifact=args.artifact, inputs=tuple(args.input), inputs_npz=args.inputs,
                fill_mode=args.fill_mode, output=args.output, repeat=args.repeat,
                print_time=args.print_time, seed=args.seed,
                rpc_tracker=args.rpc_tracker, rpc_key=args.rpc_key,
            )
        )
    elif args.command == "package":
        driver.package(driver.PackageOptions(args.artifact, args.output))
    elif args.command == "inspect":
        driver.inspect_model(
            driver.InspectOptions(args.model, tuple(args.input_shape), fusion=args.fusion,
                                  target=args.target, opt_level=args.opt_level)
        )
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
