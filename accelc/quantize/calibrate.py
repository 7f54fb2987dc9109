"""Activation statistics and the four ways to turn them into an int8 range.

Collection compiles the annotated model's float twin with accelc itself (llvm host target):
every activation point's QDQ pair is removed and the tensor it quantized becomes an extra
output. The calibration set runs through it twice: once for each tensor's max |x|, once for
a histogram of |x| over [0, max] (the ranges are symmetric: zero point 0). Exact zeros stay
out of the histogram: zero is exact at any scale, and the spike ReLU leaves at 0 would
otherwise drive the entropy method to clip far too hard.

Methods map a histogram to a clipping threshold T; the int8 scale is T / 127:

    minmax      T = max |x|
    percentile  T = the p-th percentile of |x| (p = 99.99 by default)
    entropy     T minimizing KL(P || Q) between the clipped histogram P and its 128-level
                quantization Q (the TensorRT / MXNet algorithm Relay's kl_divergence ported)
    mse         T minimizing the expected squared rounding-plus-clipping error
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

NUM_LEVELS = 128  # |int8| levels 0..127 of a symmetric range


@dataclass
class ActivationStats:
    """Running statistics of one activation point."""

    amax: float = 0.0
    hist: np.ndarray | None = None
    edges: np.ndarray | None = None


# ------------------------------------------------------------------------------ methods
def calibrate_minmax(stats: ActivationStats, **_) -> float:
    return stats.amax


def calibrate_percentile(stats: ActivationStats, percentile: float = 99.99, **_) -> float:
    cdf = np.cumsum(stats.hist) / max(stats.hist.sum(), 1)
    index = int(np.searchsorted(cdf, percentile / 100.0))
    return float(stats.edges[min(index + 1, len(stats.edges) - 1)])


def calibrate_entropy(stats: ActivationStats, **_) -> float:
    hist = stats.hist.astype(np.float64)
    nbins = len(hist)
    if nbins <= NUM_LEVELS or hist.sum() == 0:
        return stats.amax
    total = hist.sum()
    best_kl, best_i = np.inf, nbins
    for i in range(NUM_LEVELS, nbins + 1):
        reference = hist[:i].copy()
        reference[-1] += hist[i:].sum()  # clipped outliers land in the last bin
        # Q: merge the i bins into 128 levels, spread each level evenly over its nonzero bins.
        level = (np.arange(i) * NUM_LEVELS) // i
        nonzero = hist[:i] != 0
        sums = np.bincount(level, weights=hist[:i], minlength=NUM_LEVELS)
        counts = np.bincount(level, weights=nonzero, minlength=NUM_LEVELS)
        q = np.where(nonzero, sums[level] / np.maximum(counts[level], 1), 0.0)
        # Both over the total mass (Q is not renormalized): Q lacks the clipped mass, so
        # clipping is penalized even for sparse histograms (discrete inputs) where a
        # renormalized Q equals P and every threshold would look perfect.
        p = reference / total
        q = q / total
        mask = p > 0
        kl = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return float(stats.edges[best_i])


def calibrate_mse(stats: ActivationStats, **_) -> float:
    hist = stats.hist.astype(np.float64)
    centers = (stats.edges[:-1] + stats.edges[1:]) / 2
    candidates = stats.edges[max(1, len(hist) // 64) :: max(1, len(hist) // 256)]
    candidates = np.unique(np.append(candidates, stats.amax))
    best_err, best_t = np.inf, stats.amax
    for t in candidates:
        if t <= 0:
            continue
        step = t / (NUM_LEVELS - 1)
        recon = np.minimum(np.round(centers / step), NUM_LEVELS - 1) * step
        err = float(np.sum(hist * (centers - recon) ** 2))
        if err < best_err:
            best_err, best_t = err, float(t)
    return best_t


METHODS = {
    "minmax": calibrate_minmax,
    "percentile": calibrate_percentile,
    "entropy": calibrate_entropy,
    "mse": calibrate_mse,
}


def scale_from_threshold(threshold: float, power_of_two: bool) -> float:
    from .fixed_point import power_of_two_ceil

    scale = threshold / 127.0 if threshold > 0 and np.isfinite(threshold) else 1.0 / 127.0
    return float(power_of_two_ceil(scale)) if power_of_two else scale


# --------------------------------------------------------------------------- collection
def statistics_module(mod: tvm.IRModule) -> tuple[tvm.IRModule, int]:
    """The float twin of an annotated module: activation QDQ pairs removed, ``main`` returns
    the tuple of the tensors each activation point quantizes, in binding order."""
    from accelc.passes.quantize_common import activation_points

    from ._strip import StripActivationQDQ

    mod = relax.transform.ToNonDataflow()(mod)
    func = StripActivationQDQ(mod).strip(mod["main"])
    points = [call.args[0] for call in activation_points(func)]
    body = relax.SeqExpr(func.body.blocks, relax.Tuple(points))
    ret_ty = relax.TupleType([p.ty for p in points])
    new_func = relax.Function(func.params, body, ret_ty, func.is_pure, func.attrs)
    mod = tvm.IRModule({"main": new_func})
    mod = tvm.transform.Sequential(
        [relax.transform.Normalize(), relax.transform.DeadCodeElimination(), relax.transform.ConvertToDataflow()]
    )(mod)
    return mod, len(points)


def collect_statistics(mod: tvm.IRModule, runs: dict[str, np.ndarray], num_bins: int, need_histogram: bool):
    """Compile the statistics module for the host CPU and run the calibration set through it."""
    from accelc.pipeline import PipelineOptions
    from accelc.pipeline import run as run_pipeline
    from accelc.targets import registry

    stats_mod, count = statistics_module(mod)
    if count == 0:
        return []
    backend = registry.get("llvm")
    target = backend.make(None)
    executable, _ = run_pipeline(stats_mod, backend, target, PipelineOptions(opt_level=2))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    names = [p.name for p in mod["main"].params]
    samples = len(next(iter(runs.values())))

    def outputs(i):
        args = [tvm.runtime.tensor(runs[n][i]) for n in names]
        result = vm["main"](*args)
        return [np.abs(result[k].numpy()) for k in range(count)]

    stats = [ActivationStats() for _ in range(count)]
    for i in range(samples):
        for s, value in zip(stats, outputs(i)):
            s.amax = max(s.amax, float(value.max(initial=0.0)))
    if need_histogram:
        for s in stats:
            s.edges = np.linspace(0.0, s.amax if s.amax > 0 else 1.0, num_bins + 1)
            s.hist = np.zeros(num_bins, np.int64)
        for i in range(samples):
            for s, value in zip(stats, outputs(i)):
                s.hist += np.histogram(value[value > 0], bins=s.edges)[0]
    return stats
