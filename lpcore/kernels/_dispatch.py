"""Serial/parallel selection and dtype-specialised scalar helpers."""
from __future__ import annotations

import math
import sys
import warnings

import numpy as np
from numba import njit, prange, types
from numba.core.errors import NumbaIRAssumptionWarning
from numba.extending import overload

from .._threads import env_number, parallel_ok
from ._pow32 import (FASTMATH, log2_parts, pow32, pow32_scaled, prefer_wide_vectors,
                     rational_parts, ratpow32)

# Numba's pedantic IR check reports a scoping assumption while inlining the
# float32 power overloads several times into one function (compile time only;
# the compiled code is checked against NumPy transcriptions in the tests).
# Numba files the warning under the file of a kernel involved (lpsgd, norm,
# this one, ...): any module of lpcore's CPU kernels.
warnings.filterwarnings("ignore", category=NumbaIRAssumptionWarning,
                        module=r".*lpcore[/\\.]kernels[/\\.]\w+$")

#: Inputs with fewer elements than this run the serial kernels, where waking
#: the thread pool costs more than the work.  ``LPCORE_PARALLEL_MIN_SIZE``
#: sets it (at import); ``python -m benchmarks --scaling`` shows the per-size cost.
PAR_MIN_SIZE = env_number("LPCORE_PARALLEL_MIN_SIZE", 1 << 15, int)

#: Elements per task along a group.  Fits L1/L2 so a task's second pass over
#: its chunk (after the max pass) hits cache.
CHUNK = 16384


def use_parallel(size, ntasks, min_size=None):
    """Whether a kernel of ``size`` elements in ``ntasks`` tasks runs in parallel:
    big enough, more than one task, and not in a child forked from a process
    running an OpenMP pool (see ``lpcore/_threads.py``)."""
    return size >= (PAR_MIN_SIZE if min_size is None else min_size) and ntasks > 1 \
        and parallel_ok()


_DRIVER = """
def {name}(ntasks, args):
    for t in {loop}(ntasks):
        task(np.int64(t), *args)
"""


class TaskKernel:
    """A task function ``task(t, *args)`` (one row, or one chunk of a row) run
    over ``t = 0 .. ntasks - 1`` by a ``parallel=True`` driver or a serial one,
    chosen by :func:`use_parallel` (the one size rule; ``min_size`` for tasks
    that cost much more than a pass per element)::

        _scale = TaskKernel(_scale_task)
        _scale(ntasks, x.size, x, nrm, out, nch)   # task(t, x, nrm, out, nch) for every t

    The two drivers are made here for every task, not written by hand.  They
    are compiled from source attributed to the task's own module (so that
    numba's on-disk cache, keyed by that file, is reused by later processes
    and invalidated when the module changes: a driver closing over the task
    instead is a new function to the cache in every process) and call the
    task with an int64 index in both (one compiled signature).
    """

    def __init__(self, task, min_size=None):
        mod = sys.modules[task.py_func.__module__]
        self.min_size = min_size
        self.par, self.ser = (self._driver(task, mod, kind, loop, opts) for kind, loop, opts in
                              (("par", "prange", {"parallel": True}), ("ser", "range", {})))

    @staticmethod
    def _driver(task, mod, kind, loop, opts):
        name = f"{task.py_func.__name__}_{kind}"
        ns = {"task": task, "prange": prange, "np": np}
        exec(compile(_DRIVER.format(name=name, loop=loop), mod.__file__, "exec"), ns)
        f = ns[name]
        f.__module__, f.__qualname__ = mod.__name__, name
        return njit(cache=True, error_model="numpy", **opts)(f)

    def __call__(self, ntasks, size, *args):
        """Run the task for ``t < ntasks`` over data of ``size`` elements."""
        par = use_parallel(size, ntasks, self.min_size)
        (self.par if par else self.ser)(ntasks, args)


#: The smallest normal float64.  A float64 group whose maximum is below it has a
#: reciprocal beyond float64's range, so such a group is scaled as
#: ``lift(|x|) / lift(max)``: both lifted by 2**1074 (exact for subnormals).
TINY = 2.2250738585072014e-308


def lift(a, tiny):  # pragma: no cover - replaced in jitted code
    """``a * 2**1074`` (exact) when ``tiny``, else ``a``; float32 is never tiny."""
    return math.ldexp(a, 1074) if tiny else a


@overload(lift, jit_options={"fastmath": FASTMATH, "error_model": "numpy"})
def _ol_lift(a, tiny):
    if a == types.float32:
        return lambda a, tiny: a

    def impl(a, tiny):
        # ldexp, not a multiplication: fastmath may fold two scale factors
        # into one that overflows
        if tiny:
            return math.ldexp(a, 1074)
        return a
    return impl


def first_flags(r):
    """(first index of a non-finite value, first index of a zero) of a 1-D
    per-group result, ``len(r)`` where there is none: the CPU side of the
    kernels' error contract (the CUDA kernels find the same two on the device)."""
    G = r.size
    bad = np.flatnonzero(~np.isfinite(r))
    zero = np.flatnonzero(r == 0)
    return (int(bad[0]) if bad.size else G), (int(zero[0]) if zero.size else G)


def n_chunks(n):
    return max(1, -(-n // CHUNK))


def spow(a, e):  # pragma: no cover - replaced by the overload in jitted code
    """``a ** e`` for ``a >= 0`` as float64, with the float32 fast path."""
    return np.float64(a) ** e


@overload(spow, inline="always", jit_options={"fastmath": FASTMATH, "error_model": "numpy"})
def _ol_spow(a, e):
    if a == types.float32:
        return lambda a, e: np.float64(pow32(a, e))
    return lambda a, e: a ** e


def log2_for(m, like):  # pragma: no cover - replaced in jitted code
    """log2 of a group maximum ``m`` as :func:`scaled_pow` needs it for elements
    like ``like`` (a float32 scalar or array: the float32 power's own
    ``log2_parts`` of ``float32(m)``, so that the maximum element's log-ratio
    is exactly 0 and its power exactly 1 however large the exponent; else
    ``math.log2``)."""
    return math.log2(m)


@overload(log2_for, inline="always", jit_options={"fastmath": FASTMATH, "error_model": "numpy"})
def _ol_log2_for(m, like):
    f32 = like == types.float32 or (isinstance(like, types.Array) and like.dtype == types.float32)
    if f32:
        return lambda m, like: log2_parts(np.float32(m))
    return lambda m, like: math.log2(m)


def scaled_pow(a, inv, log2m, e):  # pragma: no cover - replaced in jitted code
    """``(a / m) ** e`` as float64 given ``inv = 1/m`` and ``log2m = log2 m``."""
    return (np.float64(a) * inv) ** e


@overload(scaled_pow, inline="always", jit_options={"fastmath": FASTMATH, "error_model": "numpy"})
def _ol_scaled_pow(a, inv, log2m, e):
    if a == types.float32:
        return lambda a, inv, log2m, e: np.float64(pow32_scaled(a, log2m, e))
    return lambda a, inv, log2m, e: (a * inv) ** e


def scaled_pow_same(a, inv, log2m, e):  # pragma: no cover - replaced in jitted code
    """:func:`scaled_pow` in ``a``'s own dtype (float32 in, float32 out: a loop
    of float32 data that uses it stays free of float64, at full vector width)."""
    return (np.float64(a) * inv) ** e


@overload(scaled_pow_same, inline="always",
          jit_options={"fastmath": FASTMATH, "error_model": "numpy"})
def _ol_scaled_pow_same(a, inv, log2m, e):
    if a == types.float32:
        return lambda a, inv, log2m, e: pow32_scaled(a, log2m, e)
    return lambda a, inv, log2m, e: (a * inv) ** e


#: block of float32 powers summed by :func:`block_powsum` (in L1 with its input)
POW_BLOCK = 512


@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def scaled_powers(src, dst, inv, log2m, e, signed):
    """``dst[j] = (|src[j]| / m) ** e`` (:func:`scaled_pow_same`), with
    ``signed`` times the sign of ``src[j]``, for 1-D ``src`` and ``dst`` of
    one dtype, apart (in place, LLVM's runtime overlap check picks the
    loop's scalar version).  Not inlined where it is called: its loops are
    compiled once per dtype, and elementwise, so they take AVX-512's full
    width (:func:`._pow32.prefer_wide_vectors`) with results identical to
    the narrower loops'."""
    prefer_wide_vectors()
    if signed:
        for j in range(src.size):
            x = src[j]
            r = scaled_pow_same(abs(x), inv, log2m, e)
            dst[j] = -r if x < 0 else r
    else:
        for j in range(src.size):
            dst[j] = scaled_pow_same(abs(src[j]), inv, log2m, e)


@njit(fastmath=FASTMATH, inline="always", cache=True, error_model="numpy")
def block_powsum(part, buf, inv, log2m, e):
    """``sum (|part| / m) ** e`` in float64 for a block of at most
    ``buf.size`` entries: the powers into ``buf`` (:func:`scaled_powers`;
    for float32 a float32 loop, twice as wide as one that also sums in
    float64), then their sum.  ``buf`` apart from ``part``."""
    scaled_powers(part, buf, inv, log2m, e, False)
    s = 0.0
    for j in range(part.size):
        s += np.float64(buf[j])
    return s


# ---------------------------------------------------------------------------
# Powers with exponents m + s/den (den 1, 2, 3) of float32 data: roots and
# products (_pow32.ratpow32), on values scaled by a power of two (exact)
def rational_ok(like):  # pragma: no cover - replaced in jitted code
    """Whether data like ``like`` (an array) take :func:`rat_pow_same`:
    float32 only (a compile-time constant)."""
    return like.dtype == np.float32


@overload(rational_ok, inline="always", jit_options={"fastmath": FASTMATH, "error_model": "numpy"})
def _ol_rational_ok(like):
    f32 = like.dtype == types.float32
    return lambda like: f32


def cast_like(x, like):  # pragma: no cover - replaced in jitted code
    """``x`` in the dtype of the array ``like``."""
    return like.dtype.type(x)


@overload(cast_like, inline="always", jit_options={"fastmath": FASTMATH, "error_model": "numpy"})
def _ol_cast_like(x, like):
    if like.dtype == types.float32:
        return lambda x, like: np.float32(x)
    return lambda x, like: np.float64(x)


def rat_pow_same(y, m, s, den):  # pragma: no cover - replaced in jitted code
    """``y ** (m + s/den)`` in y's dtype (float32: :func:`._pow32.ratpow32`)."""
    return y ** (m + s / den)


@overload(rat_pow_same, inline="always", jit_options={"fastmath": FASTMATH, "error_model": "numpy"})
def _ol_rat_pow_same(y, m, s, den):
    if y == types.float32:
        return lambda y, m, s, den: ratpow32(y, m, s, den)
    return lambda y, m, s, den: y ** (m + s / den)  # (not taken: rational_ok)


@njit(fastmath=FASTMATH, inline="always", cache=True, error_model="numpy")
def pow2_scale(mx, e):
    """For a group maximum ``mx > 0``: ``(k, 2**-k, (2**k / mx) ** e)`` with
    ``k = floor(log2 mx)``.  ``|x| * 2**-k`` is exact (a power of two) and
    below 2, and ``(|x| / mx) ** e = (|x| 2**-k) ** e * (2**k / mx) ** e``:
    no rounded ratio is raised to the power."""
    f, ex = math.frexp(mx)  # mx = f 2**ex, 1/2 <= f < 1
    k = ex - 1
    return k, 2.0 ** -k, (0.5 / f) ** e


@njit(fastmath=FASTMATH, inline="always", cache=True, error_model="numpy")
def rational_scale(e, mx, like):
    """Whether a group of maximum ``mx > 0`` in data like the array ``like``
    takes the power ``e`` as roots and products, and how: ``(use, m, s, den,
    sc, c)`` with ``e = m + s/den`` (:func:`._pow32.rational_parts`), ``sc``
    the power of two (like's dtype) that scales the entries below 2 and
    ``c = (2**k / mx) ** e`` the factor of their powers
    (:func:`pow2_scale`).  ``use`` is False for float64 data, for other
    exponents and for a maximum beyond 2**+-100."""
    m, s, den = rational_parts(e)
    k, sc, c = pow2_scale(mx, e)
    use = rational_ok(like) and den > 0 and -100 <= k <= 100
    return use, m, s, den, cast_like(sc, like), c


@njit(fastmath=FASTMATH, inline="always", cache=True, error_model="numpy")
def _rat_loop(src, dst, sc, m, s, den):
    for j in range(src.size):
        x = src[j]
        r = rat_pow_same(abs(x) * sc, m, s, den)
        dst[j] = -r if x < 0 else r


@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def rat_powers(src, dst, sc, m, s, den):
    """``dst[j] = sign(src[j]) (|src[j]| sc) ** (m + s/den)`` for 1-D float32
    ``src`` and ``dst`` apart from it (in place, LLVM's runtime overlap check
    picks the loop's scalar version), ``sc`` a power of two of their dtype
    (:func:`pow2_scale`).  One loop per ``den``, with ``den``
    (and for 1 and 2, ``s``) a constant in it: a loop given them as
    variables computed every root and selected, and took as long for an
    integer exponent as for a third.  Not inlined where it is called (a
    call per row or block): its three loops are compiled once per dtype,
    not in every LpSGD driver (inlined, they added 10-20 s to the first
    float32 step's compilation)."""
    prefer_wide_vectors()  # elementwise: the same results, twice as wide with AVX-512
    if den == 1:
        _rat_loop(src, dst, sc, m, 0, 1)
    elif den == 2:
        _rat_loop(src, dst, sc, m, 1, 2)
    else:
        _rat_loop(src, dst, sc, m, s, 3)


@njit(fastmath=FASTMATH, inline="always", cache=True, error_model="numpy")
def block_ratsum(part, buf, sc, m, s, den):
    """``sum (|part| sc) ** (m + s/den)`` in float64 for a block of float32
    entries (:func:`rat_powers` into ``buf``, then their sum).  ``buf`` apart
    from ``part``: in place, the called loop's overlap check picks its
    scalar version (measured 13 ns an entry instead of 0.9)."""
    rat_powers(part, buf, sc, m, s, den)
    t = 0.0
    for j in range(part.size):
        t += np.float64(buf[j])
    return t


@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def scaled_powsum(seg, inv, log2m, e, tiny):
    """``sum (|seg| / m) ** e`` in float64 (``inv = 1/lift(m)``, ``log2m =
    log2_for(m, seg)``).  Float32 segments of a few hundred entries or more
    take their powers in blocks (:func:`block_powsum`)."""
    s = 0.0
    if seg.itemsize == 4 and seg.size >= POW_BLOCK // 2:
        buf = np.empty(POW_BLOCK, seg.dtype)
        for j0 in range(0, seg.size, POW_BLOCK):
            # the piece indexed from 0 by the loops: no wraparound test
            s += block_powsum(seg[j0:j0 + POW_BLOCK], buf, inv, log2m, e)
        return s
    for j in range(seg.size):
        s += scaled_pow(lift(abs(seg[j]), tiny), inv, log2m, e)
    return s


def scaled_pow_like(x, arr, inv, log2m, e):  # pragma: no cover - replaced in jitted code
    """:func:`scaled_pow` of a float64 ``x`` computed in ``arr``'s precision
    (float32 arrays take the vectorised float32 power)."""
    return (np.float64(x) * inv) ** e


@overload(scaled_pow_like, inline="always", jit_options={"fastmath": FASTMATH, "error_model": "numpy"})
def _ol_scaled_pow_like(x, arr, inv, log2m, e):
    if arr.dtype == types.float32:
        return lambda x, arr, inv, log2m, e: np.float64(pow32_scaled(np.float32(x), log2m, e))
    return lambda x, arr, inv, log2m, e: (x * inv) ** e
