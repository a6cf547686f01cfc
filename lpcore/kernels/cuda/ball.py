"""Euclidean projection onto the Lp ball on the GPU: one thread block per group.

The same mathematics as ``lpcore/kernels/ball.py``, in float64 on the
max-scaled group ``a = |y| / m`` (the general p in units of the radius), but without per-group scratch memory: every
quantity a thread needs is recomputed from ``a`` on the fly, and every sum is
a block reduction, so every decision (converged? which bracket side?) is the
same in all threads of the block.

* p = inf: clipping; p = 2: radial scaling.
* p = 1: Michelot's algorithm on the offsets ``d = m - |y|``: soft
  thresholding ``t = max(L - d, 0)`` with ``L = (sum_{d_i < L} d_i + r) /
  #{d_i < L}`` iterated from ``L = (sum d + r) / n``: L decreases, the active set shrinks, and the
  iteration stops, exactly, when the set no longer changes (at most n
  rounds, usually a handful).  The CPU kernel sorts instead; both give the
  exact projection up to rounding.
* 1 < p < inf: the nested safeguarded Newton iteration of the CPU kernel;
  the inner scalar Newton solve is per element (thread-local), the outer one
  reduces ``sum t^p - r^p`` and its derivative over the block.
"""
from __future__ import annotations

import math

from numba import cuda, float64

from ..ball import _MAXIT_OUTER, FAR, bracket_step, inner_solve
from ..norm import KIND_INF, KIND_ONE, KIND_TWO
from ._launch import MAXT, config, stream, threads_for
from ._reduce import bsum, pow_like

#: the scalar inner Newton solve, the CPU kernel's own source compiled for the GPU
_inner = cuda.jit(device=True)(inner_solve)
_bracket_step = cuda.jit(device=True)(bracket_step)


@cuda.jit(device=True)
def _phi(y, i, m, rs, lam, p, sh):
    """(sum t^p - 1, its derivative in lam) over the block for t(lam), with
    t_j solving t + lam p t^(p-1) = b_j, b = |y| / r (radius units)."""
    c = lam * p
    f = 0.0
    df = 0.0
    j = cuda.threadIdx.x
    while j < y.shape[1]:
        tj = _inner(float64(abs(y[i, j])) / m / rs, c, p)
        if tj > 0.0:
            tp1 = tj ** (p - 1.0)
            tpw = tp1 * tj
            f += tpw
            df -= p * tp1 * (p * tpw / (tj + c * (p - 1.0) * tp1))
        j += cuda.blockDim.x
    return bsum(sh, f) - 1.0, bsum(sh, df)


@cuda.jit(device=True)
def _general_lambda(y, i, m, rs, nq, p, sh):
    """The multiplier lam in radius units (CPU: _project_general)."""
    hi = nq / rs / p
    lo = 0.0
    lam = hi
    for _ in range(_MAXIT_OUTER):
        f, df = _phi(y, i, m, rs, lam, p, sh)
        if abs(f) <= 1e-14:
            return lam
        lam, lo, hi, done = _bracket_step(lam, f, df, lo, hi)
        if done:
            break
    return hi  # feasible side of the bracket


@cuda.jit(device=True)
def _l1_level(y, i, m, r, sh):
    """Michelot's threshold as an offset from the group maximum m (absolute
    units): the result is ``max(L - (m - |y_j|), 0)``.  The offsets
    ``d = m - |y|`` keep r's precision for points far outside (r << m), and
    ``L = m * mean(d / m) + r / count`` can neither under- nor overflow."""
    n = y.shape[1]
    cs = 0.0
    j = cuda.threadIdx.x
    while j < n:
        cs += (m - float64(abs(y[i, j]))) / m
        j += cuda.blockDim.x
    cs = bsum(sh, cs)
    lev = m * (cs / n) + r / n
    cnt = float64(n)
    for _ in range(n):
        cs = 0.0
        c = 0.0
        j = cuda.threadIdx.x
        while j < n:
            d = m - float64(abs(y[i, j]))
            if d < lev:
                cs += d / m
                c += 1.0
            j += cuda.blockDim.x
        cs = bsum(sh, cs)
        c = bsum(sh, c)  # >= 1: the maximum has d = 0 < lev
        if c == cnt:
            break
        cnt = c
        lev = m * (cs / c) + r / c
    return lev


@cuda.jit(device=True)
def _copy_row(y, out, i):
    j = cuda.threadIdx.x
    while j < y.shape[1]:
        out[i, j] = y[i, j]
        j += cuda.blockDim.x


@cuda.jit(device=True)
def _ball_group(y, out, i, m, kind, p, r, sh):
    n = y.shape[1]
    if m == 0.0:
        _copy_row(y, out, i)
        return
    if kind == KIND_INF:
        j = cuda.threadIdx.x
        while j < n:
            out[i, j] = min(max(float64(y[i, j]), -r), r)
            j += cuda.blockDim.x
        return
    rs = r / m
    q = p / (p - 1.0) if kind != KIND_ONE and kind != KIND_TWO else 2.0
    s = 0.0
    sq = 0.0
    j = cuda.threadIdx.x
    while j < n:
        a = float64(abs(y[i, j])) / m
        s += pow_like(a, p, a)  # p = 1 and 2 (KIND_ONE, KIND_TWO) as products
        if kind != KIND_ONE and kind != KIND_TWO:
            sq += a ** q
        j += cuda.blockDim.x
    s = bsum(sh, s)
    if kind == KIND_ONE:
        nrm = s
    elif kind == KIND_TWO:
        nrm = math.sqrt(s)
    else:
        nrm = s ** (1.0 / p)
    if nrm <= rs:
        _copy_row(y, out, i)
        return
    tau = 0.0
    c = 0.0
    nq = 1.0
    if kind == KIND_ONE:
        tau = _l1_level(y, i, m, r, sh)
    elif kind != KIND_TWO:
        nq = bsum(sh, sq) ** (1.0 / q)
        if rs >= FAR:
            c = _general_lambda(y, i, m, rs, nq, p, sh) * p
    j = cuda.threadIdx.x
    while j < n:
        yj = y[i, j]
        a = float64(abs(yj)) / m
        if kind == KIND_TWO:
            v = r * (a / nrm)
        elif kind == KIND_ONE:
            v = max(tau - (m - float64(abs(yj))), 0.0)
        elif rs < FAR:
            v = r * (a / nq) ** (q - 1.0)  # the support point (see the CPU kernel)
        else:
            v = r * _inner(a / rs, c, p)
        out[i, j] = -v if yj < 0 else v
        j += cuda.blockDim.x


@cuda.jit(cache=True)
def _k_ball(y, mrow, kind, p, r, out):
    sh = cuda.shared.array(MAXT, float64)
    i = cuda.blockIdx.x
    while i < y.shape[0]:
        _ball_group(y, out, i, mrow[i], kind, p, r, sh)
        i += cuda.gridDim.x


def project_ball_rows(y, mrow, kind, p, r, out):
    """Project each row of the (G, n) device array ``y`` onto the radius-r Lp
    ball into ``out`` (may be ``y``); ``mrow`` = row maxima (float64, device)."""
    G, n = y.shape
    if y.size == 0:
        return out
    nt = threads_for(n)
    bl = max(1, min(G, config.max_blocks))
    _k_ball[bl, nt, stream()](y, mrow, kind, float(p), float(r), out)
    return out
