"""SimplifyPower: ``power(x, c)`` with a constant quarter-integer ``c`` -> multiplies and square roots.

TVM lowers ``power`` to ``pow`` from libm, one scalar call per element that LLVM cannot
vectorize: ONNX ``LRN`` (Inception v1's two local response normalizations,
``x / (bias + alpha / size * sum(x^2))^0.75``) spent 4.5 ms of a 21 ms run in ``pow``. A
square root is one vector instruction (``vsqrtps``), so exponents that are multiples of 1/4
are rewritten:

    |c| = k + f, k in 0..4, f in {0, 1/4, 1/2, 3/4}:
    x^k              -> x * ... * x  (k factors)
    x^(1/2)          -> sqrt(x)
    x^(1/4)          -> sqrt(sqrt(x))
    x^(3/4)          -> sqrt(x) * sqrt(sqrt(x))
    power(x, c)      -> the product of those;  c < 0: 1 / (product), c = -1/2: rsqrt(x)

Guards: ``c`` a scalar float constant (or a constant tensor of one repeated value) with
``4c`` an integer and ``0 < |c| <= 4 3/4``, ``x`` float32/float64; anything else stays ``pow``.
Numerics: within a few ulp of ``pow`` for ``x >= 0`` (each square root is correctly rounded,
one rounding per multiply); ``x < 0`` with a fractional exponent is NaN either way, and an
integer exponent multiplies the sign exactly as ``pow`` does. ``x ** 0`` is left alone
(``pow(x, 0)`` is 1 even for NaN).
"""

from __future__ import annotations

import collections

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .quantize_common import const_value, dtype_of, rewrite_functions, static_shape

_POWER = tvm.ir.Op.get("relax.power")
_FLOATS = ("float32", "float64")
MAX_EXPONENT = 4.75


def quarter_exponent(value) -> float | None:
    """The exponent if ``value`` is a constant holding one float with 4 * it an integer in
    ``(0, 4 * MAX_EXPONENT]`` in magnitude, else None."""
    data = const_value(value)
    if data is None or data.size == 0 or not np.all(data == data.reshape(-1)[0]):
        return None
    c = float(data.reshape(-1)[0])
    if not np.isfinite(c) or c == 0 or abs(c) > MAX_EXPONENT or 4 * c != int(4 * c):
        return None
    return c


@mutator
class _Rewriter(PyExprMutator):  # pylint: disable=abstract-method
    def __init__(self, mod):
        super().__init__(mod)
        self.rewrites: collections.Counter = collections.Counter()

    def visit_call_(self, call):  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        if call.op != _POWER:
            return call
        x, exponent = call.args
        c = quarter_exponent(exponent)
        dtype = dtype_of(call)
        if c is None or dtype not in _FLOATS or dtype_of(x) != dtype:
            return call
        if static_shape(exponent) and (static_shape(x) is None or static_shape(x) != static_shape(call)):
            return call  # the exponent tensor broadcasts x to a bigger shape: keep pow
        self.rewrites["power"] += 1
        if c == -0.5:
            return relax.op.rsqrt(x)
        k, quarters = divmod(int(round(4 * abs(c))), 4)
        factors = [x] * k
        if quarters == 2:
            factors.append(relax.op.sqrt(x))
        elif quarters:
            root = self.builder_.emit(relax.op.sqrt(x))
            factors += [root, relax.op.sqrt(root)] if quarters == 3 else [relax.op.sqrt(root)]
        result = self._product(factors)
        if c < 0:
            return relax.op.divide(relax.const(1.0, dtype), self._emitted(result))
        return result

    def _emitted(self, expr):
        return expr if isinstance(expr, relax.Var) else self.builder_.emit(expr)

    def _product(self, factors):
        """``f1 * f2 * ...`` left to right; the last multiply is returned unbound."""
        result = factors[0]
        for factor in factors[1:]:
            result = relax.op.multiply(self._emitted(result), self._emitted(factor))
        return result


@tvm.transform.module_pass(opt_level=0, name="SimplifyPower")
class SimplifyPower:
    """Rewrite ``power`` by constant multiples of 1/4 into multiplies and square roots.

    ``rewrites["power"]`` (and ``num_rewrites``) counts the rewritten calls.
    """

    def __init__(self):
        self.rewrites: collections.Counter = collections.Counter()
        self.num_rewrites = 0

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        rewriter = _Rewriter(mod)
        out = rewrite_functions(mod, rewriter)
        self.rewrites = rewriter.rewrites
        self.num_rewrites = rewriter.rewrites["power"]
        return out
