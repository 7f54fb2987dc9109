"""int8 post-training quantization: annotate -> calibrate -> realize, as Relax passes.

The passes live in ``accelc.passes`` (``quantize_annotate``, ``quantize_calibrate``,
``quantize_realize``); this package holds what they share with the API and the CLI: the
options (``QuantizeConfig``), calibration data loading and checking, the calibration methods
and the fixed-point arithmetic.
"""

from __future__ import annotations

from .config import ACTIVATION_DTYPES, CALIB_METHODS, QUANTIZE_MODES, REQUANTIZE_MODES, QuantizeConfig
from .data import CalibrationError, calibration_runs

__all__ = [
    "ACTIVATION_DTYPES",
    "CALIB_METHODS",
    "QUANTIZE_MODES",
    "REQUANTIZE_MODES",
    "CalibrationError",
    "QuantizeConfig",
    "calibration_runs",
    "quantize_passes",
]


def quantize_passes(config: QuantizeConfig, runs: dict) -> list:
    """Phase-2 passes for ``config``; ``runs`` from ``calibration_runs``. ``simulate`` stops
    after calibration: the QDQ graph then compiles as fake-quant float math."""
    from accelc.passes.quantize_annotate import QuantizeAnnotate
    from accelc.passes.quantize_calibrate import QuantizeCalibrate
    from accelc.passes.quantize_realize import QuantizeRealize

    passes = [QuantizeAnnotate(config), QuantizeCalibrate(config, runs)]
    if config.mode == "realize":
        passes.append(QuantizeRealize(config.requantize))
    return passes
