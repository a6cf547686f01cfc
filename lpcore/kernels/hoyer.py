"""Hoyer sparsity of the rows."""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._dispatch import CHUNK, TINY, TaskKernel, first_flags, lift, n_chunks
from ._pow32 import FASTMATH
from .norm import _max_abs, int_view


# Hoyer: s1 = sum |x|/M, s2 = sum (x/M)^2 per chunk.  float32 data need no
# scaling (squares of float32 cannot overflow or underflow in float64), so
# that path is a single memory-bound pass; float64 data are max-scaled.
@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def _hoyer_task(t, x, xb, mask, nch, scaled, Mc, S1, S2):
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


_hoyer = TaskKernel(_hoyer_task)


def hoyer_sums(x, out_dtype):
    """Hoyer sparsity of each row of a C-contiguous (G, n) array, n >= 2, in
    ``out_dtype``: ``(values, first group with NaN/Inf data or G)``."""
    G, n = x.shape
    out = np.empty(G)
    if G == 0:
        return out.astype(out_dtype), G
    nch = n_chunks(n)
    Mc = np.empty(G * nch)
    S1 = np.empty(G * nch)
    S2 = np.empty(G * nch)
    xb, mask = int_view(x)
    _hoyer(G * nch, x.size, x, xb, mask, nch, x.dtype != np.float32, Mc, S1, S2)
    _combine_hoyer(Mc, S1, S2, nch, n, out)
    return out.astype(out_dtype, copy=False), first_flags(out)[0]

