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

Exponents that are a multiple of 1/2 or 1/3 (``e = m + s/den``, ``den`` 1, 2
or 3, ``1 < e < 32``; :func:`rational_parts`) have a cheaper form,
:func:`ratpow32`: a square root or a cube root (Newton's method on ``y^(-1/3)``,
no division), squared or not, times ``y^m`` by repeated squaring.  Such are
LpSGD's dual exponents ``1/(p-1)`` and ``p/(p-1)`` for the usual p: 1.3
(10/3, 13/3), 1.5 (2, 3), 1.4 (5/2, 7/2), 1.25, 1.2, 1.1, 4/3.  Measured on
``y`` in [0, 2) and down to 2**-149 (2026-12-06, AVX-512, one core, other work
on the machine): about 0.9 ns an entry for thirds and 0.2 ns for halves and
integers, against pow32's 1.6-1.8 ns; relative error 2.07e-7 at e = 10/3
(pow32 2.24e-7), 2.68e-7 at 13/3 (3.23e-7), 1.66e-7 at 5/2 (1.79e-7),
4.8e-7 at 10 (5.7e-7), 1.5e-6 at 31.7 (2.2e-6): at most pow32's.
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


#: CPUs (LLVM's names) whose 512-bit instructions lower the core's clock
#: enough to slow what runs after them: Skylake-SP and its refreshes, Xeon Phi.
#: :func:`prefer_wide_vectors` keeps LLVM's 256-bit default there.
NARROW_CPUS = frozenset({"skylake-avx512", "cascadelake", "cooperlake", "knl", "knm"})


def wide_vectors_wanted(cpu=None):
    """Whether :func:`prefer_wide_vectors` asks for 512-bit vectors when
    compiling for ``cpu`` (default: numba's target, ``NUMBA_CPU_NAME`` or the
    host's; numba's cache is kept per CPU name, so a cached kernel was made
    by the same rule)."""
    if cpu is None:
        import llvmlite.binding as ll
        from numba.core import config
        cpu = config.CPU_NAME or ll.get_host_cpu_name()
    return cpu not in NARROW_CPUS


@intrinsic
def prefer_wide_vectors(typingctx):
    """Mark the function being compiled (the one this is written in, once
    numba has inlined it) with LLVM's ``"prefer-vector-width"="512"``.

    On AVX-512 CPUs LLVM's default tuning vectorises with 256-bit registers
    (on Skylake-SP, AVX-512 code lowers the core's clock: those CPUs keep the
    default, :data:`NARROW_CPUS`); with this attribute the function's loops
    use 512-bit ones.  An elementwise loop (no reduction) gives identical
    results, the same operations on each entry, more entries at a time; a
    sum adds in another order (as it does on CPUs of other widths).
    Without AVX-512 it changes nothing.  Numba inlines functions marked
    ``inline="always"`` into this one, which then widens them too."""
    def codegen(context, builder, sig, args):
        if wide_vectors_wanted():
            # a string attribute: llvmlite's FunctionAttributes knows only the
            # keyword ones, and writes its items out as they are
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        return context.get_dummy_value()

    return types.none(), codegen


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
    # inf.  Results below the normal range: (q * 2**(n+64)) * 2**-64, in
    # that order (products without ``reassoc``): reassociated as
    # q * (2**(n+64) * 2**-64), the scale underflows to 0, which some
    # compilations did and others did not (2026-12-06: a loop 512 bits wide
    # loaded from numba's cache gave 0 where the same code compiled in the
    # process gave 1e-45).
    qb = _bits_f32(q)
    er = I4(I4(I4(qb >> _I23) & I4(0xFF)) + n)
    normal = _f32_bits(I4(qb + I4(n << _I23)))
    kk = I4(n + I4(64))
    kk = I4(-127) if kk < I4(-127) else kk  # -127 gives a +0.0 scale
    small = _mul32(_mul32(q, _f32_bits(I4(I4(kk + _I127) << _I23))), _TWOM64)
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


# ---------------------------------------------------------------------------
# exponents m + s/den (den 1, 2 or 3): roots and products
_TWO96, _TWOM40, _TWOM32 = f4(2.0 ** 96), f4(2.0 ** -40), f4(2.0 ** -32)
_ICBRT_MAGIC = I4(0x54A2FA8C)  # bits of ~y^(-1/3) from y's bits (3.5 % off)
_THIRD = f4(1.0 / 3.0)
_FOUR_THIRDS = f4(4.0 / 3.0)


@njit(**_JIT)
def cbrt32(y):
    """``y ** (1/3)`` in float32 for a normal float32 ``y > 0``: a guess of
    ``r = y^(-1/3)`` from y's bits, two Newton steps on it (no division:
    ``r (4/3 - y r^3 / 3)``), ``c = y r^2``, and one Newton step on ``c``
    whose residual ``y - c^3`` is formed nearly exactly with fused
    multiply-adds (measured: within 0.6 units in the last place)."""
    r = _f32_bits(I4(_ICBRT_MAGIC - I4(f4(_bits_f32(y)) * _THIRD)))
    y3 = y * _THIRD
    # relative error 3.5e-2, 2.5e-3, 1.2e-5 (written out: a loop in a function
    # numba inlines makes its SSA check warn)
    r = r * _fma32(-y3, r * r * r, _FOUR_THIRDS)
    r = r * _fma32(-y3, r * r * r, _FOUR_THIRDS)
    r2 = r * r
    c = y * r2
    # c + (y - c^3) / (3 c^2), with y - c^3 to about 2**-48: c c = c2 + e2
    # exactly (an FMA), so y - c^3 = (y - c2 c) - e2 c
    c2 = _mul32(c, c)  # (a plain product: fastmath would fold e2 to 0)
    e2 = _fma32(c, c, -c2)
    res = _fma32(-e2, c, _fma32(-c2, c, y))
    return _fma32(res, r2 * _THIRD, c)


@njit(**_JIT)
def ratpow32(y, m, s, den):
    """``y ** (m + s/den)`` in float32 for ``0 <= y < 2`` (finite), ``den``
    1, 2 or 3, ``0 <= s < den``, ``0 <= m < 32`` and an exponent above 1
    (:func:`rational_parts`): the root (``sqrt``, :func:`cbrt32`, or for
    ``s/den = 2/3`` the cube root of ``y^2``), times ``y^m`` by repeated
    squaring (selects on m's bits: the calling loop stays vectorised).  ``y`` below the normal range gives 0
    (its power is below ``2**-126 * y``)."""
    ok = y >= _TINY
    yy = y if ok else f4(1.0)
    # y^(2/3) as cbrt(y^2), not cbrt(y)^2 (whose rounding doubles): y below
    # 2**-40 is first scaled by 2**96 (exact), and the root back by 2**-64
    lo = yy < _TWOM40
    ys = yy * _TWO96 if lo else yy
    two = (den == 3) & (s == 2)
    r = np.sqrt(yy) if den == 2 else cbrt32(ys * ys if two else ys)
    r = r * (_TWOM64 if two else _TWOM32) if (den == 3) & lo else r
    out = f4(1.0) if s == 0 else r
    b = yy  # times yy^m, m's bits from the lowest (written out, see cbrt32)
    out = out * b if m & 1 else out
    b = b * b
    out = out * b if m & 2 else out
    b = b * b
    out = out * b if m & 4 else out
    b = b * b
    out = out * b if m & 8 else out
    b = b * b
    out = out * b if m & 16 else out
    return out if ok else f4(0.0)


@njit(cache=True)
def rational_parts(e):
    """``(m, s, den)`` with ``e = m + s/den`` (to 1e-12 relative; den 1, 2
    or 3, ``0 <= s < den``) for ``1 < e < 32``, else ``(0, 0, 0)``: whether
    :func:`ratpow32` can take the power.  (1/(1.3 - 1) in float64 is 10/3
    to 1e-16; the difference moves a float32 power by less than 1e-11.)"""
    if not 1.0 < e < 32.0:
        return 0, 0, 0
    for den in (1, 2, 3):
        t = e * den
        k = np.floor(t + 0.5)
        if abs(t - k) <= 1e-12 * t:
            kk = int(k)
            return kk // den, kk % den, den
    return 0, 0, 0
