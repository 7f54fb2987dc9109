"""What ``accelc tune`` shows: a live rich table on a terminal, one line per batch otherwise,
a final table, and ``--plot``'s curve of the estimated model latency against trials."""

from __future__ import annotations

import sys
import time


def _ms(seconds) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.4g}"


def _duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """``mode``: ``live`` (rich Live table), ``lines`` (a line per batch), ``quiet``, or
    ``auto`` (live on a terminal, lines otherwise)."""

    MAX_LIVE_ROWS = 16

    def __init__(self, mode: str = "auto", file=None):
        from rich.console import Console

        self.console = Console(file=file or sys.stdout, highlight=False, soft_wrap=True)
        if not self.console.is_terminal:  # a log file or a pipe: room for whole kernel names
            self.console = Console(file=file or sys.stdout, highlight=False, soft_wrap=True, width=150)
        if mode == "auto":
            mode = "live" if self.console.is_terminal else "lines"
        if mode not in ("live", "lines", "quiet"):
            from accelc.errors import AccelcError

            raise AccelcError(f"--progress must be auto, live, lines or quiet, got {mode!r}")
        self.mode = mode
        self.live = None
        self.session = None
        self.notes: list[str] = []

    # -- events from the session -------------------------------------------------------------
    def begin(self, session) -> None:
        self.session = session
        s = session
        sel = s.selected
        self._print(
            f"tuning {len(sel)} of {len(s.states)} kernel(s) of {s.model_tasks.model_name} for {s.key} "
            f"(O{s.opts.opt_level}, cost model {s.opts.cost_model}, runner {s.measurer.runner_name}); "
            f"budget {s.budget} trials" + (f", {_duration(s.opts.time_budget_s)}" if s.opts.time_budget_s else "")
        )
        if s.resumed_trials:
            self._print(f"resuming: {s.resumed_trials} trial(s) already in {s.log.path}")
        if s.log.skipped:
            self._print(f"warning: {s.log.skipped_summary()}")
        if self.mode == "live":
            from rich.live import Live

            self.live = Live(console=self.console, get_renderable=self._render, refresh_per_second=2, transient=True)
            self.live.start()

    def note(self, text: str) -> None:
        self.notes.append(text)
        if self.mode == "lines":
            self._print(text)

    def update(self, session) -> None:
        if self.mode == "lines":
            self._print(self._status_line(session))
        elif self.live is not None:
            self.live.refresh()

    def end(self, session, result) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        if self.mode == "quiet":
            return
        self.console.print(final_table(result))
        for line in summary_lines(result):
            self._print(line)

    # -- rendering ---------------------------------------------------------------------------
    def _print(self, text: str) -> None:
        if self.mode != "quiet":
            self.console.print(text, markup=False)

    def _status_line(self, s) -> str:
        from .tuner import model_estimate

        done = sum(x.trials for x in s.selected)
        elapsed = time.monotonic() - s.started
        rate = s.session_trials / elapsed if elapsed > 0 else 0.0
        est, base = model_estimate(s.states), model_estimate(s.states, baseline=True)
        eta = eta_seconds(s, rate)
        return (
            f"[{done}/{s.budget}] model estimate {_ms(est)} ms (default {_ms(base)} ms)  "
            f"{rate:.2f} trials/s  elapsed {_duration(elapsed)}  ETA {_duration(eta)}"
        )

    def _render(self):
        from rich.console import Group
        from rich.text import Text

        s = self.session
        header = Text(self._status_line(s) + f"\n{s.status}" + ("" if not self.notes else f"\n{self.notes[-1]}"))
        return Group(header, task_table(s.states, limit=self.MAX_LIVE_ROWS))


def eta_seconds(session, rate: float) -> float | None:
    left = session.budget - sum(x.trials for x in session.selected)
    eta = left / rate if rate > 0 else None
    if session.deadline is not None:
        budget_left = max(0.0, session.deadline - time.monotonic())
        eta = budget_left if eta is None else min(eta, budget_left)
    return eta


def task_table(states, limit: int | None = None, title: str | None = None):
    from rich.table import Table

    from .tuner import model_estimate

    total = model_estimate(states) or 0.0
    table = Table(title=title, show_edge=False, pad_edge=False)
    for name, justify in (("#", "right"), ("kernel", "left"), ("calls", "right"), ("trials", "right"),
                          ("default ms", "right"), ("best ms", "right"), ("speedup", "right"),
                          ("GFLOP/s", "right"), ("share", "right")):
        table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis",
                         min_width=24 if name == "kernel" else None, max_width=56 if name == "kernel" else None)
    rows = sorted(states, key=lambda s: -(s.task.weight * (s.current_s or 0.0)))
    shown = rows[:limit] if limit else rows
    for s in shown:
        speedup = s.baseline_s / s.current_s if s.baseline_s and s.current_s else None
        share = s.task.weight * s.current_s / total if total and s.current_s else None
        table.add_row(
            str(s.task.index), s.task.name + ("" if s.selected else " (not selected)"), str(s.task.weight),
            str(s.trials), _ms(s.baseline_s), _ms(s.best_s),
            "-" if speedup is None else f"{speedup:.2f}x",
            "-" if s.gflops is None else f"{s.gflops:.1f}",
            "-" if share is None else f"{share * 100:.0f}%",
        )
    if limit and len(rows) > limit:
        table.add_row("", f"... {len(rows) - limit} more", "", "", "", "", "", "", "")
    return table


def final_table(result):
    return task_table(result.states, title=f"tuning result ({result.target_key})")


def summary_lines(result) -> list[str]:
    est, base = result.estimate_s, result.baseline_estimate_s
    lines = []
    if est is not None and base is not None:
        lines.append(f"model estimate: {_ms(base)} ms with default schedules -> {_ms(est)} ms with records "
                     f"({base / est:.2f}x; sum over kernels of calls x latency)")
    busy = result.search_seconds + result.build_seconds + result.run_seconds
    parts = ""
    if busy > 0:
        parts = (f" (search {result.search_seconds:.1f} s, build {result.build_seconds:.1f} s, "
                 f"measure {result.run_seconds:.1f} s)")
    lines.append(f"{result.session_trials} trial(s) this session in {result.seconds:.1f} s: "
                 f"{result.trials_per_second:.2f} trials/s{parts}")
    total = sum(s.trials for s in result.states if s.selected)
    lines.append(f"stopped: {result.stop_reason or 'done'}; {total} trial(s) for these kernels in {result.log}"
                 + ("" if result.stop_reason in ("trial budget reached", "search space exhausted", "")
                    else "; run the same command again to resume"))
    return lines


def plot_curve(result, path: str) -> str:
    """Best estimated end-to-end latency against trials (all logged trials of these kernels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if result.curve:
        xs = [p[0] for p in result.curve]
        ys = [p[1] * 1e3 for p in result.curve]
        ax.step(xs, ys, where="post", label="accelc with records (estimate)")
        ax.axhline(ys[0], linestyle=":", color="gray", label="default schedules")
    ax.set_xlabel("trials")
    ax.set_ylabel("estimated model latency (ms)")
    ax.set_title(f"accelc tune: {result.target_key}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
