"""Calibration data checks (one-line errors, exit 2), the calibration methods, and int8
accuracy of the embedded digits CNN."""

from __future__ import annotations

import numpy as np
import pytest

from accelc.cli import main as cli_main
from accelc.quantize import CalibrationError, calibration_runs
from accelc.quantize.calibrate import ActivationStats, METHODS, split_point_masses
from accelc.signature import TensorSpec

SPECS = (TensorSpec("input", (1, 1, 8, 8), "float32"),)


def _good(n=4):
    return np.random.default_rng(0).random((n, 1, 8, 8)).astype(np.float32)


def test_runs_from_npz_and_npy_dir(tmp_path):
    np.savez(tmp_path / "c.npz", input=_good(6))
    (tmp_path / "d").mkdir()
    np.save(tmp_path / "d" / "input.npy", _good(6))
    for source in (tmp_path / "c.npz", tmp_path / "d"):
        runs = calibration_runs(str(source), SPECS)
        assert runs["input"].shape == (6, 1, 1, 8, 8)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"x": _good()}, "lacks input(s) input and has unknown name(s) x"),
        ({"input": _good()[:, :, :7]}, "has shape [4, 1, 7, 8]"),
        ({"input": _good().astype(np.float64)}, "has dtype float64"),
        ({"input": _good(0)}, "empty calibration set"),
        ({"input": np.where(_good() > 0.5, np.nan, _good())}, "NaN/inf"),
        ({"input": np.where(_good() > 0.5, np.inf, _good())}, "NaN/inf"),
    ],
)
def test_bad_calibration_data_is_one_error(data, message):
    with pytest.raises(CalibrationError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        calibration_runs(data, SPECS)


def test_unreadable_and_missing_files(tmp_path):
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(CalibrationError, match="not an .npz file"):
        calibration_runs(str(tmp_path / "junk.npz"), SPECS)
    with pytest.raises(CalibrationError, match="not found"):
        calibration_runs(str(tmp_path / "none.npz"), SPECS)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CalibrationError, match="no .npy files"):
        calibration_runs(str(tmp_path / "empty_dir"), SPECS)


def test_cli_errors_exit_2(tmp_path, capsys):
    from accelc.models import default_model_path

    model = str(default_model_path())
    base = ["compile", model, "--input-shape", "input:1,1,8,8", "-o", str(tmp_path / "q.so"), "--quantize", "int8"]
    assert cli_main(base) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --quantize int8 needs calibration data") and "\n" not in err
    np.savez(tmp_path / "bad.npz", input=_good().astype(np.float64))
    assert cli_main(base + ["--calib", str(tmp_path / "bad.npz")]) == 2
    assert "dtype float64" in capsys.readouterr().err


def _stats(values, bins=2048):
    values = np.abs(values)
    edges = np.linspace(0, values.max(), bins + 1)
    return ActivationStats(float(values.max()), np.histogram(values[values > 0], edges)[0], edges)


def test_methods_clip_outliers_but_not_a_uniform_range():
    rng = np.random.default_rng(0)
    gaussian = _stats(np.append(rng.standard_normal(200_000), 40.0))  # one far outlier
    uniform = _stats(rng.uniform(-1, 1, 200_000))
    assert METHODS["minmax"](gaussian) == pytest.approx(40.0)
    for name in ("percentile", "entropy"):
        assert 2.0 < METHODS[name](gaussian) < 10.0, name  # the outlier is clipped
    # mse weighs the outlier's squared clipping error (36**2) against 200k rounding errors:
    # it clips, but less.
    assert 2.0 < METHODS["mse"](gaussian) < 30.0
    for name in ("percentile", "entropy", "mse"):
        assert METHODS[name](uniform) > 0.9, name  # a bounded range is kept


def test_entropy_keeps_the_tail_behind_a_spike():
    # 75 % of the values share one constant (a bias over blank background), the rest are an
    # exponential tail. Spreading the spike over its 128-level bin made KL prefer resolving the
    # spike to covering the tail: the search without point masses picked 1.79 (max 16.35) and
    # clipped 7.6 % of all values, 30 % of the tail.
    rng = np.random.default_rng(0)
    values = np.concatenate([np.full(150_000, 0.05), rng.exponential(1.5, 50_000)])
    stats = _stats(values)
    density, spikes = split_point_masses(stats.hist)
    assert list(np.flatnonzero(spikes)) == [6] and spikes.sum() > 149_000  # the spike, nothing else
    assert np.array_equal(density + spikes, stats.hist)
    threshold = METHODS["entropy"](stats)
    assert np.percentile(values, 99.9) < threshold <= stats.amax
    assert (values > threshold).mean() < 1e-4


def test_entropy_of_discrete_values_keeps_the_range():
    # every value a point mass (8-bit pixels): nothing to trade clipping against, keep all
    values = np.random.default_rng(0).integers(1, 256, 100_000) / 255.0
    assert METHODS["entropy"](_stats(values)) == pytest.approx(1.0)


def test_digits_int8_accuracy_within_one_point():
    import accelc
    from accelc.models import accuracy, default_model_path, load_digits_calib, load_digits_test

    images, labels = load_digits_test()
    shapes = {"input": [1, 1, 8, 8]}

    def top1(compiled):
        return accuracy(np.concatenate([compiled.run({"input": x[None]})["logits"] for x in images]), labels)

    fp32 = top1(accelc.compile(str(default_model_path()), input_shapes=shapes))
    int8 = accelc.compile(str(default_model_path()), input_shapes=shapes, quantize="int8",
                          calib=load_digits_calib(), calib_method="mse")
    assert top1(int8) >= fp32 - 1.0
