"""Vectorisable float32 power function for the CPU kernels.

``pow32(a, e)`` computes ``a ** e`` for ``a >= 0`` (and NaN/Inf) in float32
with a few polynomial evaluations and integer bit manipulation, so that LLVM
can vectorise the loops that call it (libm's ``powf`` is a scalar call).  The
fractional powers ``|x|^p`` and ``|v|^(1/(p-1))`` dominate the arithmetic-bound
kernels; this keeps them several times faster than a libm call per element.

Accuracy (checked in ``tests/test_pow32.py`` against float64 ``**``): the
relative error is about ``6e-8 * max(2, e)`` over the whole normal float32
range (measured: 1.4e-7 at e = 1.3, 9.4e-7 at e = 15.3, 3.7e-6 at e = 64), and
a few units in the last place for subnormal results.  The exponent product
``e * log2(a)`` is formed in float64 so that large ``|log2 a|`` does not
amplify the error.  NaN in gives NaN out; ``0 ** e = 0`` and ``inf ** e = inf``
for ``e > 0``.  Nothing here depends on ``fastmath`` NaN assumptions: the flags
used (``FASTMATH``) keep NaN/Inf semantics.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

#: fastmath flags that keep NaN/Inf semantics (no ``nnan``/``ninf``).
FASTMATH = {"contract", "arcp", "reassoc", "nsz"}

f4 = np.float32
f8 = np.float64


@intrinsic
def _bits_f32(typingctx, x):
    """Reinterpret a float32 as int32 (no conversion)."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def _f32_bits(typingctx, x):
    """Reinterpret the low 32 bits of an integer as float32 (no conversion)."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        if x.bitwidth > 32:
            v = builder.trunc(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())

    return types.float32(x), codegen


@intrinsic
def float_to_bits(typingctx, x):
    """Reinterpret a float32 as int32 or a float64 as int64 (no conversion)."""
    if x not in (types.float32, types.float64):
        return None
    w = 32 if x == types.float32 else 64
    ity = types.int32 if w == 32 else types.int64

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(w))

    return ity(x), codegen


@intrinsic
def float_from_bits(typingctx, x, like):
    """Reinterpret the low bits of integer ``x`` as the float type as wide as the
    integer ``like`` (int32 -> float32, int64 -> float64)."""
    if not isinstance(x, types.Integer) or not isinstance(like, types.Integer) \
            or like.bitwidth not in (32, 64):
        return None
    w = like.bitwidth
    fty = types.float32 if w == 32 else types.float64

    def codegen(context, builder, sig, args):
        v = args[0]
        if x.bitwidth > w:
            v = builder.trunc(v, ir.IntType(w))
        elif x.bitwidth < w:
            v = builder.zext(v, ir.IntType(w))
        return builder.bitcast(v, ir.FloatType() if w == 32 else ir.DoubleType())

    return fty(x, like), codegen


_LOG2E = 1.4426950408889634
_I1, _I23, _I127, _I151 = np.int32(1), np.int32(23), np.int32(127), np.int32(151)
_MANT, _ONE_BITS = np.int32(0x7FFFFF), np.int32(0x3F800000)
_LN2 = f4(0.6931471805599453)
_SQRT2 = f4(1.4142135623730951)
_TINY = f4(1.1754943508222875e-38)  # smallest normal float32
_TWO24 = f4(16777216.0)
_TWOM64 = f4(5.421010862427522e-20)  # 2**-64


@njit(fastmath=FASTMATH, inline="always", cache=True, error_model="numpy")
def log2_f64(a):
    """log2(a) as float64 for a finite float32 ``a > 0`` (subnormals included)."""
    sub = a < _TINY
    a = a * _TWO24 if sub else a
    b = _bits_f32(a)
    e = (b >> _I23) - (_I151 if sub else _I127)
    m = _f32_bits((b & _MANT) | _ONE_BITS)  # mantissa in [1, 2)
    big = m > _SQRT2
    m = m * f4(0.5) if big else m
    e = e + _I1 if big else e
    t = (m - f4(1.0)) / (m + f4(1.0))  # |t| <= 0.1716
    t2 = t * t
    ln = t * (f4(2.0) + t2 * (f4(2.0 / 3.0) + t2 * (f4(2.0 / 5.0)
              + t2 * (f4(2.0 / 7.0) + t2 * f4(2.0 / 9.0)))))
    return f8(e) + f8(ln) * _LOG2E


@njit(fastmath=FASTMATH, inline="always", cache=True, error_model="numpy")
def exp2_f32(y):
    """2**y as float32 for a float64 ``y`` (overflow to inf, gradual underflow)."""
    y = -200.0 if y < -200.0 else (200.0 if y > 200.0 else y)
    k = np.floor(y + 0.5)
    r = f4(y - k) * _LN2  # |r| <= 0.347
    q = f4(1.0) + r * (f4(1.0) + r * (f4(0.5) + r * (f4(1.0 / 6.0) + r * (
        f4(1.0 / 24.0) + r * (f4(1.0 / 120.0) + r * (f4(1.0 / 720.0) + r * f4(1.0 / 5040.0)))))))
    # q * 2**k.  Normal results: add k to q's exponent field (exact, and no
    # float product that reassociation could turn into inf * q).  Overflow:
    # inf.  Results below the normal range: (q * 2**(k+64)) * 2**-64, whose
    # power-of-two factors multiply exactly in any association.
    ki = np.int32(k)
    qb = _bits_f32(q)
    er = ((qb >> _I23) & np.int32(0xFF)) + ki
    if er > 0 and er < 255:
        return _f32_bits(qb + (ki << _I23))
    if er >= 255:
        return f4(np.inf)
    kk = ki + np.int32(64)
    kk = np.int32(-127) if kk < -127 else kk  # -127 gives a +0.0 scale
    return (q * _f32_bits((kk + _I127) << _I23)) * _TWOM64


@njit(fastmath=FASTMATH, inline="always", cache=True, error_model="numpy")
def pow32(a, e):
    """``a ** e`` in float32 for ``a >= 0`` or NaN/Inf, float64 exponent ``e > 0``."""
    ok = (a > f4(0.0)) & (a < np.inf)
    aa = a if ok else f4(1.0)
    v = exp2_f32(e * log2_f64(aa))
    # 0 -> 0, inf -> inf, NaN -> NaN, without relying on fastmath semantics
    return v if ok else a


@njit(fastmath=FASTMATH, inline="always", cache=True, error_model="numpy")
def pow32_scaled(a, log2m, e):
    """``(a / m) ** e`` in float32 with ``log2m = log2(m)`` given in float64.

    Forming the ratio in the log domain avoids rounding ``a / m`` to float32
    before it is raised to a (possibly large) power.  ``a`` follows
    :func:`pow32`'s rules for 0, Inf and NaN.
    """
    ok = (a > f4(0.0)) & (a < np.inf)
    aa = a if ok else f4(1.0)
    v = exp2_f32(e * (log2_f64(aa) - log2m))
    return v if ok else a
