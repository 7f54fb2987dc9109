"""``accelc run --profile`` for the LLVM CPU target: every kernel timed in context.

At compile time :class:`EmbedKernelTable` stores, in the artifact itself, a table of the
module's TIR kernels: the accelc schedule rule that scheduled each one (or ``-`` for a tuned
or stock kernel) and its floating-point work when it is a multiply-add reduction (conv,
matmul, dense: ``2 x`` the iteration space of the reduction block). At run time
:func:`profile` times every VM call of a few runs through the Relax VM's instrument hook
(TVM 0.27 has no profiling VM) and reports per kernel: calls per run, milliseconds per run,
share of the run, GFLOP/s, and the share of the machine's nominal FMA peak (cores x vector
lanes x 2 FMA ports x 2 flops at the highest clock /proc/cpuinfo lists). These are in-context
times (caches as the model leaves them, the thread pool as the VM drives it), unlike
``benchmarks/profile_kernels.py``, which compiles and times each kernel alone.
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np
import tvm
from tvm import relax, tirx

KERNEL_TABLE_FUNC = "accelc_kernel_table"
_REDUCE = 2  # IterVar.CommReduce


def kernel_flops(func: tirx.PrimFunc) -> float | None:
    """``2 x`` the loop-nest size around the largest block whose reduction multiplies (the
    multiply-add of a conv/matmul/dense), or None when the kernel has no such block."""
    best = None

    def visit(stmt, extents):
        nonlocal best
        if isinstance(stmt, tirx.For):
            ext = [int(stmt.extent)] if isinstance(stmt.extent, tirx.IntImm) else []
            visit(stmt.body, extents + ext)
            return
        if hasattr(stmt, "seq"):
            for s in stmt.seq:
                visit(s, extents)
            return
        for attr in ("body", "block"):
            child = getattr(stmt, attr, None)
            if child is None or isinstance(child, (int, str)):
                continue
            if attr == "body" and hasattr(stmt, "iter_vars") and any(
                int(iv.iter_type) == _REDUCE for iv in stmt.iter_vars
            ) and _multiplies(child):
                best = max(best or 0.0, 2.0 * float(np.prod(extents, dtype=np.float64)))
            visit(child, extents)

    visit(func.body, [])
    return best


def _multiplies(stmt) -> bool:
    """The reduction's update multiplies (a multiply-add, not the max of a pooling window)."""
    def has_mul(node) -> bool:
        if isinstance(node, tirx.Mul):
            return True
        if node is None or isinstance(node, (tirx.IntImm, tirx.FloatImm, tirx.Var)) or type(node).__name__ == "BufferLoad":
            return False
        children = []
        for attr in ("a", "b", "value", "condition", "true_value", "false_value", "body", "seq"):
            child = getattr(node, attr, None)
            if child is not None and not isinstance(child, (int, float, str)):
                children.extend(child if attr == "seq" else [child])
        children.extend(getattr(node, "args", None) or [])
        return any(has_mul(c) for c in children)

    return has_mul(stmt)


def kernel_table(mod: tvm.IRModule) -> dict:
    """``{kernel name: {"rule": ..., "flops": ...}}`` for the module's PrimFuncs."""
    table = {}
    for gv, func in mod.functions_items():
        if isinstance(func, tirx.PrimFunc):
            attrs = func.attrs or {}
            rule = str(attrs["accelc.schedule_rule"]) if "accelc.schedule_rule" in attrs else "-"
            table[gv.name_hint] = {"rule": rule, "flops": kernel_flops(func)}
    return table


@tvm.transform.module_pass(opt_level=0, name="EmbedKernelTable")
class EmbedKernelTable:  # pylint: disable=too-few-public-methods
    """Add ``accelc_kernel_table()`` (a Relax function returning the JSON table as uint8) to
    the module, for ``accelc run --profile`` on the exported artifact."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        data = np.frombuffer(json.dumps({"kernels": kernel_table(mod)}).encode(), np.uint8)
        func = relax.Function([], relax.SeqExpr([], relax.const(data)), relax.TensorType(data.shape, "uint8"))
        out = mod.clone() if hasattr(mod, "clone") else mod
        out[KERNEL_TABLE_FUNC] = func.with_attr("global_symbol", KERNEL_TABLE_FUNC)
        return out


def embedded_table(vm) -> dict:
    """The table :class:`EmbedKernelTable` stored (``{}`` for artifacts built without it)."""
    try:
        value = vm[KERNEL_TABLE_FUNC]()
    except Exception:  # pylint: disable=broad-except; older artifact: no table
        return {}
    return json.loads(value.numpy().tobytes())["kernels"]


def nominal_peak_gflops(target=None) -> float | None:
    """cores x fp32 lanes x 2 FMA ports x 2 flops x the highest clock in /proc/cpuinfo."""
    from .config import config_from_target, host_target

    config = config_from_target(target if target is not None else host_target())
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            mhz = max(float(l.split(":")[1]) for l in f if l.startswith("cpu MHz"))
    except (OSError, ValueError):
        return None
    return config.num_cores * config.vector_lanes * 2 * 2 * mhz / 1e3


def profile(vm, args, runs: int = 10, target=None) -> str:
    """Per-kernel in-context report of ``runs`` runs of ``vm["main"](*args)`` (after one
    warm-up run); times are medians over the runs."""
    table = embedded_table(vm)
    vm["main"](*args)
    per_run: list[dict[str, float]] = []
    calls: dict[str, int] = {}
    started: list[float] = []
    current: dict[str, float] = {}

    def instrument(func, symbol, before_run, ret_value, *call_args):  # noqa: ARG001
        if before_run:
            started.append(time.perf_counter())
        else:
            name = str(symbol)
            current[name] = current.get(name, 0.0) + time.perf_counter() - started.pop()
            if not per_run:
                calls[name] = calls.get(name, 0) + 1
        return 0  # VMInstrumentReturnKind.kNoOp: run the call as usual

    walls = []
    vm.set_instrument(instrument)
    try:
        for _ in range(runs):
            current.clear()
            begin = time.perf_counter()
            vm["main"](*args)
            walls.append(time.perf_counter() - begin)
            per_run.append(dict(current))
    finally:
        vm.set_instrument(None)
    plain = []
    for _ in range(runs):
        begin = time.perf_counter()
        vm["main"](*args)
        plain.append(time.perf_counter() - begin)
    return format_profile(table, per_run, calls, walls, plain, nominal_peak_gflops(target))


def format_profile(table, per_run, calls, walls, plain, peak) -> str:
    names = {n for run in per_run for n in run}
    ms = {n: statistics.median(run.get(n, 0.0) for run in per_run) * 1e3 for n in names}
    kernels = {n: v for n, v in ms.items() if not n.startswith("vm.builtin.")}
    builtins = sum(v for n, v in ms.items() if n.startswith("vm.builtin."))
    total = sum(kernels.values()) + builtins
    lines = [f"profile: {len(kernels)} kernels, {sum(calls.get(n, 0) for n in kernels)} calls a run, "
             f"median of {len(per_run)} runs; in-context times (each call timed through the VM)",
             f"  {'kernel':<44s}{'rule':<22s}{'calls':>6s}{'ms':>9s}{'%':>6s}{'GFLOP/s':>9s}"
             + (f"{'% peak':>8s}" if peak else "")]
    by_rule: dict[str, float] = {}
    for name, value in sorted(kernels.items(), key=lambda kv: -kv[1]):
        info = table.get(name, {})
        rule = info.get("rule", "?")
        by_rule[rule] = by_rule.get(rule, 0.0) + value
        flops = info.get("flops")
        gflops = flops * calls.get(name, 1) / (value * 1e6) if flops and value > 0 else None
        row = (f"  {name[:43]:<44s}{rule[:21]:<22s}{calls.get(name, 0):>6d}{value:9.3f}"
               f"{100 * value / total:6.1f}" + (f"{gflops:9.1f}" if gflops else f"{'-':>9s}"))
        if peak:
            row += f"{100 * gflops / peak:7.0f}%" if gflops else f"{'-':>8s}"
        lines.append(row)
    lines.append(f"  {'VM builtins (allocation, shape checks)':<66s}{'':>6s}{builtins:9.3f}{100 * builtins / total:6.1f}")
    lines.append("  by rule: " + ", ".join(f"{rule} {value:.2f} ms ({100 * value / total:.0f}%)"
                                           for rule, value in sorted(by_rule.items(), key=lambda kv: -kv[1])))
    flops_total = sum((table.get(n, {}).get("flops") or 0) * calls.get(n, 1) for n in kernels)
    wall = statistics.median(plain) * 1e3
    summary = (f"  total: kernels {total:.3f} ms; run {statistics.median(walls) * 1e3:.3f} ms instrumented, "
               f"{wall:.3f} ms plain")
    if flops_total:
        summary += f"; {flops_total / 1e9:.3f} GFLOP of multiply-adds, {flops_total / (wall * 1e6):.1f} GFLOP/s over the run"
    if peak:
        summary += f"; nominal peak {peak:.0f} GFLOP/s"
    lines.append(summary)
    return "\n".join(lines)
