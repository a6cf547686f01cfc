"""The tangent projection of the rows: its inner products and its writing pass."""
from __future__ import annotations

import numpy as np
from numba import njit

from ._dispatch import (CHUNK, TINY, TaskKernel, first_flags, lift, log2_for, n_chunks,
                        scaled_pow)
from ._pow32 import FASTMATH


@njit(fastmath=FASTMATH, cache=True, inline="always", error_model="numpy")
def _nu(wj, tiny, inv, l2m, e):
    """sign(w_j) (|w_j| / m)^e in float64 given the row's scaling (see _scaling)."""
    nu = scaled_pow(lift(abs(wj), tiny), inv, l2m, e)
    return -nu if wj < 0 else nu


@njit(fastmath=FASTMATH, cache=True, inline="always", error_model="numpy")
def _scaling(m, w):
    """(tiny, 1 / lift(m), log2 m) of a row maximum m > 0, for _nu."""
    tiny = m < TINY
    return tiny, 1.0 / lift(m, tiny), log2_for(m, w)


# tangent projection sums with nu' = sign(w) (|w| / Mw)^(p-1):
#   A = <nu', g>,  B = <nu', nu'>
@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def _tangent_task(t, w, g, nch, mw, e, A, B):
    i = t // nch
    j0 = (t - i * nch) * CHUNK
    j1 = min(w.shape[1], j0 + CHUNK)
    tiny, inv, l2m = _scaling(mw[i], w)
    ws = w[i, j0:j1]
    gs = g[i, j0:j1]
    a = 0.0
    b = 0.0
    for j in range(ws.size):
        nu = _nu(ws[j], tiny, inv, l2m, e)
        a += nu * np.float64(gs[j])
        b += nu * nu
    A[t] = a
    B[t] = b


_sums = TaskKernel(_tangent_task)


def tangent_coef(w, g, mw, p):
    """``<nu', g> / <nu', nu'>`` per row of (G, n) arrays with row maxima
    ``mw > 0`` of |w| (float64), and the first group whose inner product is
    not finite (g holds NaN/Inf there) or G."""
    G, n = w.shape
    nch = n_chunks(n)
    A = np.empty(G * nch)
    B = np.empty(G * nch)
    _sums(G * nch, w.size, w, g, nch, mw, float(p) - 1.0, A, B)
    a = A.reshape(G, nch).sum(axis=1)
    with np.errstate(invalid="ignore"):
        coef = a / B.reshape(G, nch).sum(axis=1)
    return coef, first_flags(a)[0]

# out = g - coef[i] * nu'   with nu' = sign(w) (|w| / mw)^(p-1)
@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def _tangent_write_task(t, w, g, mw, coef, e, out, nch):
    i = t // nch
    j0 = (t - i * nch) * CHUNK
    j1 = min(w.shape[1], j0 + CHUNK)
    c = coef[i]
    tiny, inv, l2m = _scaling(mw[i], w)  # mw > 0: zero groups of w were rejected
    ws = w[i, j0:j1]
    gs = g[i, j0:j1]
    os = out[i, j0:j1]
    for j in range(ws.size):
        os[j] = np.float64(gs[j]) - c * _nu(ws[j], tiny, inv, l2m, e)


_write = TaskKernel(_tangent_write_task)


def tangent_write(w, g, mw, coef, p, out):
    """``out = g - coef[i] * sign(w) (|w| / mw)^(p-1)``; ``out`` may be ``g``."""
    G, n = w.shape
    if w.size == 0:
        return out
    nch = n_chunks(n)
    _write(G * nch, w.size, w, g, mw, coef, float(p) - 1.0, out, nch)
    return out

