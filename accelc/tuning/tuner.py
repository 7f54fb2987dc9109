"""``accelc tune``: MetaSchedule search over a model's kernels, resumable and crash-safe.

One session, top to bottom:

    1. extract tasks      the model's distinct kernels, exactly as compile schedules them
    2. read the log       trials already logged for this target count toward ``--trials``
    3. baselines          each kernel's default schedule, measured once (what tuning must beat)
    4. search rounds      pick a task, ask its MetaSchedule search for a batch of schedules,
                          build them in parallel, time them one at a time, append the batch
                          to the log (one write + fsync), feed the results back to the search
                          and the cost model
    5. report             final table, trials per second, optional plot

Task choice (the Relax undersubscription problem: MetaSchedule's gradient scheduler can
leave tasks at zero trials): every task first gets one batch, fewest trials first; then each
batch goes to the task with the largest ``weight * best latency / trials``, i.e. where the
model spends its time per trial already invested, so trials end up proportional to each
kernel's share of the model's latency and no task starves.

The search is MetaSchedule's own (post-order-apply design space, evolutionary search, XGBoost
or random cost model) driven task by task from Python, so a time budget, Ctrl-C and resume
work at batch granularity. ``TuneContext`` is built without its constructor's
``import tvm.s_tir.tensor_intrin`` (~40 s here; the x86 AVX2 space uses no intrinsics).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from accelc.errors import AccelcError

from .builder import MeasureConfig, Measurer, MeasureResult
from .records import TuningLog, index_by_workload, make_record, new_session_id, plain_json, target_key
from .intrinsics import filtered_stderr
from .tasks import ModelTasks, Task, default_schedule, extract_tasks, schedule_key, select_tasks

COST_MODELS = ("xgb", "random")
SPACES = ("accelc", "stock")
TRANSFER_SEEDS = 3  # knob settings of the nearest tuned kernels measured first
DEFAULT_TRIALS_PER_TASK = 32
_REPLAY_ON_RESUME = 256  # logged trials per task fed back to the search and the cost model


@dataclass(frozen=True)
class TuneOptions:
    log: str
    model: object = None  # path or onnx.ModelProto; None: the embedded default model
    target: str = "llvm"
    target_options: dict | None = None
    input_shapes: dict | None = None
    opt_level: int = 3
    trials: int | None = None  # total for the selected tasks; None: 32 per task
    time_budget_s: float | None = None
    tasks: str | None = None  # --tasks spec
    cost_model: str = "xgb"
    batch: int = 16  # trials per search round
    workers: int | None = None  # build processes (default: host cores)
    population: int | None = None  # evolutionary population; None: 4 x batch in [16, 128]
                                   # (MetaSchedule's default is 512: minutes per batch on 2 cores)
    genetic_iters: int = 2  # evolution rounds per batch (MetaSchedule's default: 4)
    seed: int = 0
    measure: MeasureConfig = MeasureConfig()
    plot: str | None = None
    rpc_tracker: str | None = None
    rpc_key: str | None = None
    rpc_parallel: int | None = None
    progress: str = "auto"  # auto | live | lines | quiet
    space: str = "accelc"  # accelc: our templates' knobs (search_space.py); stock: MetaSchedule's rules
    transfer: bool = True  # seed kernels without trials from similar tuned kernels (transfer.py)
    transfer_logs: tuple = ()  # more logs to seed from (besides this log and the shipped ones)
    sparse: float | str | None = None  # compile's --sparse threshold: BSR kernels are tasks too


@dataclass
class TaskState:
    task: Task
    selected: bool
    trials: int = 0  # in the log, failed ones included
    session_trials: int = 0
    best_s: float | None = None
    baseline_s: float | None = None
    baseline_rule: str = ""
    sch_hashes: set = field(default_factory=set)
    exhausted: bool = False
    empty_rounds: int = 0
    ctx: object = None
    ctx_kind: str = ""
    warm_started: bool = False

    @property
    def current_s(self) -> float | None:
        """What compile with the log would run: the faster of default and best tuned."""
        known = [x for x in (self.best_s, self.baseline_s) if x is not None]
        return min(known) if known else None

    @property
    def gflops(self) -> float | None:
        cur = self.current_s
        return self.task.flops / cur / 1e9 if cur and self.task.flops else None


@dataclass
class TuneResult:
    log: str
    target_key: str
    states: list[TaskState]
    session_trials: int
    seconds: float
    search_seconds: float
    build_seconds: float
    run_seconds: float
    stop_reason: str
    curve: list[tuple[int, float]]  # (trials in the log, estimated model latency s)
    skipped_lines: int = 0

    @property
    def trials_per_second(self) -> float:
        return self.session_trials / self.seconds if self.seconds > 0 else 0.0

    @property
    def estimate_s(self) -> float | None:
        return model_estimate(self.states)

    @property
    def baseline_estimate_s(self) -> float | None:
        return model_estimate(self.states, baseline=True)


def model_estimate(states, baseline: bool = False) -> float | None:
    """Sum over kernels of calls x latency; None while a kernel has no measurement."""
    total = 0.0
    for s in states:
        lat = s.baseline_s if baseline else s.current_s
        if lat is None:
            return None
        total += s.task.weight * lat
    return total


# --------------------------------------------------------------------------------- search
def _search_logger() -> logging.Logger:
    logger = logging.getLogger("accelc.tuning.search")
    if not logger.handlers:
        logger.propagate = False
        logger.setLevel(logging.WARNING)
        logger.addHandler(logging.StreamHandler() if os.environ.get("ACCELC_TUNE_DEBUG") else logging.NullHandler())
    return logger


def make_strategy(kind: str, population: int = 64, genetic_iters: int = 2):
    """``random``: fresh samples of the design space (MetaSchedule's ReplayTrace), a cheap
    first batch while the cost model knows nothing; ``evolutionary``: mutate the best measured
    schedules and keep what the cost model ranks highest."""
    from tvm.s_tir.meta_schedule.search_strategy import EvolutionarySearch, ReplayTrace

    if kind == "random":
        return ReplayTrace(max_fail_count=64)
    return EvolutionarySearch(
        population_size=population, genetic_num_iters=genetic_iters,
        init_min_unmeasured=max(4, min(50, population // 4)),
    )


def make_tune_context(mod, target, name: str, *, seed: int, num_threads: int, strategy):
    """MetaSchedule's TuneContext without its constructor's tensor-intrinsic import."""
    from tvm.s_tir.meta_schedule import TuneContext, _ffi_api
    from tvm.s_tir.meta_schedule.logging import get_logging_func
    from tvm.s_tir.meta_schedule.space_generator import SpaceGenerator

    from .intrinsics import missing_intrinsic, register_cpu_intrinsics

    for attempt in range(2):
        ctx = TuneContext.__new__(TuneContext)
        ctx.__init_handle_by_constructor__(
            _ffi_api.TuneContext, mod, target, SpaceGenerator.create("post-order-apply"), strategy,
            name, num_threads, seed, get_logging_func(_search_logger()),
        )
        try:
            _ffi_api.TuneContextInitialize(ctx)
            return ctx
        except Exception as exc:  # an AVX-512/VNNI space needs the x86 intrinsics: load, retry
            if attempt or not missing_intrinsic(exc) or not register_cpu_intrinsics(target):
                raise
    raise AssertionError("unreachable")


def make_cost_model(kind: str, num_threads: int):
    from tvm.s_tir.meta_schedule import cost_model

    if kind == "random":
        return cost_model.RandomModel()
    if kind == "xgb":
        return _throttled_xgb()(num_warmup_samples=32, num_tuning_cores=num_threads, verbose_eval=0,
                                early_stopping_rounds=25, adaptive_training=False)
    raise AccelcError(f"--cost-model must be one of {COST_MODELS}, got {kind!r}")


def _throttled_xgb():
    """MetaSchedule's XGBoost model, trained once it has its warm-up samples and retrained
    only when its data grew by 16 samples and 25%.

    The stock model retrains from scratch after every batch (seconds each on 2 cores: most of
    the search time of a small session); between retrainings it still ranks with the last
    booster, and every measured sample is kept for the next one."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.cost_model import XGBModel

    @derived_object
    class ThrottledXGBModel(XGBModel._cls):  # a TVM derived object subclasses the plain class
        trained_at = 0

        def _train(self, xs, ys):
            grown = self.data_size - self.trained_at
            if self.data_size < self.num_warmup_samples:  # it predicts at random until then anyway
                return
            if self.booster is not None and grown < max(16, self.trained_at // 4):
                return
            self.trained_at = self.data_size
            super()._train(xs, ys)

    return ThrottledXGBModel


def args_info_of(func) -> list:
    """``(shape, dtype)`` of each parameter of a static-shape kernel."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    return [([int(d) for d in info.shape], str(info.dtype)) for info in ArgInfo.from_prim_func(func)]


def measure_args(task: Task) -> list:
    """What a trial of ``task`` runs on: ``args_info_of``, with the module's own constants
    (``Task.arrays``: a BSR kernel's sparsity pattern) in place of random inputs."""
    return [task.arrays.get(i, info) for i, info in enumerate(args_info_of(task.func))]


# --------------------------------------------------------------------------------- session
class Session:
    """One ``accelc tune`` run (see the module docstring for its steps)."""

    def __init__(self, opts: TuneOptions, progress=None):
        if opts.cost_model not in COST_MODELS:
            raise AccelcError(f"--cost-model must be one of {COST_MODELS}, got {opts.cost_model!r}")
        if opts.trials is not None and opts.trials < 0:
            raise AccelcError(f"--trials must be >= 0, got {opts.trials}")
        if opts.batch < 1:
            raise AccelcError(f"--batch must be >= 1, got {opts.batch}")
        if opts.space not in SPACES:
            raise AccelcError(f"--space must be one of {SPACES}, got {opts.space!r}")
        if opts.time_budget_s is not None and opts.time_budget_s <= 0:
            raise AccelcError("--time-budget must be positive")
        self.opts = opts
        self.progress = progress
        self.session_id = new_session_id()
        self.stop_reason = ""
        self._stop = threading.Event()
        self.search_seconds = 0.0
        self.session_trials = 0
        self.deadline = None
        self.status = "starting"
        self._seed_fields: dict[int, dict] = {}

    # -- stopping ----------------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
            self._stop.set()

    def should_stop(self) -> bool:
        if not self._stop.is_set() and self.deadline is not None and time.monotonic() >= self.deadline:
            self.request_stop("time budget reached")
        return self._stop.is_set()

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}

        def handler(signum, _frame):
            if self._stop.is_set():  # a second Ctrl-C: stop now, records already written stay
                raise KeyboardInterrupt
            self.request_stop("interrupted" if signum == signal.SIGINT else "terminated")
            if self.progress is not None:
                self.progress.note("stopping after the trial in flight (Ctrl-C again to abort)")

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        return previous

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> TuneResult:
        opts = self.opts
        self.started = time.monotonic()
        self.deadline = self.started + opts.time_budget_s if opts.time_budget_s else None
        from .rpc import make_config

        rpc = make_config(opts.rpc_tracker, opts.rpc_key, opts.rpc_parallel)
        from accelc.targets.llvm import host_num_cores

        self.host_cores = host_num_cores()
        measurer_target = None
        self.measurer = None
        previous = self._install_signals()
        try:
            self.status = "extracting tasks"
            model, shapes = _model_and_shapes(opts.model, opts.input_shapes)
            # Workers start now so that their `import tvm` overlaps task extraction.
            backend_name = opts.target
            from accelc.targets import registry

            backend = registry.get(backend_name)
            backend.check_tuning(opts.rpc_tracker)  # e.g. arm without a board: qemu timings are meaningless
            measurer_target = backend.make(opts.target_options)
            self.measurer = Measurer(
                measurer_target, backend_name, workers=opts.workers or self.host_cores,
                config=opts.measure, rpc=rpc, device="cuda" if backend.device_type() == "cuda" else "cpu",
            )
            self.measurer.start()
            self.model_tasks = extract_tasks(model, opts.target, input_shapes=shapes, opt_level=opts.opt_level,
                                             target_options=opts.target_options, sparse=opts.sparse)
            return self._tune()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.measurer is not None:
                self.measurer.close()

    def _tune(self) -> TuneResult:
        opts, mt = self.opts, self.model_tasks
        self.target = mt.target
        self.key = target_key(mt.target)
        self.log = TuningLog.load(opts.log, warn=False)  # progress.begin reports skipped lines
        selected = {t.index for t in select_tasks(opts.tasks, mt.tasks)}
        known = index_by_workload(self.log.for_target(self.key))
        self.states = []
        for t in mt.tasks:
            s = TaskState(t, t.index in selected)
            entry = known.get(t.workload)
            if entry is not None:
                s.trials = entry.trials
                s.best_s = entry.best.latency_s if entry.best else None
                s.sch_hashes = set(entry.sch_hashes)
            self.states.append(s)
        self.budget = opts.trials if opts.trials is not None else DEFAULT_TRIALS_PER_TASK * len(selected)
        self.resumed_trials = sum(s.trials for s in self.selected)
        if self.progress is not None:
            self.progress.begin(self)

        self._measure_baselines(known)
        self.transfer_settings = self._load_transfer_settings() if opts.transfer else {}
        self.cost_model = None
        from tvm.s_tir.meta_schedule.database import MemoryDatabase

        self.database = MemoryDatabase()
        while not self.should_stop():
            remaining = self.budget - sum(s.trials for s in self.selected)
            if remaining <= 0:
                self.request_stop("trial budget reached")
                break
            state = self._pick()
            if state is None:
                self.request_stop("search space exhausted")
                break
            self._round(state, min(self._batch_size(), remaining))
        seconds = time.monotonic() - self.started
        result = TuneResult(
            log=str(self.log.path), target_key=self.key, states=self.states, session_trials=self.session_trials,
            seconds=seconds, search_seconds=self.search_seconds, build_seconds=self.measurer.build_seconds,
            run_seconds=self.measurer.run_seconds, stop_reason=self.stop_reason, curve=self.curve(),
            skipped_lines=len(self.log.skipped),
        )
        if self.progress is not None:
            self.progress.end(self, result)
        return result

    @property
    def selected(self) -> list[TaskState]:
        return [s for s in self.states if s.selected]

    def _batch_size(self) -> int:
        n = max(1, len(self.selected))
        return max(1, min(self.opts.batch, math.ceil(self.budget / n)))

    def _population(self) -> int:
        return self.opts.population or min(128, max(16, 4 * self._batch_size()))

    def _pick(self) -> TaskState | None:
        live = [s for s in self.selected if not s.exhausted]
        if not live:
            return None
        first = self._batch_size()
        # Every task gets its first batch before any task gets a second (heaviest first).
        warm = [s for s in live if s.trials < first]
        if warm:
            return min(warm, key=lambda s: (s.trials, -(s.task.weight * (s.current_s or 0.0))))
        # Then trials follow each task's share of the model's time per trial already spent.
        return max(live, key=lambda s: s.task.weight * (s.current_s or 0.0) / max(1, s.trials))

    # -- baselines ----------------------------------------------------------------------------
    def _measure_baselines(self, known) -> None:
        todo, mods = [], []
        for s in self.states:
            mod, rule = default_schedule(s.task, self.model_tasks.backend, self.target, self.opts.opt_level)
            s.baseline_rule = rule
            entry = known.get(s.task.workload)
            base = entry.baseline if entry is not None else None
            if base is not None and base.sch_hash == schedule_key(mod) and base.ok:
                s.baseline_s = base.latency_s
                continue
            todo.append((s, schedule_key(mod)))
            mods.append(mod)
        if not todo or self.should_stop():
            return
        self.status = f"measuring {len(todo)} default schedule(s)"
        results = self.measurer.measure(mods, [measure_args(s.task) for s, _ in todo], self.should_stop)
        lines = []
        for (s, sch_hash), r in zip(todo, results):
            if not r.measured:
                continue
            s.baseline_s = r.latency_s
            lines.append(make_record(
                "baseline", self.target, workload=s.task.workload, task=s.task.name, session=self.session_id,
                schedule=s.baseline_rule, sch_hash=sch_hash, flops=s.task.flops, latency_s=r.latency_s,
                run_secs=r.run_secs, error=r.error, runner=self.measurer.runner_name, **_kernel_fields(s.task),
            ))
        self.log.append(lines)
        if self.progress is not None:
            self.progress.update(self)

    # -- one search round ---------------------------------------------------------------------
    def _context(self, s: TaskState):
        """The task's search: random samples for its first batch, evolution after that."""
        kind = "random" if s.trials < self._batch_size() else "evolutionary"
        if s.ctx is not None and s.ctx_kind == kind:
            return s.ctx
        if self.cost_model is None:
            self.cost_model = make_cost_model(self.opts.cost_model, self.host_cores)
        mod = s.task.mod
        # A resumed task continues from what the log knows, with a fresh random stream.
        seed = (self.opts.seed * 1_000_003 + s.task.index * 7919 + s.trials) % (2**31 - 1)
        with filtered_stderr(), self.target, _space(self.target, self.opts.space):
            ctx = make_tune_context(mod, self.target, s.task.name, seed=seed, num_threads=self.host_cores,
                                    strategy=make_strategy(kind, self._population(), self.opts.genetic_iters))
            ctx.pre_tuning(max_trials=2**30, num_trials_per_iter=self._batch_size(),
                           design_spaces=ctx.generate_design_space(), database=self.database,
                           cost_model=self.cost_model)
        if not s.warm_started:
            self._warm_start(s, ctx)
        s.ctx, s.ctx_kind = ctx, kind
        return ctx

    def _warm_start(self, s: TaskState, ctx) -> None:
        """Feed the task's logged trials to the database (the evolution's seeds) and the cost
        model: a resumed session continues the search instead of starting it over."""
        from tvm.s_tir.meta_schedule import MeasureCandidate
        from tvm.s_tir.meta_schedule.arg_info import ArgInfo
        from tvm.s_tir.meta_schedule.database import TuningRecord
        from tvm.s_tir.meta_schedule.runner import RunnerResult

        from .apply_tuning_records import replay

        s.warm_started = True
        logged = [r for r in self.log.for_target(self.key)
                  if r.kind == "trial" and r.workload == s.task.workload and r.trace][-_REPLAY_ON_RESUME:]
        if not logged:
            return
        mod = s.task.mod
        workload = self.database.commit_workload(mod)
        args_info = ArgInfo.from_prim_func(mod["main"])
        cands, results = [], []
        for r in logged:
            try:
                sch = replay(s.task.func, r.trace)
            except Exception:  # noqa: BLE001  (a record that no longer replays: skip it)
                continue
            cands.append(MeasureCandidate(sch, args_info))
            results.append(RunnerResult(r.data.get("run_secs") if r.ok else None, r.data.get("error")))
            if r.ok:
                self.database.commit_tuning_record(
                    TuningRecord(sch.trace, workload, r.data["run_secs"], self.target, args_info))
        if cands:
            self.cost_model.update(ctx, cands, results)

    # -- record transfer ----------------------------------------------------------------------
    def _load_transfer_settings(self) -> dict:
        """Knob settings of tuned template kernels for this target in the shipped logs and
        ``transfer_logs`` (this log's own are read at each use: they grow as we tune)."""
        from .shipped import shipped_logs
        from .transfer import settings_from

        records = []
        for path in list(self.opts.transfer_logs) + [str(p) for p in shipped_logs()]:
            if Path(path).resolve() != Path(self.log.path).resolve():
                records += TuningLog.load(path, warn=False).for_target(self.key)
        return settings_from(index_by_workload(records), require_win=False)

    def _transfer_seeds(self, s: TaskState) -> list:
        """``(distance, setting, schedule)`` for the nearest tuned kernels of the same op."""
        from .transfer import apply_setting, nearest, settings_from

        if not self.opts.transfer or self.opts.space != "accelc" or s.task.op is None:
            return []
        settings = settings_from(index_by_workload(self.log.for_target(self.key)), require_win=False)
        for op, found in self.transfer_settings.items():
            settings.setdefault(op, []).extend(found)
        out = []
        for d, setting in nearest(settings, s.task.op, s.task.shapes, exclude={s.task.workload},
                                  k=TRANSFER_SEEDS):
            sch = apply_setting(s.task.func, setting, self.target)
            if sch is not None:
                out.append((d, setting, sch))
        if out and self.progress is not None:
            shown = ", ".join(f"{st.task} (distance {d:.1f})" for d, st, _ in out)
            self.progress.note(f"kernel {s.task.index} ({s.task.name}): seeded from {shown}")
        return out

    def _seed_candidate(self, s: TaskState, ctx, sch, setting, distance):
        """A transferred schedule as a measure candidate (postprocessed like the search's)."""
        from tvm.s_tir.meta_schedule import MeasureCandidate
        from tvm.s_tir.meta_schedule.arg_info import ArgInfo

        try:
            for postproc in ctx.space_generator.postprocs:
                if not postproc.apply(sch):
                    return None
        except Exception:  # noqa: BLE001
            return None
        cand = MeasureCandidate(sch, ArgInfo.from_prim_func(sch.mod["main"]))
        # A TVM object takes no extra attributes: the log fields wait on the side until _record.
        self._seed_fields[id(cand)] = {"transferred_from": setting.workload, "transfer_distance": round(distance, 3)}
        return cand

    def _round(self, s: TaskState, size: int) -> None:
        from tvm.s_tir.meta_schedule.database import TuningRecord
        from tvm.s_tir.meta_schedule.runner import RunnerResult

        self.status = f"searching task {s.task.index} ({s.task.name})"
        start = time.perf_counter()
        seeds = self._transfer_seeds(s) if s.trials == 0 and not s.warm_started else []
        try:
            ctx = self._context(s)
            with filtered_stderr():
                candidates = ctx.generate_measure_candidates()
        except Exception as exc:  # noqa: BLE001  (one kernel MetaSchedule cannot search: skip it)
            s.exhausted = True
            message = " ".join(str(exc).split())[-200:]
            if self.progress is not None:
                self.progress.note(f"kernel {s.task.index} ({s.task.name}) skipped: search failed: {message}")
            return
        finally:
            self.search_seconds += time.perf_counter() - start
        if candidates is None:  # the space has nothing left to offer (or cannot be sampled)
            s.exhausted = True
            return
        fresh, hashes = [], []
        seeds = [self._seed_candidate(s, ctx, sch, setting, d) for d, setting, sch in seeds]
        for c in [c for c in seeds if c is not None] + list(candidates):
            h = schedule_key(c.sch.mod)
            if h not in s.sch_hashes and h not in hashes:
                fresh.append(c)
                hashes.append(h)
        fresh, hashes = fresh[:size], hashes[:size]
        if not fresh:
            s.empty_rounds += 1
            s.exhausted = s.empty_rounds >= 3
            return
        s.empty_rounds = 0
        if self.should_stop():
            return
        self.status = f"measuring {len(fresh)} trial(s) of task {s.task.index}"
        args = measure_args(s.task)
        results = self.measurer.measure([c.sch.mod for c in fresh], [args] * len(fresh), self.should_stop)
        done = [(c, h, r) for c, h, r in zip(fresh, hashes, results) if r.measured]
        self._record(s, done)
        if not done:
            return
        runner_results = [RunnerResult(r.run_secs, r.error) for _, _, r in done]
        ctx.notify_runner_results([c for c, _, _ in done], runner_results)
        start = time.perf_counter()
        self.cost_model.update(ctx, [c for c, _, _ in done], runner_results)
        workload = self.database.commit_workload(s.task.mod)
        for c, _, r in done:
            if r.run_secs:
                self.database.commit_tuning_record(TuningRecord(c.sch.trace, workload, r.run_secs, self.target, c.args_info))
        self.search_seconds += time.perf_counter() - start

    def _record(self, s: TaskState, done: list[tuple[object, str, MeasureResult]]) -> None:
        lines = []
        for c, h, r in done:
            lines.append(make_record(
                "trial", self.target, workload=s.task.workload, task=s.task.name, session=self.session_id,
                trace=plain_json(c.sch.trace.as_json(remove_postproc=False)), sch_hash=h,
                latency_s=r.latency_s, run_secs=r.run_secs, error=r.error, build_s=round(r.build_s, 4),
                runner=self.measurer.runner_name, **_kernel_fields(s.task), **self._seed_fields.pop(id(c), {}),
            ))
            s.trials += 1
            s.session_trials += 1
            s.sch_hashes.add(h)
            if r.latency_s is not None and (s.best_s is None or r.latency_s < s.best_s):
                s.best_s = r.latency_s
        self._seed_fields.clear()  # seeds not measured this round: their ids may be reused
        self.log.append(lines)  # one write + fsync for the whole batch
        self.session_trials += len(lines)
        if self.progress is not None:
            self.progress.update(self)

    # -- history ------------------------------------------------------------------------------
    def curve(self) -> list[tuple[int, float]]:
        """Estimated model latency after each logged trial of these tasks, in log order."""
        by_workload = {s.task.workload: s for s in self.states}
        best: dict[str, float] = {}
        base = {s.task.workload: s.baseline_s for s in self.states}
        points, trials = [], 0

        def estimate():
            total = 0.0
            for w, s in by_workload.items():
                known = [x for x in (best.get(w), base[w]) if x is not None]
                if not known:
                    return None
                total += s.task.weight * min(known)
            return total

        first = estimate()
        if first is not None:
            points.append((0, first))
        for r in self.log.for_target(self.key):
            if r.kind != "trial" or r.workload not in by_workload:
                continue
            trials += 1
            if r.ok and r.latency_s < best.get(r.workload, float("inf")):
                best[r.workload] = r.latency_s
            value = estimate()
            if value is not None:
                points.append((trials, value))
        return points


def _kernel_fields(task: Task) -> dict:
    """Log fields for record transfer: the template tag and parameter shapes."""
    return {"op": task.op, "shapes": task.shapes} if task.op else {}


def _space(target, space: str):
    """The design space switch: our templates' knobs, or MetaSchedule's stock rules."""
    if target.kind.name != "llvm":
        import contextlib

        return contextlib.nullcontext()
    from accelc.targets.llvm_cpu import search_space

    search_space.register()
    return search_space.space_enabled(space == "accelc")


def _model_and_shapes(model, input_shapes):
    if model is None:
        from accelc.models import DEFAULT_INPUT_SHAPE, default_model_path

        return str(default_model_path()), input_shapes or dict(DEFAULT_INPUT_SHAPE)
    return model, input_shapes


def tune(opts: TuneOptions, progress=None) -> TuneResult:
    """Run one tuning session; see ``TuneOptions`` and the module docstring."""
    return Session(opts, progress).run()


def list_tasks(model, target: str = "llvm", *, input_shapes=None, opt_level: int = 3,
               target_options: dict | None = None, sparse=None) -> ModelTasks:
    model, input_shapes = _model_and_shapes(model, input_shapes)
    return extract_tasks(model, target, input_shapes=input_shapes, opt_level=opt_level, target_options=target_options,
                         sparse=sparse)
