"""The topology kernels: semi-pruning's per-group relative-threshold drop,
and the counts, keys and selections of the other drop and grow rules (their
CUDA twins are in :mod:`lpcore.kernels.cuda.topology`)."""
from __future__ import annotations

import numpy as np
from numba import njit

from ._dispatch import TaskKernel, first_flags
from ._pow32 import FASTMATH

_JIT = dict(fastmath=FASTMATH, cache=True, error_model="numpy")


@njit(**_JIT)
def _drop_row(i, w, m, h, revive, out, tau):
    n = w.shape[1]
    s = 0.0
    c = 0
    latent_ok = True
    for j in range(n):
        a = abs(np.float64(w[i, j]))
        if m[i, j]:
            s += a
            c += 1
        elif revive and not a < np.inf:
            latent_ok = False
    if c == 0:  # nothing active: the group is left alone, latent values unread
        tau[i] = 0.0
        for j in range(n):
            out[i, j] = m[i, j]
        return
    if not (latent_ok and s < np.inf):
        tau[i] = np.nan  # flags a non-finite weight taking part; the out row is unset
        return
    t = h * s / c
    tau[i] = t
    for j in range(n):
        out[i, j] = (m[i, j] or revive) and abs(np.float64(w[i, j])) >= t


_drop = TaskKernel(_drop_row)


def drop_rows(w, m, h, out, revive=False):
    """out = m & (|w| >= h * mean of the active |w|) per row (with ``revive``,
    inactive entries at or above the threshold come back too; rows with no
    active entry are copied); returns the thresholds (NaN for rows with a
    non-finite weight taking part, whose out row is unset), the first such
    row (or G) and the number of connections dropped (valid when there is no
    such row)."""
    tau = np.zeros(w.shape[0])
    if w.size:
        _drop(w.shape[0], w.size, w, m, float(h), bool(revive), out, tau)
    bad = first_flags(tau)[0]
    return tau, bad, int(np.count_nonzero(m & ~out)) if bad == w.shape[0] else 0


# grow_by_score's steps (the CUDA twins are in kernels/cuda/topology.py)
def inactive_count(m):
    """The number of False entries of a boolean array."""
    return int(m.size - np.count_nonzero(m))


def grow_keys(s, nrm, n, out):
    """``out = |s| / mean`` per row, ``mean = nrm / n`` (``nrm``: the rows' L1
    norms, float64), 0 in rows whose mean is 0; float64 ``out`` of s's shape."""
    mean = (nrm / max(n, 1))[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        np.copyto(out, np.where(mean > 0, np.abs(s) / mean, 0.0))
    return out


def smallest_stable(keys, k):
    """Positions of the ``k`` smallest ``keys``, ties towards the lower
    position: the first ``k`` of a stable sort, found in linear time."""
    if k == 0:
        return np.zeros(0, dtype=np.intp)
    if k >= keys.size:
        return np.arange(keys.size, dtype=np.intp)
    kth = np.partition(keys, k - 1)[k - 1]
    below = np.flatnonzero(keys < kth)
    tie = np.flatnonzero(keys == kth)[:k - below.size]
    return np.sort(np.concatenate((below, tie)))


def select_keys(keys, m, k, active=False):
    """A selection by key among the entries of one state: with ``active``
    False the ``k`` largest of the non-negative float64 ``keys`` (1-D) where
    the boolean ``m`` (1-D) is False, with ``active`` True the ``k`` smallest
    where it is True; ties to the lower index.  Returns ``(m XOR selected,
    the selected indices in increasing order)``; ``k`` at most the number of
    such entries."""
    cand = np.flatnonzero(m if active else ~m)
    idx = cand[smallest_stable(keys[cand] if active else -keys[cand], k)]
    new = m.copy()
    new[idx] = not active
    return new, idx


def magnitudes(x, m, among, out):
    """``out = |x|`` (in out's dtype) where the boolean ``m == among``, 0
    elsewhere (all 1-D); returns how many of those entries hold NaN or Inf."""
    cand = np.flatnonzero(m if among else ~m)
    a = np.abs(x[cand].astype(np.float64))
    out[...] = 0
    out[cand] = a
    return a.size - int(np.count_nonzero(np.isfinite(a)))


def grow_at(m, ranks, n_free):
    """Activate the inactive entries of the increasing ``ranks`` (0 = the
    first False entry of the 1-D boolean ``m``; ``n_free`` False entries):
    ``(m | them, their positions, increasing)``."""
    idx = np.flatnonzero(~m)[ranks]
    new = m.copy()
    new[idx] = True
    return new, idx


def copy_mask(src, dst):
    """``dst[...] = src`` (1-D boolean arrays)."""
    np.copyto(dst, src)
    return dst


def activated(new, a, b):
    """The flat positions where the boolean 1-D ``new`` is True and ``a & b``
    is False (connections active now that were inactive in one of two
    earlier masks), increasing."""
    return np.flatnonzero(new & ~(a & b))


# Chase's channel steps on (G, n) masks: which rows are alive, their
# unmasked mean magnitudes, whole rows set or cleared
def live_rows(m, out):
    """``out[i]`` = row ``i`` of the boolean (G, n) ``m`` has a True entry;
    returns the number of rows without one."""
    np.copyto(out, m.any(axis=1))
    return int(out.size - np.count_nonzero(out))


def row_umm(w, m, out):
    """``out[i] = sum_j |w[i, j]| m[i, j] / n`` (float64); returns the first
    row with a NaN or Inf active weight, or G."""
    a = np.where(m, np.abs(w.astype(np.float64)), 0.0)
    bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
    np.copyto(out, a.sum(axis=1) / max(w.shape[1], 1))
    return int(bad[0]) if bad.size else w.shape[0]


def fill_rows(m, rows, on, value, out):
    """``out = m`` with every row ``i`` where ``rows[i] == on`` set to
    ``value`` (boolean (G, n) arrays); returns how many entries changed."""
    np.copyto(out, m)
    sel = rows == on
    changed = int(np.count_nonzero(out[sel] != value))
    out[sel] = value
    return changed
