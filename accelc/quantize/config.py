"""What the quantizer is asked to do: one frozen dataclass, read by every quantize pass."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import AccelcError

CALIB_METHODS = ("minmax", "percentile", "entropy", "mse")
REQUANTIZE_MODES = ("fixedpoint", "shift")
QUANTIZE_MODES = ("realize", "simulate")
ACTIVATION_DTYPES = ("int8", "uint8")
# Ops the annotator can put in int8, by their Relax name; ONNX spellings map onto them.
QUANTIZABLE_OPS = ("conv2d", "matmul", "add")
_OP_ALIASES = {
    "conv": "conv2d", "conv2d": "conv2d", "matmul": "matmul", "gemm": "matmul", "dense": "matmul", "add": "add",
}


@dataclass(frozen=True)
class QuantizeConfig:
    """int8 quantization options.

    Weights are always symmetric int8 (zero point 0), per output channel unless
    ``per_tensor``. Activations are symmetric int8 with one scale per tensor.
    ``keep_float`` names ops to leave in float: an op kind (``conv2d``, ``matmul``, ``add``
    (a tensor + tensor add, e.g. residual; the ONNX spellings ``Conv``/``MatMul``/``Gemm``/``Add``
    work too), the n-th op of a kind (``conv2d:0``), or
    the name of the Relax variable the op defines (``lv8``, as ``--dump-ir`` shows).
    ``shift`` requantization makes every scale a power of two, so rescaling is a rounding
    right shift with no multiplier (what shift-only int8 hardware such as VTA needs).
    ``activation_dtype="uint8"`` gives activations a uint8 grid: zero point 0 and scale
    T/255 where the tensor is non-negative by construction (after relu, max_pool of relu, ...),
    zero point 128 and scale T/127 elsewhere; realized, a uint8 value u runs as the int8 u - 128
    with zero point z - 128 (the same integers), so the int8 x int8 kernels serve both, with
    the zero point compensated (``-z * sum(W)`` in the bias, padding with z).
    """

    calib_method: str = "entropy"
    percentile: float = 99.99
    per_tensor: bool = False
    keep_float: tuple[str, ...] = ()
    skip_first_conv: bool = False
    skip_last_dense: bool = False
    requantize: str = "fixedpoint"
    mode: str = "realize"
    num_bins: int = 2048
    max_calib_samples: int | None = None
    activation_dtype: str = "int8"

    def __post_init__(self):
        if self.calib_method not in CALIB_METHODS:
            raise AccelcError(f"--calib-method must be one of {', '.join(CALIB_METHODS)}, got {self.calib_method!r}")
        if self.requantize not in REQUANTIZE_MODES:
            raise AccelcError(f"--requantize must be one of {', '.join(REQUANTIZE_MODES)}, got {self.requantize!r}")
        if self.mode not in QUANTIZE_MODES:
            raise AccelcError(f"--quantize-mode must be one of {', '.join(QUANTIZE_MODES)}, got {self.mode!r}")
        if self.activation_dtype not in ACTIVATION_DTYPES:
            raise AccelcError(
                f"--activation-dtype must be one of {', '.join(ACTIVATION_DTYPES)}, got {self.activation_dtype!r}"
            )
        if not 50.0 < self.percentile <= 100.0:
            raise AccelcError(f"percentile must be in (50, 100], got {self.percentile}")

    @property
    def power_of_two(self) -> bool:
        return self.requantize == "shift"

    def keeps_float(self, op: str, index: int, var_name: str) -> bool:
        """True when ``keep_float`` names this op (kind, ``kind:index`` or variable name)."""
        for item in self.keep_float:
            kind, _, number = item.partition(":")
            canonical = _OP_ALIASES.get(kind.lower())
            if canonical == op and (not number or number == str(index)):
                return True
            if item == var_name:
                return True
        return False
