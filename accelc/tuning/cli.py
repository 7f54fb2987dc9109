"""``accelc tune``: its arguments (``add_tune_parser``) and the command (``run_tune``)."""

from __future__ import annotations

import re

from accelc.errors import AccelcError

from .builder import MeasureConfig

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(h|m|s)?", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """``90s``, ``10m``, ``1.5h``, ``1h30m`` or plain seconds -> seconds."""
    spec = text.strip().replace(" ", "")
    if not spec:
        raise AccelcError("--time-budget: empty duration")
    seconds, pos = 0.0, 0
    for m in _DURATION.finditer(spec):
        if m.start() != pos:
            break
        seconds += float(m.group(1)) * {"h": 3600, "m": 60, "s": 1, None: 1}[(m.group(2) or "").lower() or None]
        pos = m.end()
    if pos != len(spec) or seconds <= 0:
        raise AccelcError(f"--time-budget {text!r}: expected a duration like 90s, 10m, 1h30m")
    return seconds


def add_tune_parser(sub) -> None:
    p = sub.add_parser("tune", help="auto-tune a model's kernels (MetaSchedule + XGBoost), resumable")
    p.add_argument("model", nargs="?", help="ONNX model file (default: the embedded digits model)")
    p.add_argument("-o", "--log", "--output", dest="log", metavar="PATH",
                   help="tuning log to append to (JSON lines); an existing log is resumed")
    p.add_argument("--trials", type=int, metavar="N",
                   help="trials for the selected kernels in all, counting those already in the log "
                        "(default: 32 per kernel)")
    p.add_argument("--time-budget", metavar="DURATION", help="stop after this long, e.g. 90s, 10m, 1h30m")
    p.add_argument("--tasks", metavar="all|LIST", default="all",
                   help="kernels to tune: all, or indices, ranges and names, e.g. 0,2,5-7 (see --list-tasks)")
    p.add_argument("--list-tasks", action="store_true", help="list the model's kernels and exit")
    p.add_argument("--cost-model", choices=("xgb", "random"), default="xgb")
    p.add_argument("--plot", metavar="FILE.png", help="draw the estimated model latency against trials")
    p.add_argument("-O", "--opt-level", type=int, default=3, choices=range(4), metavar="{0,1,2,3}",
                   help="the opt level you will compile with (kernels differ per level)")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME:D0,D1,...")
    p.add_argument("--sparse", nargs="?", type=_sparsity_threshold, const="auto", default=None, metavar="THRESHOLD",
                   help="tune the block-sparse kernels too, as `compile --sparse THRESHOLD` makes them "
                        "(default auto); compile with the same --sparse to use the records")
    p.add_argument("--target", default="llvm", help="target name (default: llvm, the host CPU)")
    p.add_argument("--mcpu", help="LLVM CPU name (default: detected host CPU)")
    p.add_argument("--num-cores", type=int, help="threads the kernels use (default: host cores)")
    p.add_argument("--mattr", help="comma-separated LLVM features, e.g. +avx2,+fma")
    p.add_argument("--calib", metavar="DATA", help="--target vta: calibration data, as for compile --quantize int8")
    p.add_argument("--calib-method", default="entropy", help="--target vta: as for compile (default entropy)")
    g = p.add_argument_group("search and measurement")
    g.add_argument("--batch", type=int, default=16, help="trials per search round (default 16)")
    g.add_argument("--workers", type=int, help="build processes (default: host cores)")
    g.add_argument("--population", type=int, help="evolutionary search population (default: 4 x batch, 16..128)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--repeat", type=int, default=3, help="timed repeats per trial; the minimum is kept (default 3)")
    g.add_argument("--min-repeat-ms", type=int, default=20, help="minimum length of one repeat (default 20)")
    g.add_argument("--cache-flush", action="store_true",
                   help="time each trial cold: one run per repeat after its weights and output are flushed "
                        "from the CPU caches, as inside a model (--repeat then counts runs, at least 10). "
                        "Measured: ResNet-50's records ran 0.92-0.94x of the untuned model timed hot, 0.99x "
                        "cold; ShuffleNet's 1.16x hot, 1.09x cold; runs of sub-0.1 ms kernels right after "
                        "a flush read 10-30x slow, so it is not the default")
    g.add_argument("--timeout", type=float, default=30.0, help="seconds one trial may run (default 30)")
    g.add_argument("--progress", choices=("auto", "live", "lines", "quiet"), default="auto")
    g.add_argument("--space", choices=("accelc", "stock"), default="accelc",
                   help="design space: accelc (our templates' knobs, default) or stock (MetaSchedule's x86 rules)")
    g.add_argument("--no-transfer", action="store_true",
                   help="do not seed kernels from similar tuned kernels (this log and the shipped logs)")
    g.add_argument("--transfer-from", action="append", default=[], metavar="LOG",
                   help="also seed from the kernels of this log; repeatable")
    r = p.add_argument_group("remote measurement (TVM RPC tracker)")
    r.add_argument("--rpc-tracker", metavar="HOST:PORT", help="measure on devices from this RPC tracker")
    r.add_argument("--rpc-key", metavar="KEY", help="device key registered at the tracker")
    r.add_argument("--rpc-parallel", type=int, metavar="N", help="devices to measure on at once (default: all)")


def _sparsity_threshold(text: str):
    from accelc.passes.sparse_rewrite import check_options

    return check_options(text, None)[0]  # a bad value: one-line error, as for compile


def run_tune(args):
    from accelc.frontend import parse_input_shapes
    from accelc.targets import registry

    backend = registry.get(args.target)
    if type(backend).tune_command is not registry.TargetBackend.tune_command:
        return backend.tune_command(args)  # e.g. vta: tile plans, not MetaSchedule

    from .progress import Progress, plot_curve
    from .tuner import TuneOptions, list_tasks, tune

    target_options = {"mcpu": args.mcpu, "num-cores": args.num_cores, "mattr": args.mattr}
    shapes = parse_input_shapes(list(args.input_shape)) or None
    if args.list_tasks:
        mt = list_tasks(args.model, args.target, input_shapes=shapes, opt_level=args.opt_level,
                        target_options=target_options, sparse=args.sparse)
        print(f"{len(mt.tasks)} kernel(s) of {mt.model_name} at O{args.opt_level} for {args.target}:")
        for t in mt.tasks:
            flops = f"{t.flops / 1e6:.2f} MFLOP" if t.flops else "-"
            print(f"  {t.index:3d}  {t.name:<56s} calls {t.weight:<3d} {flops}")
        return None
    if not args.log:
        raise AccelcError("accelc tune: -o/--log PATH is required (the tuning log to write or resume)")
    if args.repeat < 1 or args.min_repeat_ms < 0 or args.timeout <= 0:
        raise AccelcError("--repeat must be >= 1, --min-repeat-ms >= 0 and --timeout > 0")
    cache_flush = args.cache_flush
    opts = TuneOptions(
        log=args.log, model=args.model, target=args.target, target_options=target_options,
        input_shapes=shapes, opt_level=args.opt_level, trials=args.trials,
        time_budget_s=parse_duration(args.time_budget) if args.time_budget else None,
        tasks=args.tasks, cost_model=args.cost_model, batch=args.batch, workers=args.workers,
        population=args.population, seed=args.seed,
        measure=MeasureConfig(repeat=max(args.repeat, 10) if cache_flush else args.repeat,
                              min_repeat_ms=args.min_repeat_ms, run_timeout_s=args.timeout,
                              cache_flush=cache_flush),
        plot=args.plot, rpc_tracker=args.rpc_tracker, rpc_key=args.rpc_key, rpc_parallel=args.rpc_parallel,
        progress=args.progress, space=args.space, transfer=not args.no_transfer,
        transfer_logs=tuple(args.transfer_from), sparse=args.sparse,
    )
    progress = Progress(args.progress)
    result = tune(opts, progress)
    if args.plot:
        plot_curve(result, args.plot)
        progress._print(f"plot written to {args.plot}")
    if result.stop_reason in ("interrupted", "terminated"):
        raise KeyboardInterrupt  # the CLI's exit code 130, after the table and with the log intact
    return result
