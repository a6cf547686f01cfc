"""The tangent projection of the rows on the GPU (``kernels/tangent.py``):
the sums A = <nu', g>, B = <nu', nu'> with nu' = sign(w) (|w| / mw)^(p-1),
their combine into the coefficient, and the writing pass.  The loops load
four entries of w and of g a trip (``_reduce.load4``)."""
from __future__ import annotations

import math

from numba import cuda, float64

from ._launch import MAXT, combine_grid, flags, read_flags, rows_grid, scratch, split, stream
from ._reduce import block_slice as _slice, bsum, load4

INF = math.inf


@cuda.jit(device=True)
def _nu(wj, mt, e):
    """sign(w_j) (|w_j| / m)^e, the power in w's precision, as float64."""
    nu = float64(math.pow(abs(wj) / mt, e))
    return -nu if wj < 0 else nu


@cuda.jit(device=True, inline="always")
def _sums(wj, gj, mt, e, a, bb):
    """One entry added to <nu', g> and <nu', nu'>."""
    nu = _nu(wj, mt, e)
    return a + nu * float64(gj), bb + nu * nu


@cuda.jit(cache=True)
def _k_tangent(w, g, mw, e, nsplit, A, B):
    sh = cuda.shared.array(MAXT, float64)
    i, j0, j1 = _slice(w.shape[1], nsplit)
    if i >= w.shape[0]:
        return
    mt = w.dtype.type(mw[i])
    a = 0.0
    bb = 0.0
    nt = cuda.blockDim.x
    j = j0 + cuda.threadIdx.x
    while j < j1:  # four entries a trip (load4), summed in the one-entry order
        wa, wb, wc, wd = load4(w, i, j, nt, j1)
        ga, gb, gc, gd = load4(g, i, j, nt, j1)
        a, bb = _sums(wa, ga, mt, e, a, bb)
        if j + nt < j1:
            a, bb = _sums(wb, gb, mt, e, a, bb)
            if j + 2 * nt < j1:
                a, bb = _sums(wc, gc, mt, e, a, bb)
                if j + 3 * nt < j1:
                    a, bb = _sums(wd, gd, mt, e, a, bb)
        j += 4 * nt
    ta = bsum(sh, a)
    tb = bsum(sh, bb)
    if cuda.threadIdx.x == 0:
        A[cuda.blockIdx.x] = ta
        B[cuda.blockIdx.x] = tb


@cuda.jit(cache=True)
def _k_tangent_combine(A, B, G, nsplit, coef, flag):
    sh = cuda.shared.array(MAXT, float64)
    tid = cuda.threadIdx.x
    i = cuda.blockIdx.x
    while i < G:
        a = 0.0
        b = 0.0
        c = i * nsplit + tid
        while c < (i + 1) * nsplit:
            a += A[c]
            b += B[c]
            c += cuda.blockDim.x
        a = bsum(sh, a)
        b = bsum(sh, b)
        if tid == 0:
            if not (abs(a) < INF):
                cuda.atomic.max(flag, 0, G - i)
            coef[i] = a / b
        i += cuda.gridDim.x


def tangent_coef(w, g, mw, p):
    """``<nu', g> / <nu', nu'>`` per row (device) and the first group where g is bad."""
    G, n = w.shape
    coef = scratch("tangent.coef", (G,))
    fl = flags()
    nt, nsplit = split(n)
    A = scratch("tangent.A", (G * nsplit,))
    B = scratch("tangent.B", (G * nsplit,))
    s = stream()
    _k_tangent[G * nsplit, nt, s](w, g, mw, w.dtype.type(p - 1.0), nsplit, A, B)
    bl, t = combine_grid(G, nsplit)
    _k_tangent_combine[bl, t, s](A, B, G, nsplit, coef, fl)
    return coef, read_flags(fl, G)[0]



@cuda.jit(cache=True)
def _k_tangent_write(w, g, mw, coef, e, out, nsplit):
    i, j0, j1 = _slice(w.shape[1], nsplit)
    if i >= w.shape[0]:
        return
    mt = w.dtype.type(mw[i])
    c = coef[i]
    nt = cuda.blockDim.x
    j = j0 + cuda.threadIdx.x
    while j < j1:  # four entries a trip, all loaded before any is written
        wa, wb, wc, wd = load4(w, i, j, nt, j1)
        ga, gb, gc, gd = load4(g, i, j, nt, j1)
        out[i, j] = float64(ga) - c * _nu(wa, mt, e)
        if j + nt < j1:
            out[i, j + nt] = float64(gb) - c * _nu(wb, mt, e)
            if j + 2 * nt < j1:
                out[i, j + 2 * nt] = float64(gc) - c * _nu(wc, mt, e)
                if j + 3 * nt < j1:
                    out[i, j + 3 * nt] = float64(gd) - c * _nu(wd, mt, e)
        j += 4 * nt


def tangent_write(w, g, mw, coef, p, out):
    """``out = g - coef[i] * sign(w) (|w| / mw)^(p-1)``."""
    if w.size:
        bl, t, ns = rows_grid(*w.shape)
        _k_tangent_write[bl, t, stream()](w, g, mw, coef, w.dtype.type(p - 1.0), out, ns)
    return out
