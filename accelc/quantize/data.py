"""Calibration data: load it, check it against the model's inputs, cut it into runs.

Accepted sources: an ``.npz`` file (arrays keyed by input name), a directory holding one
``<input name>.npy`` per input, or a dict of arrays. The first axis of every array counts
samples: either each row is one whole input (array shape ``[N, *input_shape]``) or rows are
stacked along the model's batch axis (``[N, *input_shape[1:]]``, cut into batches of
``input_shape[0]``). Every problem is one ``CalibrationError`` line; random data is never
substituted, because statistics of noise are not calibration.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import AccelcError


class CalibrationError(AccelcError):
    """Calibration data that is missing, unreadable or does not fit the model's inputs."""


def read_calibration(source) -> dict[str, np.ndarray]:
    """Arrays by input name from an .npz file, a directory of .npy files, or a dict."""
    if isinstance(source, dict):
        return {str(k): np.asarray(v) for k, v in source.items()}
    path = Path(source)
    if not path.exists():
        raise CalibrationError(f"--calib: not found: {path}")
    if path.is_dir():
        files = sorted(path.glob("*.npy"))
        if not files:
            raise CalibrationError(f"--calib: directory {path} holds no .npy files (one <input name>.npy per input)")
        return {f.stem: _load(f, np.load) for f in files}
    with _open_npz(path) as data:
        return {k: data[k] for k in data.files}


def _open_npz(path: Path):
    import zipfile

    if not zipfile.is_zipfile(path):
        raise CalibrationError(f"--calib: {path} is not an .npz file (nor a directory of .npy files)")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise CalibrationError(f"--calib: {path} is not a readable .npz file ({_first_line(exc)})") from exc


def _load(path: Path, loader):
    try:
        return loader(path, allow_pickle=False)
    except Exception as exc:
        raise CalibrationError(f"--calib: {path} is not a readable .npy file ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def calibration_runs(source, inputs, max_samples: int | None = None) -> dict[str, np.ndarray]:
    """Check the data against ``inputs`` (TensorSpecs); return arrays ``[runs, *input_shape]``
    ready to feed one run at a time."""
    arrays = read_calibration(source)
    names = [spec.name for spec in inputs]
    missing = [n for n in names if n not in arrays]
    unknown = sorted(set(arrays) - set(names))
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"lacks input(s) {', '.join(missing)}")
        if unknown:
            parts.append(f"has unknown name(s) {', '.join(unknown)}")
        raise CalibrationError(f"calibration data {' and '.join(parts)}; the model's inputs are {', '.join(names)}")
    runs: dict[str, np.ndarray] = {}
    for spec in inputs:
        runs[spec.name] = _as_runs(arrays[spec.name], spec)
    counts = {name: len(a) for name, a in runs.items()}
    if len(set(counts.values())) > 1:
        raise CalibrationError(f"calibration inputs hold different sample counts: {counts}")
    if max_samples is not None:
        runs = {name: a[: max(1, max_samples)] for name, a in runs.items()}
    return runs


def _as_runs(array: np.ndarray, spec) -> np.ndarray:
    shape, name = tuple(spec.shape), spec.name
    if array.dtype != np.dtype(spec.dtype):
        raise CalibrationError(
            f"calibration input {name!r} has dtype {array.dtype}, the model wants {spec.dtype} (cast it first)"
        )
    if array.ndim == len(shape) + 1 and array.shape[1:] == shape:
        runs = array
    elif shape and array.ndim == len(shape) and array.shape[1:] == shape[1:]:
        batch = shape[0]
        count = array.shape[0] // batch if batch else 0
        runs = array[: count * batch].reshape((count,) + shape)
    else:
        raise CalibrationError(
            f"calibration input {name!r} has shape {list(array.shape)}; expected [N, {', '.join(map(str, shape))}] "
            f"or [N, {', '.join(map(str, shape[1:]))}] (N samples along the first axis)"
        )
    if runs.shape[0] == 0:
        raise CalibrationError(f"calibration input {name!r} holds no samples (empty calibration set)")
    if array.dtype.kind == "f" and not np.all(np.isfinite(runs)):
        bad = int(np.size(runs) - np.count_nonzero(np.isfinite(runs)))
        raise CalibrationError(f"calibration input {name!r} holds {bad} NaN/inf value(s)")
    return np.ascontiguousarray(runs)
