"""``accelc run --profile`` for vta artifacts: where one run's time goes, layer by layer.

VTA layers report the simulator's cycle count (and the time it stands for at the config's
clock), GEMM utilization (GEMM micro-op iterations / cycles), DRAM traffic and the wall time
the simulation took; CPU layers say why they were not offloaded (the table the compiler
embedded). Host time is measured per VM call with the Relax VM's instrument hook
(``VirtualMachine.set_instrument``; TVM 0.27 has no ``profile=True`` VM any more): every host
kernel (``fused_*``, ``quantize``, ...) with its calls and microseconds, the VM's builtins
(allocation, shape checks) in one row. The totals add the simulated accelerator time and the
measured host time, which do not overlap (the VM calls one kernel at a time).

The profiled run follows a warm-up run (decoded layers cached, host thread pool started).
With ``force_serial`` every layer runs its instruction stream in program order, and the
warm-up run is the pipelined one, so the report also says what latency hiding saves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .runtime import RUN_LAYER, layer_table, profiling

_BUILTIN_PREFIX = "vm.builtin."


@dataclass
class HostTimes:
    """Measured seconds and calls per VM call symbol (the VTA layer calls excluded)."""

    seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def add(self, symbol: str, seconds: float) -> None:
        self.seconds[symbol] = self.seconds.get(symbol, 0.0) + seconds
        self.calls[symbol] = self.calls.get(symbol, 0) + 1

    @property
    def total_s(self) -> float:
        return sum(self.seconds.values())


def profile(vm, args, force_serial: bool = False) -> str:
    """One run's per-layer and per-kernel report; with ``force_serial`` also what latency
    hiding saves (the pipelined warm-up run against the serial one)."""
    warmup, _, _ = _run(vm, args, False)
    runs, host, wall = _run(vm, args, force_serial)
    text = format_profile(layer_table(vm), runs, host, wall, force_serial)
    if force_serial:
        serial_cycles = sum(r.stats.cycles for r in runs)
        piped_cycles = sum(r.stats.cycles for r in warmup)
        if piped_cycles:
            text += (f"\n  latency hiding: {piped_cycles} cycles pipelined vs {serial_cycles} serial "
                     f"({serial_cycles / piped_cycles:.2f}x)")
    return text


def _run(vm, args, force_serial: bool):
    """``(LayerRun list, HostTimes, wall seconds)`` of one ``vm["main"](*args)``."""
    host, started = HostTimes(), []

    def instrument(func, symbol, before_run, ret_value, *call_args):
        if before_run:
            started.append(time.perf_counter())
        else:
            elapsed = time.perf_counter() - started.pop()
            if symbol != RUN_LAYER:  # the simulator's time is not host time
                host.add(str(symbol), elapsed)
        return 0  # VMInstrumentReturnKind.kNoOp: run the call as usual

    with profiling(force_serial=force_serial) as runs:
        vm.set_instrument(instrument)
        try:
            start = time.perf_counter()
            vm["main"](*args)
            wall = time.perf_counter() - start
        finally:
            vm.set_instrument(None)
    return runs, host, wall


def format_profile(table: list[dict], runs: list, host: HostTimes, wall_s: float, force_serial: bool) -> str:
    by_name = {run.name: run for run in runs}
    mode = "force-serial (no latency hiding)" if force_serial else "pipelined (latency hiding)"
    lines = [f"profile: {len(runs)} VTA layer call(s), {mode}",
             f"  {'layer':<16s}{'where':<6s}{'cycles':>10s}{'VTA us':>10s}{'GEMM util':>10s}"
             f"{'load B':>10s}{'store B':>9s}{'sim ms':>8s}  op"]
    for row in table:
        run = by_name.get(row["name"])
        if row["where"] == "vta" and run is not None:
            s = run.stats
            lines.append(f"  {row['name']:<16s}{'vta':<6s}{s.cycles:>10d}{s.seconds * 1e6:>10.1f}"
                         f"{100 * s.gemm_utilization:>9.1f}%{s.load_nbytes:>10d}{s.out_store_nbytes:>9d}"
                         f"{run.wall_s * 1e3:>8.1f}  {row['op']}")
        elif row["where"] == "vta":
            lines.append(f"  {row['name']:<16s}{'vta':<6s}{'(not called)':>10s}  {row['op']}")
        else:
            lines.append(f"  {row['name']:<16s}{'cpu':<6s}{'-':>10s}{'-':>10s}{'-':>10s}{'-':>10s}{'-':>9s}"
                         f"{'-':>8s}  {row['op']}: {row['reason']}")
    kernels = sorted(((k, v) for k, v in host.seconds.items() if not k.startswith(_BUILTIN_PREFIX)),
                     key=lambda kv: -kv[1])
    builtins = [k for k in host.seconds if k.startswith(_BUILTIN_PREFIX)]
    lines.append("  host time per kernel (measured on this machine; the CPU layers above run in these):")
    lines.append(f"    {'kernel':<60s}{'calls':>6s}{'host us':>10s}")
    for name, seconds in kernels:
        lines.append(f"    {_clip(name, 60):<60s}{host.calls[name]:>6d}{seconds * 1e6:>10.1f}")
    if builtins:
        lines.append(f"    {'VM builtins (allocation, shape checks)':<60s}{sum(host.calls[k] for k in builtins):>6d}"
                     f"{sum(host.seconds[k] for k in builtins) * 1e6:>10.1f}")
    vta_cycles = sum(run.stats.cycles for run in runs)
    vta_s = sum(run.stats.seconds for run in runs)
    freq = {run.stats.freq_mhz for run in runs}
    macs = sum(run.stats.macs for run in runs)
    util = sum(run.stats.gemm_counter for run in runs) / vta_cycles if vta_cycles else 0.0
    clock = f" at {min(freq):g} MHz" if len(freq) == 1 else ""
    lines.append(f"  VTA total: {vta_cycles} cycles = {vta_s * 1e6:.1f} us simulated{clock}, "
                 f"GEMM utilization {100 * util:.1f}%, {macs} MACs")
    lines.append(f"  host total: {host.total_s * 1e6:.1f} us measured (CPU kernels + VM builtins, simulator excluded)")
    total = vta_s + host.total_s
    share = f" ({100 * vta_s / total:.0f}% on VTA)" if total else ""
    lines.append(f"  estimated run time: {total * 1e6:.1f} us = VTA {vta_s * 1e6:.1f} + host "
                 f"{host.total_s * 1e6:.1f}{share}")
    lines.append(f"  whole run on this machine (simulator included): {wall_s * 1e3:.2f} ms")
    return "\n".join(lines)


def _clip(name: str, width: int) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."
