"""The ``accelc`` command line: parse arguments into driver option dataclasses, nothing more.

Every user error becomes one line ``error: ...`` and exit code 2 (``--verbose`` adds the
traceback); an unexpected exception is a bug and keeps its traceback (exit code 1).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

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

    p = sub.add_parser("package", help="tarball of an aarch64 artifact + runner + runtime to copy to a board")
    p.add_argument("artifact", help="artifact .so compiled with --target arm")
    p.add_argument("-o", "--output", metavar="BUNDLE.tar.gz", help="default: ARTIFACT.tar.gz here")

    p = sub.add_parser("inspect", help="describe an ONNX model (or an accelc .so artifact)")
    p.add_argument("model")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME:D0,D1,...")

    p = sub.add_parser("bench", help="time accelc against onnxruntime (and OpenVINO) side by side")
    p.add_argument("model")
    p.add_argument("-O", "--opt-level", type=int, default=3, choices=range(4), metavar="{0,1,2,3}")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME:D0,D1,...")
    p.add_argument("--target", default="llvm")
    p.add_argument("--repeat", type=int, default=30, help="timed runs per engine (default 30)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="threads for every engine (default 2)")
    p.add_argument("--json", dest="json_path", metavar="OUT", help="write the results as JSON")

    p = sub.add_parser("vta", help="tools for the VTA-like accelerator target")
    vta = p.add_subparsers(dest="vta_command", metavar="VTA_COMMAND", parser_class=_Parser)
    q = vta.add_parser("disasm", help="disassemble a VTA instruction stream (128-bit instructions)")
    q.add_argument("program", help="binary file of encoded instructions")
    q.add_argument("--config", help="VTA config: preset name, JSON file or JSON text (default 1x16_i8w8a32_15_15_18_17)")

    p = sub.add_parser("demo", help="compile and run the embedded digits CNN, compare with onnxruntime")
    p.add_argument("-o", "--output", default="out/demo/digits_cnn.so")
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
            )
        )
    elif args.command == "run":
        driver.run_artifact(
            driver.RunOptions(
                artifact=args.artifact, inputs=tuple(args.input), inputs_npz=args.inputs,
                fill_mode=args.fill_mode, output=args.output, repeat=args.repeat,
                print_time=args.print_time, seed=args.seed,
            )
        )
    elif args.command == "package":
        driver.package(driver.PackageOptions(args.artifact, args.output))
    elif args.command == "inspect":
        driver.inspect_model(driver.InspectOptions(args.model, tuple(args.input_shape)))
    elif args.command == "bench":
        driver.bench(
            driver.BenchOptions(
                model=args.model, target=args.target, input_shapes=tuple(args.input_shape),
                opt_level=args.opt_level, repeat=args.repeat, warmup=args.warmup,
                threads=args.threads, json_path=args.json_path,
            )
        )
    elif args.command == "vta":
        if args.vta_command != "disasm":
            raise AccelcError("accelc vta: choose a command: disasm")
        from accelc.targets.vta.isa import main_disasm

        print(main_disasm(args.program, args.config))
    elif args.command == "demo":
        driver.demo(driver.DemoOptions(output=args.output, opt_level=args.opt_level))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    verbose = "-v" in argv or "--verbose" in argv
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
