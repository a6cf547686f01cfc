"""Per-group reductions: max-scaled r-norms, Hoyer sums, tangent inner products.

The max pass runs on the integer view of the data (``xb``: int32 for float32,
int64 for float64): with the sign bit masked off, IEEE floats order like their
bit patterns, and NaN and Inf are above every finite value.  So one integer
max reduction, which LLVM vectorises (a float max reduction without the
``nnan`` flag it does not), gives both the group maximum and whether the group
holds NaN or Inf.  A group with non-finite data gets a NaN result; the public
layer raises.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._dispatch import CHUNK, TINY, lift, log2_for, n_chunks, pick, scaled_pow
from ._pow32 import FASTMATH, float_from_bits

KIND_ONE, KIND_TWO, KIND_INF, KIND_GEN = 0, 1, 2, 3


#: From this p on, ||x||_p equals max|x| in double precision for every group
#: length n < 2**63 (n**(1/p) - 1 <= 44/p < 2**-53), and the kernels take the
#: max-norm path: a huge finite p computed as (x/m)**p would lose the maximum
#: itself ((1 - 2**-53)**p underflows once p passes ~1e19).
P_AS_INF = 2.0 ** 59


def norm_kind(p):
    if p == 1:
        return KIND_ONE
    if p == 2:
        return KIND_TWO
    if p >= P_AS_INF:
        return KIND_INF
    return KIND_GEN


@njit(fastmath=FASTMATH, cache=True, inline="always", error_model="numpy")
def _max_abs(xb, i, j0, j1, mask):
    """max |x[i, j0:j1]| as float64 from the bit view; NaN/Inf if any is NaN/Inf."""
    seg = xb[i, j0:j1]
    mb = seg[0] & mask
    for j in range(seg.size):
        b = seg[j] & mask
        mb = b if b > mb else mb
    return np.float64(float_from_bits(mb, seg[0]))


def int_view(x):
    """The bit view and sign-masking constant :func:`_max_abs` needs."""
    if x.dtype == np.float32:
        return x.view(np.int32), np.int32(0x7FFFFFFF)
    return x.view(np.int64), np.int64(0x7FFFFFFFFFFFFFFF)


# --------------------------------------------------------------------------
# max-scaled power sums:  Mc = max |x| over the chunk,
#                         Sc = sum (|x| / Mc)^p over the chunk (NaN if bad)
@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def _powsum_task(x, xb, mask, t, nch, kind, p, Mc, Sc):
    i = t // nch
    j0 = (t - i * nch) * CHUNK
    j1 = min(x.shape[1], j0 + CHUNK)
    if x.itemsize == 4 and (kind == KIND_ONE or kind == KIND_TWO):
        # float32 |x| and x^2 summed in float64 can neither overflow nor
        # underflow, and NaN/Inf propagate into the sum: one pass, no scaling
        seg = x[i, j0:j1]
        s = 0.0
        if kind == KIND_ONE:
            for j in range(seg.size):
                s += np.float64(abs(seg[j]))
        else:
            for j in range(seg.size):
                d = np.float64(seg[j])
                s += d * d
        Mc[t] = 1.0
        Sc[t] = s if s < np.inf else np.nan
        return
    m = _max_abs(xb, i, j0, j1, mask)
    Mc[t] = m
    if not (m < np.inf):
        Sc[t] = np.nan
        return
    if kind == KIND_INF or m == 0.0:
        Sc[t] = 0.0
        return
    seg = x[i, j0:j1]
    tiny = m < TINY
    inv = 1.0 / lift(m, tiny)
    l2m = log2_for(m, x)
    s = 0.0
    if kind == KIND_ONE:
        for j in range(seg.size):
            s += lift(np.float64(abs(seg[j])), tiny) * inv
    elif kind == KIND_TWO:
        for j in range(seg.size):
            d = lift(np.float64(abs(seg[j])), tiny) * inv
            s += d * d
    else:
        for j in range(seg.size):
            s += scaled_pow(lift(abs(seg[j]), tiny), inv, l2m, p)
    Sc[t] = s


@njit(parallel=True, cache=True, error_model="numpy")
def _powsum_par(x, xb, mask, nch, kind, p, Mc, Sc):
    for t in prange(Mc.size):
        _powsum_task(x, xb, mask, t, nch, kind, p, Mc, Sc)


@njit(cache=True, error_model="numpy")
def _powsum_ser(x, xb, mask, nch, kind, p, Mc, Sc):
    for t in range(Mc.size):
        _powsum_task(x, xb, mask, t, nch, kind, p, Mc, Sc)


@njit(cache=True, error_model="numpy")
def _combine_norms(Mc, Sc, nch, kind, p, out):
    for i in range(out.size):
        m = 0.0
        bad = 0.0
        for c in range(i * nch, (i + 1) * nch):
            m = max(m, Mc[c])
            bad += Sc[c] * 0.0
        if bad != 0.0:
            out[i] = np.nan
        elif kind == KIND_INF or m == 0.0:
            out[i] = m
        else:
            s = 0.0
            tiny = m < TINY
            im = 1.0 / lift(m, tiny)
            for c in range(i * nch, (i + 1) * nch):
                if Mc[c] > 0.0:
                    r = lift(Mc[c], tiny) * im
                    if kind == KIND_ONE:
                        s += Sc[c] * r
                    elif kind == KIND_TWO:
                        s += Sc[c] * r * r
                    else:
                        s += Sc[c] * r ** p
            if kind == KIND_ONE:
                out[i] = m * s
            elif kind == KIND_TWO:
                out[i] = m * math.sqrt(s)
            else:
                out[i] = m * s ** (1.0 / p)


def powsum_chunks(x, p):
    """Per-chunk (max, scaled power sum) of a C-contiguous (G, n) array, n >= 1."""
    G, n = x.shape
    nch = n_chunks(n)
    Mc = np.empty(G * nch)
    Sc = np.empty(G * nch)
    kern = pick(_powsum_par, _powsum_ser, x.size, G * nch)
    xb, mask = int_view(x)
    kern(x, xb, mask, nch, norm_kind(p), float(p), Mc, Sc)
    return Mc, Sc, nch


def group_norms(x, p):
    """float64 Lp norms of the rows of ``x`` (NaN for rows with NaN/Inf)."""
    G, n = x.shape
    out = np.zeros(G)
    if n == 0 or G == 0:
        return out
    Mc, Sc, nch = powsum_chunks(x, p)
    _combine_norms(Mc, Sc, nch, norm_kind(p), float(p), out)
    return out


def group_max(x):
    """float64 max |x| of the rows (NaN for rows with NaN/Inf)."""
    return group_norms(x, math.inf)


# --------------------------------------------------------------------------
# Hoyer: s1 = sum |x|/M, s2 = sum (x/M)^2 per chunk.  float32 data need no
# scaling (squares of float32 cannot overflow or underflow in float64), so
# that path is a single memory-bound pass; float64 data are max-scaled.
@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def _hoyer_task(x, xb, mask, t, nch, scaled, Mc, S1, S2):
    i = t // nch
    j0 = (t - i * nch) * CHUNK
    j1 = min(x.shape[1], j0 + CHUNK)
    inv = 1.0
    m = 1.0
    tiny = False
    if scaled:
        m = _max_abs(xb, i, j0, j1, mask)
        if not (0.0 < m < np.inf):
            Mc[t] = m
            bad = 0.0 if m == 0.0 else np.nan
            S1[t] = bad
            S2[t] = bad
            return
        tiny = m < TINY
        inv = 1.0 / lift(m, tiny)
    seg = x[i, j0:j1]
    s1 = 0.0
    s2 = 0.0
    for j in range(seg.size):
        d = lift(np.float64(abs(seg[j])), tiny) * inv
        s1 += d
        s2 += d * d
    Mc[t] = m
    S1[t] = s1
    S2[t] = s2


@njit(parallel=True, cache=True, error_model="numpy")
def _hoyer_par(x, xb, mask, nch, scaled, Mc, S1, S2):
    for t in prange(Mc.size):
        _hoyer_task(x, xb, mask, t, nch, scaled, Mc, S1, S2)


@njit(cache=True, error_model="numpy")
def _hoyer_ser(x, xb, mask, nch, scaled, Mc, S1, S2):
    for t in range(Mc.size):
        _hoyer_task(x, xb, mask, t, nch, scaled, Mc, S1, S2)


@njit(cache=True, error_model="numpy")
def _combine_hoyer(Mc, S1, S2, nch, n, out):
    sn = math.sqrt(n)
    for i in range(out.size):
        m = 0.0
        bad = 0.0
        for c in range(i * nch, (i + 1) * nch):
            m = max(m, Mc[c])
            bad += (S1[c] + S2[c]) * 0.0
        if bad != 0.0 or not (m < np.inf):
            out[i] = np.nan
            continue
        s1 = 0.0
        s2 = 0.0
        if m > 0.0:
            tiny = m < TINY
            im = 1.0 / lift(m, tiny)
            for c in range(i * nch, (i + 1) * nch):
                r = lift(Mc[c], tiny) * im
                s1 += S1[c] * r
                s2 += S2[c] * r * r
        if s2 == 0.0:
            out[i] = 1.0  # all-zero group: a dead neuron, maximally sparse
        else:
            # sqrt(s1^2/s2) rounds to exactly sqrt(n) for equal magnitudes more
            # often than s1/sqrt(s2) does
            h = (sn - math.sqrt(s1 * s1 / s2)) / (sn - 1.0)
            out[i] = min(1.0, max(0.0, h))


def hoyer_sums(x):
    """Hoyer sparsity of each row of a C-contiguous (G, n) array, n >= 2 (NaN if bad)."""
    G, n = x.shape
    out = np.empty(G)
    if G == 0:
        return out
    nch = n_chunks(n)
    Mc = np.empty(G * nch)
    S1 = np.empty(G * nch)
    S2 = np.empty(G * nch)
    kern = pick(_hoyer_par, _hoyer_ser, x.size, G * nch)
    xb, mask = int_view(x)
    kern(x, xb, mask, nch, x.dtype != np.float32, Mc, S1, S2)
    _combine_hoyer(Mc, S1, S2, nch, n, out)
    return out


# --------------------------------------------------------------------------
# tangent projection sums with nu' = sign(w) (|w| / Mw)^(p-1):
#   A = <nu', g>,  B = <nu', nu'>
@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def _tangent_task(w, g, t, nch, mw, e, A, B):
    i = t // nch
    j0 = (t - i * nch) * CHUNK
    j1 = min(w.shape[1], j0 + CHUNK)
    m = mw[i]
    tiny = m < TINY
    inv = 1.0 / lift(m, tiny)
    l2m = log2_for(m, w)
    ws = w[i, j0:j1]
    gs = g[i, j0:j1]
    a = 0.0
    b = 0.0
    for j in range(ws.size):
        wj = ws[j]
        nu = scaled_pow(lift(abs(wj), tiny), inv, l2m, e)
        nu = -nu if wj < 0 else nu
        a += nu * np.float64(gs[j])
        b += nu * nu
    A[t] = a
    B[t] = b


@njit(parallel=True, cache=True, error_model="numpy")
def _tangent_par(w, g, nch, mw, e, A, B):
    for t in prange(A.size):
        _tangent_task(w, g, t, nch, mw, e, A, B)


@njit(cache=True, error_model="numpy")
def _tangent_ser(w, g, nch, mw, e, A, B):
    for t in range(A.size):
        _tangent_task(w, g, t, nch, mw, e, A, B)


def tangent_sums(w, g, mw, p):
    """Per-group ``<nu', g>`` and ``<nu', nu'>`` (float64) for groups with mw > 0."""
    G, n = w.shape
    nch = n_chunks(n)
    A = np.empty(G * nch)
    B = np.empty(G * nch)
    kern = pick(_tangent_par, _tangent_ser, w.size, G * nch)
    kern(w, g, nch, mw, float(p) - 1.0, A, B)
    return A.reshape(G, nch).sum(axis=1), B.reshape(G, nch).sum(axis=1)
