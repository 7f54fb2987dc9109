"""Integer rescaling: a real multiplier as an int32 fixed-point multiplier and a right shift.

``requantize(acc, m)`` computes ``clip(round_half_up(acc * m), -128, 127)`` in integers:

    fixedpoint  m = M0 * 2**-n, M0 in [2**30, 2**31) (Q31):  (acc * M0 + 2**(n-1)) >> n   (int64)
    shift       m = 2**-n exactly:                            (acc + 2**(n-1)) >> n
                (a power-of-two multiplier >= 1 becomes M0 = 2**k with n = 0)

Both round to nearest with ties toward +inf (the add-half-then-arithmetic-shift rule) and
saturate to int8. ``requantize_reference`` is the numpy model of the same integer arithmetic;
the realized kernels must equal it bit for bit.
"""

from __future__ import annotations

import numpy as np

MAX_SHIFT = 62  # |acc| < 2**31 and M0 < 2**31 keep acc*M0 + 2**61 inside int64


def fixed_point_multiplier(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-element (M0 int64, n int64) with m ~= M0 * 2**-n; M0 carries m's sign."""
    m = np.asarray(m, dtype=np.float64)
    frac, exp = np.frexp(np.abs(m))  # |m| = frac * 2**exp, frac in [0.5, 1)
    m0 = np.round(frac * 2.0**31).astype(np.int64)
    carry = m0 == 2**31  # frac rounded up to 1.0
    m0 = np.where(carry, 2**30, m0)
    exp = exp + carry
    shift = 31 - exp.astype(np.int64)
    # Tiny multipliers: keep the shift in range, M0 shrinks instead (the result is ~0 anyway).
    too_far = shift > MAX_SHIFT
    m0 = np.where(too_far, np.round(np.abs(m) * 2.0**MAX_SHIFT).astype(np.int64), m0)
    shift = np.where(too_far, MAX_SHIFT, shift)
    if np.any(shift < 1):
        raise ValueError(f"requantize multiplier too large for fixed point: {np.abs(m).max()}")
    m0 = np.where(m == 0, 0, m0) * np.where(m < 0, -1, 1)
    return m0.astype(np.int64), shift.astype(np.int64)


def power_of_two_shift(m: np.ndarray) -> np.ndarray:
    """n with m == 2**-n exactly (shift mode); raises if some m is not a power of two."""
    m = np.asarray(m, dtype=np.float64)
    n = -np.log2(m)
    if not np.all(np.isfinite(n)) or not np.allclose(n, np.round(n), rtol=0, atol=1e-9):
        raise ValueError("shift requantization needs power-of-two scale ratios")
    return np.round(n).astype(np.int64)


def multiplier_and_shift(m: np.ndarray, power_of_two: bool) -> tuple[np.ndarray, np.ndarray]:
    """(M0, n) with n >= 0 such that requantizing is ``(acc * M0 + half(n)) >> n``.

    Shift mode: M0 is 1 (or 2**k for a rare left shift), so no multiplier is needed."""
    if power_of_two:
        n = power_of_two_shift(m)
        return np.left_shift(np.int64(1), np.maximum(-n, 0)), np.maximum(n, 0)
    return fixed_point_multiplier(m)


def rounding_half(shift: np.ndarray) -> np.ndarray:
    """2**(n-1) for n > 0, else 0: added before the right shift, it rounds to nearest."""
    shift = np.asarray(shift, dtype=np.int64)
    return np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0).astype(np.int64)


def requantize_reference(acc: np.ndarray, m0: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """The numpy model of the realized requantize: int32 accumulators -> int8."""
    value = acc.astype(np.int64) * np.asarray(m0, dtype=np.int64)
    return np.clip((value + rounding_half(shift)) >> np.asarray(shift, dtype=np.int64), -128, 127).astype(np.int8)


def power_of_two_ceil(scale: np.ndarray) -> np.ndarray:
    """The smallest power of two >= scale (so rounding a range to a power of two never clips)."""
    scale = np.asarray(scale, dtype=np.float64)
    return np.exp2(np.ceil(np.log2(scale)))
