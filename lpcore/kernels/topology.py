"""Per-group relative-threshold drop (semi-pruning's drop rule)."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._dispatch import PAR_MIN_SIZE
from ._pow32 import FASTMATH

_JIT = dict(fastmath=FASTMATH, cache=True, error_model="numpy")


@njit(**_JIT)
def _drop_row(w, m, h, out, tau, i):
    n = w.shape[1]
    s = 0.0
    c = 0
    for j in range(n):
        if m[i, j]:
            s += abs(np.float64(w[i, j]))
            c += 1
    t = h * s / c if c > 0 else 0.0
    tau[i] = t if s < np.inf else np.nan  # NaN flags non-finite active weights
    if not s < np.inf:
        return
    for j in range(n):
        out[i, j] = m[i, j] and abs(np.float64(w[i, j])) >= t


@njit(parallel=True, **_JIT)
def _drop_par(w, m, h, out, tau):
    for i in prange(w.shape[0]):
        _drop_row(w, m, h, out, tau, np.int64(i))


@njit(**_JIT)
def _drop_ser(w, m, h, out, tau):
    for i in range(w.shape[0]):
        _drop_row(w, m, h, out, tau, i)


def drop_rows(w, m, h, out):
    """out = m & (|w| >= h * mean of the active |w|) per row; returns the thresholds
    (NaN for rows whose active weights are not finite, whose out row is unset)."""
    tau = np.empty(w.shape[0])
    if w.size:
        (_drop_par if w.size >= PAR_MIN_SIZE and w.shape[0] > 1 else _drop_ser)(
            w, m, float(h), out, tau)
    return tau
