"""Euclidean projection of each row onto the Lp ball of radius r.

Every row is pre-scaled by its max |y| (``m``, computed and validated by the
caller: ``a = |y| / m``, ``rs = r / m``) and solved in float64, without
fastmath (a subnormal ``m`` has no finite reciprocal):

* ``||y||_p <= r``: unchanged.   * p = 2: radial scaling.   * p = inf: clipping.
* p = 1: sort-based soft thresholding (exact, O(n log n)), written with the
  offsets from the group maximum so that far points keep r's precision.
* 1 < p < inf: ``x_i = sign(y_i) r t_i`` with ``t_i + lam p t_i^(p-1) = b_i``,
  ``b = |y| / r`` and ``sum t_i^p = 1`` (the problem in units of the radius:
  every ``t_i <= 1``, so no power overflows or underflows to a wrong answer
  for any p).  The inner equation is solved by Newton's method in a variable
  where it is convex and increasing (``s = t^(p-1)`` for p < 2, ``t`` for
  p >= 2) started right of the root, so the iterates decrease monotonically
  to it.  The outer equation in ``lam`` (decreasing) is solved by Newton's
  method safeguarded by a bracket ``(0, ||b||_q / p]``, falling back to
  bisection when a step leaves the bracket.  When ``r / m < 2**-60`` the
  point is so far outside that the projection equals the support point
  ``(a / ||a||_q)^(q-1)`` of the unit ball to double precision.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit


from ._dispatch import TaskKernel
from .norm import KIND_INF, KIND_ONE, KIND_TWO

_MAXIT_INNER = 200
_MAXIT_OUTER = 200
#: r/m below which the projection is the support point to double precision
FAR = 2.0 ** -60


def inner_solve(a, c, p):
    """t >= 0 solving t + c t^(p-1) = a  (a >= 0, c > 0).

    Plain Python source, compiled twice: by ``njit`` here and as a CUDA device
    function in ``lpcore/kernels/cuda/ball.py`` (one implementation, two targets).
    """
    if a == 0.0:
        return 0.0
    # h(x) = x^e1 + c x^e2 - a, convex and increasing in x: in s = t^(p-1) for
    # p < 2, in t otherwise; Newton's iterates from right of the root decrease
    # monotonically to it
    if p < 2.0:
        e1, e2 = 1.0 / (p - 1.0), 1.0
        x = min(a ** (p - 1.0), a / c)
    else:
        e1, e2 = 1.0, p - 1.0
        x = min(a, (a / c) ** (1.0 / (p - 1.0)))
    for _ in range(_MAXIT_INNER):
        u1 = x ** (e1 - 1.0)
        u2 = x ** (e2 - 1.0)
        h = u1 * x + c * u2 * x - a
        if h <= 0.0:
            break
        x_new = x - h / (e1 * u1 + c * e2 * u2)
        if x_new <= 0.0:
            x_new = 0.5 * x
        if x - x_new <= 1e-16 * x:
            x = x_new
            break
        x = x_new
    return x ** e1


_inner = njit(cache=True, error_model="numpy")(inner_solve)


def bracket_step(lam, f, df, lo, hi):
    """One safeguarded Newton step for the decreasing outer equation f(lam) = 0.

    Shrinks the bracket (lo, hi) with the sign of f(lam), then returns (next
    lam, lo, hi, done): the Newton step if it stays inside the bracket, else
    a bisection (geometric while the bracket spans decades); ``done`` when the
    bracket has collapsed.  Plain Python source, compiled for the CPU here and
    for the GPU in ``lpcore/kernels/cuda/ball.py``.
    """
    if f > 0.0:
        lo = lam
    else:
        hi = lam
    if hi - lo <= 1e-15 * hi:
        return lam, lo, hi, True
    step = lam - f / df if df < 0.0 else -1.0
    if not (lo < step < hi):
        step = math.sqrt(lo * hi) if lo > 0.0 and hi > 4.0 * lo else 0.5 * (lo + hi)
        if lo == 0.0:
            step = 0.25 * hi
    return step, lo, hi, False


_bracket_step = njit(cache=True, error_model="numpy")(bracket_step)


@njit(cache=True, error_model="numpy")
def _phi(b, lam, p, t):
    """Fill t(lam); return (sum t^p - 1, d/dlam of it)."""
    c = lam * p
    f = -1.0
    df = 0.0
    for j in range(b.size):
        tj = _inner(b[j], c, p)
        t[j] = tj
        if tj > 0.0:
            tp1 = tj ** (p - 1.0)
            tpw = tp1 * tj
            f += tpw
            # dt/dlam = -p t^p / (t + c (p-1) t^(p-1))
            df -= p * tp1 * (p * tpw / (tj + c * (p - 1.0) * tp1))
    return f, df


@njit(cache=True, error_model="numpy")
def _project_general(a, rs, p, t):
    """t = |projection| / r of the max-scaled magnitudes a (max 1) onto radius rs = r/m."""
    q = p / (p - 1.0)
    sq = 0.0
    for j in range(a.size):
        sq += a[j] ** q
    nq = sq ** (1.0 / q)
    if rs < FAR:
        # y is so far outside that the projection is the support point of the
        # unit ball in y's direction to double precision: t = (a/||a||_q)^(q-1)
        for j in range(a.size):
            t[j] = (a[j] / nq) ** (q - 1.0)
        return
    b = a / rs  # the problem in units of the radius: every t <= 1, t^p cannot overflow
    hi = nq / rs / p
    lo = 0.0
    lam = hi
    for _ in range(_MAXIT_OUTER):
        f, df = _phi(b, lam, p, t)
        if abs(f) <= 1e-14:
            return
        lam, lo, hi, done = _bracket_step(lam, f, df, lo, hi)
        if done:
            break
    _phi(b, hi, p, t)  # feasible side of the bracket


@njit(cache=True, error_model="numpy")
def _project_l1(a, m, r, t):
    """t = |projection| (absolute units) of the max-scaled magnitudes a (max 1).

    Soft thresholding written with the offsets d = 1 - a from the maximum, so
    that a point far outside (r << m) keeps the radius's precision:
    t_j = m ((D_k - d_j k) / k) + r / k with D_k the sum of the k smallest d.
    """
    n = a.size
    d = np.sort(1.0 - a)  # ascending offsets: the largest a first
    D = 0.0
    Dk = 0.0
    k = 1
    for kk in range(1, n + 1):
        D += d[kk - 1]
        # is the kk-th largest still above the threshold?
        if m * (D / kk - d[kk - 1]) + r / kk > 0.0:
            Dk = D
            k = kk
    for j in range(n):
        t[j] = max(m * (Dk / k - (1.0 - a[j])) + r / k, 0.0)


@njit(cache=True, error_model="numpy")
def _ball_row(i, y, out, mrow, kind, p, r):
    n = y.shape[1]
    m = mrow[i]
    if m == 0.0:
        for j in range(n):
            out[i, j] = y[i, j]
        return
    if kind == KIND_INF:
        for j in range(n):
            out[i, j] = min(max(np.float64(y[i, j]), -r), r)
        return
    # compiled without fastmath: divisions stay divisions (a subnormal m has
    # no finite reciprocal), and r / m may under- or overflow harmlessly
    rs = r / m
    a = np.empty(n)
    for j in range(n):
        a[j] = np.float64(abs(y[i, j])) / m
    s = 0.0
    if kind == KIND_ONE:
        for j in range(n):
            s += a[j]
        nrm = s
    elif kind == KIND_TWO:
        for j in range(n):
            s += a[j] * a[j]
        nrm = math.sqrt(s)
    else:
        for j in range(n):
            s += a[j] ** p
        nrm = s ** (1.0 / p)
    if nrm <= rs:
        for j in range(n):
            out[i, j] = y[i, j]
        return
    t = np.empty(n)
    scale = r  # t is in units of the radius, except for p = 1
    if kind == KIND_TWO:
        for j in range(n):
            t[j] = a[j] / nrm
    elif kind == KIND_ONE:
        _project_l1(a, m, r, t)
        scale = 1.0
    else:
        _project_general(a, rs, p, t)
    for j in range(n):
        v = t[j] * scale
        out[i, j] = -v if y[i, j] < 0 else v


#: rows are tens of passes each: parallel from 4096 elements
_ball = TaskKernel(_ball_row, min_size=4096)


def project_ball_rows(y, mrow, kind, p, r, out):
    """Project each row of ``y`` onto the radius-r Lp ball into ``out`` (may be ``y``)."""
    G, n = y.shape
    if y.size == 0:
        return out
    # each row is many passes of arithmetic: parallelise from a few rows on
    _ball(G, y.size, y, out, mrow, kind, float(p), float(r))
    return out
