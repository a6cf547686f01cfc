"""Writing passes.  They run only after the reductions were validated."""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._dispatch import CHUNK, TINY, lift, log2_for, n_chunks, pick, scaled_pow, spow
from ._pow32 import FASTMATH


# out[i, :] = x[i, :] / nrm[i] (0 for a zero group), formed in float64 (a
# float32 group whose norm is subnormal has a scale beyond float32's range; a
# float64 one has no finite reciprocal at all: both sides are lifted by 2**1074)
@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def _scale_task(x, nrm, out, t, nch):
    i = t // nch
    j0 = (t - i * nch) * CHUNK
    j1 = min(x.shape[1], j0 + CHUNK)
    s = nrm[i]
    tiny = s < TINY
    f = 1.0 / lift(s, tiny) if s != 0.0 else 0.0
    xs = x[i, j0:j1]
    os = out[i, j0:j1]
    for j in range(xs.size):
        os[j] = lift(np.float64(xs[j]), tiny) * f


@njit(parallel=True, cache=True, error_model="numpy")
def _scale_par(x, nrm, out, nch):
    for t in prange(x.shape[0] * nch):
        _scale_task(x, nrm, out, t, nch)


@njit(cache=True, error_model="numpy")
def _scale_ser(x, nrm, out, nch):
    for t in range(x.shape[0] * nch):
        _scale_task(x, nrm, out, t, nch)


def scale_rows(x, nrm, out):
    """``out = x / nrm[:, None]`` (rows with nrm == 0 become 0); ``out`` may be ``x``."""
    G, n = x.shape
    if x.size == 0:
        return out
    nch = n_chunks(n)
    pick(_scale_par, _scale_ser, x.size, G * nch)(x, nrm, out, nch)
    return out
    nch = n_chunks(n)
    pick(_scale_par, _scale_ser, x.size, G * nch)(x, scale, out, nch)
    return out


# out = g - coef[i] * nu'   with nu' = sign(w) (|w| / mw)^(p-1)
@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def _tangent_write_task(w, g, mw, coef, e, out, t, nch):
    i = t // nch
    j0 = (t - i * nch) * CHUNK
    j1 = min(w.shape[1], j0 + CHUNK)
    m = mw[i]  # > 0: zero groups of w were rejected before this pass
    c = coef[i]
    tiny = m < TINY
    inv = 1.0 / lift(m, tiny)
    l2m = log2_for(m, w)
    ws = w[i, j0:j1]
    gs = g[i, j0:j1]
    os = out[i, j0:j1]
    for j in range(ws.size):
        wj = ws[j]
        nu = scaled_pow(lift(abs(wj), tiny), inv, l2m, e)
        nu = -nu if wj < 0 else nu
        os[j] = np.float64(gs[j]) - c * nu


@njit(parallel=True, cache=True, error_model="numpy")
def _tangent_write_par(w, g, mw, coef, e, out, nch):
    for t in prange(w.shape[0] * nch):
        _tangent_write_task(w, g, mw, coef, e, out, t, nch)


@njit(cache=True, error_model="numpy")
def _tangent_write_ser(w, g, mw, coef, e, out, nch):
    for t in range(w.shape[0] * nch):
        _tangent_write_task(w, g, mw, coef, e, out, t, nch)


def tangent_write(w, g, mw, coef, p, out):
    G, n = w.shape
    if w.size == 0:
        return out
    nch = n_chunks(n)
    kern = pick(_tangent_write_par, _tangent_write_ser, w.size, G * nch)
    kern(w, g, mw, coef, float(p) - 1.0, out, nch)
    return out


# out = sign(x) |x|^e elementwise on flat arrays; returns a per-task flag that
# is NaN where the input held NaN/Inf.
@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def _signed_pow_task(x, e, out, bad, t):
    j0 = t * CHUNK
    j1 = min(x.size, j0 + CHUNK)
    xs = x[j0:j1]
    os = out[j0:j1]
    ok = True
    for j in range(xs.size):
        v = xs[j]
        a = abs(v)
        ok &= a < np.inf
        r = spow(a, e)
        os[j] = -r if v < 0 else r
    bad[t] = 0.0 if ok else 1.0


@njit(parallel=True, cache=True, error_model="numpy")
def _signed_pow_par(x, e, out, bad):
    for t in prange(bad.size):
        _signed_pow_task(x, e, out, bad, t)


@njit(cache=True, error_model="numpy")
def _signed_pow_ser(x, e, out, bad):
    for t in range(bad.size):
        _signed_pow_task(x, e, out, bad, t)


def signed_pow(x, e, out):
    """``out = sign(x) * |x| ** e`` on 1-D contiguous arrays; returns True if all finite."""
    nt = n_chunks(x.size) if x.size else 0
    bad = np.zeros(nt)
    if nt:
        pick(_signed_pow_par, _signed_pow_ser, x.size, nt)(x, float(e), out, bad)
    return bool(np.all(bad == 0.0))
