"""Vectorisable float32 power function for the CPU kernels.

``pow32(a, e)`` computes ``a ** e`` for ``a >= 0`` (and NaN/Inf) in float32
with a few polynomial evaluations and integer bit manipulation, so that LLVM
can vectorise the loops that call it (libm's ``powf`` is a scalar call).  The
fractional powers ``|x|^p`` and ``|v|^(1/(p-1))`` dominate the arithmetic-bound
kernels; this keeps them several times faster than a libm call per element.

Everything is float32 and int32 (no float64 or int64 value inside), so a loop
of float32 data calling it vectorises at full float32 width: 8 lanes with
AVX2, not the 4 of a loop that mixes in float64.  ``log2 a`` is kept as an
exact integer part and a float32 fraction in [-1/2, 1/2] (:func:`log2_parts`),
and ``e`` as a 12-bit head and a tail (:func:`split_e`): the head times the
integer part is exact, and the one rounding that matters (head times
fraction) is recovered exactly with a fused multiply-add, so large
``|log2 a|`` does not amplify the error.

Accuracy (checked in ``tests/test_pow32.py`` against float64 ``**``): the
relative error is about ``6e-8 * max(2, e)`` over the whole normal float32
range (measured, 2026-12-06: 1.45e-7 at e = 1.3, 9.6e-7 at e = 15.3, 3.3e-6 at
e = 64), and a few units in the last place for subnormal results.  NaN in
gives NaN out; ``0 ** e = 0`` and ``inf ** e = inf`` for ``e > 0``.  Nothing
here depends on ``fastmath`` NaN assumptions: the flags used (``FASTMATH``)
keep NaN/Inf semantics.
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


@intrinsic
def _fma32(typingctx, a, b, c):
    """``a * b + c`` rounded once (llvm.fma: a hardware FMA where there is one)."""
    if not (a == b == c == types.float32):
        return None

    def codegen(context, builder, sig, args):
        return builder.fma(*args)

    return types.float32(types.float32, types.float32, types.float32), codegen


@intrinsic
def _div32(typingctx, a, b):
    """``a / b`` correctly rounded, with ``nsz`` as its only fast-math flag (numba's
    fastmath pass adds its flags to float operations that have none): ``arcp``
    may otherwise turn a division into an approximate reciprocal in
    vectorised code and not in scalar code."""
    if not (a == b == types.float32):
        return None

    def codegen(context, builder, sig, args):
        return builder.fdiv(*args, flags=("nsz",))

    return types.float32(types.float32, types.float32), codegen


@intrinsic
def _mul32(typingctx, a, b):
    """``a * b`` rounded, with ``nsz`` as its only fast-math flag (see
    :func:`_div32`): never contracted with a later addition into a fused
    multiply-add (which would skip this rounding in some uses and not in
    others)."""
    if not (a == b == types.float32):
        return None

    def codegen(context, builder, sig, args):
        return builder.fmul(*args, flags=("nsz",))

    return types.float32(types.float32, types.float32), codegen


I4 = np.int32
_LOG2E = 1.4426950408889634
_I1, _I23, _I127, _I151 = I4(1), I4(23), I4(127), I4(151)
_MANT, _ONE_BITS = I4(0x7FFFFF), I4(0x3F800000)
_LN2 = f4(0.6931471805599453)
_SQRT2 = f4(1.4142135623730951)
_TINY = f4(1.1754943508222875e-38)  # smallest normal float32
_TWO24 = f4(16777216.0)
_TWOM64 = f4(5.421010862427522e-20)  # 2**-64
_JIT = dict(fastmath=FASTMATH, inline="always", cache=True, error_model="numpy")
# log2(m) = 2 atanh(t) / ln 2 = t (C1 + C3 t^2 + ... + C9 t^8), t = (m-1)/(m+1)
_C1, _C3, _C5, _C7, _C9 = (f4(2.0 / k * _LOG2E) for k in (1, 3, 5, 7, 9))

# (numba types int32 arithmetic as int64: every integer step below is cast back
# to int32 so that LLVM keeps 32-bit lanes)


@njit(**_JIT)
def log2_parts(a):
    """``log2(a) = k + f`` for a finite float32 ``a > 0`` (subnormals included):
    ``(k, f)``, k an int32, f a float32 in [-1/2, 1/2]."""
    sub = a < _TINY
    a = a * _TWO24 if sub else a
    b = _bits_f32(a)
    k = I4(I4(b >> _I23) - (_I151 if sub else _I127))
    m = _f32_bits(I4(I4(b & _MANT) | _ONE_BITS))  # mantissa in [1, 2)
    big = m > _SQRT2
    m = m * f4(0.5) if big else m
    k = I4(k + _I1) if big else k
    t = _div32(m - f4(1.0), m + f4(1.0))  # |t| <= 0.1716
    t2 = t * t
    # an exact division, Horner with explicit fused multiply-adds and a final
    # product that is never fused with the caller's subtraction: the same
    # roundings wherever it is inlined (fastmath's reciprocal and contraction
    # would be free to differ), so log2_parts(m) outside a loop and inside it
    # agree exactly and (m/m) ** e is exactly 1 even at e = 1e13
    c = _fma32(t2, _C9, _C7)
    c = _fma32(t2, c, _C5)
    c = _fma32(t2, c, _C3)
    c = _fma32(t2, c, _C1)
    return k, _mul32(t, c)


@njit(**_JIT)
def split_e(e):
    """A float64 exponent ``e > 0`` as ``(head, tail)`` float32: the head keeps
    12 significant bits (times an integer below 2**12 it is exact), the tail
    ``e - head`` rounded."""
    e = 2.0 ** 100 if e > 2.0 ** 100 else e  # beyond, every power but 1's is 0 or inf
    hi = _f32_bits(I4(_bits_f32(f4(e)) & I4(-4096)))
    return hi, f4(e - f8(hi))


@njit(**_JIT)
def exp2_parts(n, r):
    """``2 ** (n + r)`` as float32 for an int32 ``|n| <= 300`` and a float32
    ``|r| <= ~0.5`` (overflow to inf, gradual underflow)."""
    x = r * _LN2  # |x| <= 0.35
    q = f4(1.0) + x * (f4(1.0) + x * (f4(0.5) + x * (f4(1.0 / 6.0) + x * (
        f4(1.0 / 24.0) + x * (f4(1.0 / 120.0) + x * (f4(1.0 / 720.0) + x * f4(1.0 / 5040.0)))))))
    # q * 2**n.  Normal results: add n to q's exponent field (exact, and no
    # float product that reassociation could turn into inf * q).  Overflow:
    # inf.  Results below the normal range: (q * 2**(n+64)) * 2**-64, whose
    # power-of-two factors multiply exactly in any association.
    qb = _bits_f32(q)
    er = I4(I4(I4(qb >> _I23) & I4(0xFF)) + n)
    normal = _f32_bits(I4(qb + I4(n << _I23)))
    kk = I4(n + I4(64))
    kk = I4(-127) if kk < I4(-127) else kk  # -127 gives a +0.0 scale
    small = (q * _f32_bits(I4(I4(kk + _I127) << _I23))) * _TWOM64
    return normal if (er > 0) & (er < 255) else (f4(np.inf) if er >= 255 else small)


@njit(**_JIT)
def _exp2_mul(dk, df, hi, lo):
    """``2 ** ((hi + lo) * (dk + df))`` for an int32 ``dk`` and a float32
    ``|df| <= 1``, the product's head kept exact in float32 (measured
    accuracy: the module docstring).  Integer parts are split off three times
    (of the exact head product, of the sum with the head times the fraction,
    of the rest) and added in float32, where integers that
    cancel do so exactly; the sum is clamped before it becomes an int32, so
    a huge exponent gives 0 or inf, never a wrapped integer."""
    kf = f4(dk)
    a = hi * kf  # exact: 12 bits times at most 9
    n = f4(np.rint(a))
    ar = a - n  # exact, |ar| <= 1/2
    pr = _mul32(hi, df)
    pe = _fma32(hi, df, -pr)  # hi * df = pr + pe exactly
    s = ar + pr  # (the rounding of this sum is not recovered: fastmath folds a two-sum to 0)
    t = pe + lo * (kf + df)
    n2 = f4(np.rint(s))
    u = (s - n2) + t  # |u| <= ~1 unless e is huge
    n3 = f4(np.rint(u))
    nn = (n + n2) + n3
    nn = f4(-300.0) if nn < f4(-300.0) else (f4(300.0) if nn > f4(300.0) else nn)
    return exp2_parts(I4(nn), u - n3)


@njit(**_JIT)
def pow32(a, e):
    """``a ** e`` in float32 for ``a >= 0`` or NaN/Inf, float64 exponent ``e > 0``."""
    ok = (a > f4(0.0)) & (a < np.inf)
    k, f = log2_parts(a if ok else f4(1.0))
    hi, lo = split_e(e)
    v = _exp2_mul(k, f, hi, lo)
    # 0 -> 0, inf -> inf, NaN -> NaN, without relying on fastmath semantics
    return v if ok else a


@njit(**_JIT)
def pow32_scaled(a, m_parts, e):
    """``(a / m) ** e`` in float32 for ``0 <= a <= m`` (``m`` the group's
    maximum) given ``m_parts = log2_parts(m)``.

    Forming the ratio in the log domain avoids rounding ``a / m`` to float32
    before it is raised to a (possibly large) power, and gives exactly 1 at
    ``a == m``.  The result is at most 1: the float32 logarithms of two
    neighbouring floats can be out of order by a rounding, which a huge ``e``
    would turn into a power far above 1.  ``a`` follows :func:`pow32`'s
    rules for 0, Inf and NaN.
    """
    ok = (a > f4(0.0)) & (a < np.inf)
    k, f = log2_parts(a if ok else f4(1.0))
    hi, lo = split_e(e)
    v = _exp2_mul(I4(k - m_parts[0]), f - m_parts[1], hi, lo)
    v = f4(1.0) if v > f4(1.0) else v
    return v if ok else a
