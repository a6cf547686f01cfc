"""Lp norms of the rows: max-scaled power sums, and the scaling by a norm.

The max pass runs on the integer view of the data (``xb``: int32 for float32,
int64 for float64): with the sign bit masked off, IEEE floats order like their
bit patterns, and NaN and Inf are above every finite value.  So one integer
max reduction, which LLVM vectorises (a float max reduction without the
``nnan`` flag it does not), gives both the group maximum and whether the group
holds NaN or Inf.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._dispatch import (CHUNK, TINY, TaskKernel, first_flags, lift, log2_for, n_chunks,
                        scaled_powsum)
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
def _powsum_task(t, x, xb, mask, nch, kind, p, Mc, Sc):
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
        s = scaled_powsum(seg, inv, l2m, p, tiny)
    Sc[t] = s


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


_powsum = TaskKernel(_powsum_task)


def powsum_chunks(x, p):
    """Per-chunk (max, scaled power sum) of a C-contiguous (G, n) array, n >= 1."""
    G, n = x.shape
    nch = n_chunks(n)
    Mc = np.empty(G * nch)
    Sc = np.empty(G * nch)
    xb, mask = int_view(x)
    _powsum(G * nch, x.size, x, xb, mask, nch, norm_kind(p), float(p), Mc, Sc)
    return Mc, Sc, nch


def group_norms(x, p, out_dtype=None):
    """Lp norms of the rows of a C-contiguous (G, n) array: ``(norms, first
    bad group, first zero group)``, ``G`` where there is none.  A group whose
    data hold NaN or Inf has a NaN norm, one whose norm overflows
    ``out_dtype`` an Inf norm; both count as bad.  ``out_dtype=None``: float64
    norms for the caller's own use."""
    G, n = x.shape
    out = np.zeros(G)
    if n and G:
        Mc, Sc, nch = powsum_chunks(x, p)
        _combine_norms(Mc, Sc, nch, norm_kind(p), float(p), out)
    if out_dtype is not None and np.dtype(out_dtype) != out.dtype:
        with np.errstate(over="ignore"):
            out = out.astype(out_dtype)
    return (out,) + first_flags(out)


def group_max(x):
    """Row maxima of |x| (float64; NaN for a row with NaN/Inf), the first bad
    and the first zero row."""
    return group_norms(x, math.inf)


# out[i, :] = x[i, :] / nrm[i] (0 for a zero group), formed in float64 (a
# float32 group whose norm is subnormal has a scale beyond float32's range; a
# float64 one has no finite reciprocal at all: both sides are lifted by 2**1074)
@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def _scale_task(t, x, nrm, out, nch):
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


_scale = TaskKernel(_scale_task)


def scale_rows(x, nrm, out):
    """``out = x / nrm[:, None]`` (rows with nrm == 0 become 0); ``out`` may be ``x``."""
    G, n = x.shape
    if x.size == 0:
        return out
    nch = n_chunks(n)
    _scale(G * nch, x.size, x, nrm, out, nch)
    return out
