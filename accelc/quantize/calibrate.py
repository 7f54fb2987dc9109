"""Activation statistics and the four ways to turn them into an int8 range.

Collection compiles the annotated model's float twin with accelc itself (llvm host target):
every activation point's QDQ pair is removed and the tensor it quantized becomes an extra
output. The calibration set runs through it twice: once for each tensor's max |x|, once for
a histogram of |x| over [0, max] (the ranges are symmetric: zero point 0). Exact zeros stay
out of the histogram: zero is exact at any scale, and the spike ReLU leaves at 0 would
otherwise drive the entropy method to clip far too hard (other spikes: split_point_masses).

Methods map a histogram to a clipping threshold T; the int8 scale is T / 127:

    minmax      T = max |x|
    percentile  T = the p-th percentile of |x| (p = 99.99 by default)
    entropy     T minimizing KL(P || Q) between the clipped histogram P and its 128-level
                quantization Q (TensorRT's algorithm, as onnxruntime and Relay port it), with
                point masses (spikes) kept exact instead of spread over their level
    mse         T minimizing the expected squared rounding-plus-clipping error
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

NUM_LEVELS = 128  # |int8| levels 0..127 of a symmetric range
SPIKE_WINDOW = 8  # entropy: a bin is compared with the median of the 17 bins around it
SPIKE_RATIO = 8.0  # ... and holds a point mass above 8x that median
SMOOTHING_EPS = 1e-4  # entropy: share of the mean bin moved into each empty bin before KL


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


def split_point_masses(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``hist`` as density + point masses. A point mass is a value many inputs share exactly
    (a channel's bias over a blank background, ReLU6's cap): a bin holding more than
    SPIKE_RATIO times the median of the 2 * SPIKE_WINDOW + 1 bins around it (and more than
    SPIKE_RATIO counts). Its excess over that median is the point mass; the median stays."""
    hist = hist.astype(np.float64)
    padded = np.pad(hist, SPIKE_WINDOW, mode="reflect")  # reflect: a spike at bin 0 is not its own neighbour
    baseline = np.median(np.lib.stride_tricks.sliding_window_view(padded, 2 * SPIKE_WINDOW + 1), axis=1)
    spike = hist > SPIKE_RATIO * np.maximum(baseline, 1.0)
    density = np.where(spike, baseline, hist)
    return density, hist - density


def _smooth(counts: np.ndarray) -> np.ndarray:
    """Move SMOOTHING_EPS of the mean bin into every empty bin (onnxruntime's and Relay's
    smooth_distribution), so a clipped tail that Q has no mass for costs much, not infinity."""
    empty = counts == 0
    eps = SMOOTHING_EPS * counts.sum() / counts.size
    taken = eps * empty.sum() / max(counts.size - empty.sum(), 1)
    return np.where(empty, eps, np.maximum(counts - taken, eps))


def calibrate_entropy(stats: ActivationStats, **_) -> float:
    """TensorRT's entropy calibration (Migacz, "8-bit Inference with TensorRT", GTC 2017; the
    algorithm of onnxruntime's calibrate.py and Relay's _find_scale_by_kl), point masses aside.

    For each candidate i from 128 (one bin per level) to all bins: the reference P is
    hist[:i] with every count beyond folded into its last bin; the candidate Q merges the
    density of hist[:i] into 128 levels, spreads each level evenly over its nonempty bins, and
    adds back the point masses below i where they were. Both are smoothed and normalized, and
    T is the upper edge of the largest i with the least KL(P || Q).

    Why point masses bypass the merge: a point mass lands on one int8 level whatever T is, yet
    the even spread charges it for smearing over its level's bins, so a histogram that is
    mostly a few spikes buys their "resolution" by clipping everything above them. MNIST's
    background makes each conv1 channel output its bias on most pixels: plain TensorRT clipped
    the first pooled activation at 0.455 (max 5.76), a quarter of the values, -13 points.
    Exact zeros, the commonest point mass, never enter the histogram.
    """
    hist = stats.hist.astype(np.float64)
    nbins = len(hist)
    if nbins <= NUM_LEVELS or hist.sum() == 0:
        return stats.amax
    density, spikes = split_point_masses(hist)
    beyond = np.append(np.cumsum(hist[::-1])[::-1], 0.0)  # beyond[i] = counts in bins i..
    kl = np.full(nbins + 1, np.inf)
    for i in range(NUM_LEVELS, nbins + 1):
        reference = hist[:i].copy()
        reference[-1] += beyond[i]  # clipped values saturate into the last level
        level = (np.arange(i) * NUM_LEVELS) // i
        nonempty = density[:i] != 0
        sums = np.bincount(level, weights=density[:i], minlength=NUM_LEVELS)
        counts = np.bincount(level, weights=nonempty, minlength=NUM_LEVELS)
        candidate = np.where(nonempty, sums[level] / np.maximum(counts[level], 1), 0.0) + spikes[:i]
        if candidate.sum() == 0:
            continue
        p, q = _smooth(reference), _smooth(candidate)
        p, q = p / p.sum(), q / q.sum()
        kl[i] = float(np.sum(p * np.log(p / q)))
    if not np.isfinite(kl).any():
        return stats.amax
    best = np.flatnonzero(kl <= kl.min() + 1e-12)[-1]  # ties (discrete data): keep the wider range
    return float(stats.edges[best])


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
    # keep the other functions: the ONNX importer emits some ops (Clip with tensor bounds) as
    # call_tir of PrimFuncs that main still calls
    mod = tvm.IRModule({**{gv: f for gv, f in mod.functions_items() if gv.name_hint != "main"}})
    mod["main"] = new_func
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
