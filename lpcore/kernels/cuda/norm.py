"""Lp norms of the rows on the GPU, and the scaling by a norm (``kernels/norm.py``).

Contract as ``lpcore/kernels/norm.py``: (G, n) C-contiguous float32/float64
device arrays in, float64 per-group results out, NaN for a group holding NaN
or Inf; additionally the index of the first such group (and of the first
all-zero group) is recorded on the device with an atomic max of ``G - i``
(see :func:`._launch.flags`), so the public
layer copies two integers to the host to decide whether to raise.

Accumulation: each thread sums its elements in float64, the block reduces
the float64 partials in shared memory (a tree), and the slices of a group
are combined in float64 by a second kernel, rescaled from each slice's own
maximum to the group's.  Element arithmetic stays in the data's precision
(``x.dtype.type`` constants, ``math.pow`` on float32 is ``powf``): ratios
``|x| / max`` are formed by division, which cannot overflow for subnormal
maxima.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64

from ..norm import KIND_INF, KIND_ONE, KIND_TWO, norm_kind
from ._launch import (MAXT, block_slice as _slice, bmax, bsum, combine_grid, flags, maxnan,
                      read_flags, rows_grid, scratch, split, stream)
from .layout import fill

INF = math.inf
NAN = math.nan
TINY = 2.2250738585072014e-308  # the smallest normal float64



@cuda.jit(device=True)
def _slice_max(x, g, j0, j1, sh):
    m = 0.0
    j = j0 + cuda.threadIdx.x
    while j < j1:
        m = maxnan(m, float64(abs(x[g, j])))
        j += cuda.blockDim.x
    return bmax(sh, m)


# ---------------------------------------------------------------------------
# r-norms: per slice Mb = max |x|, Sb = sum (|x| / Mb)^r
@cuda.jit(cache=True)
def _k_powsum(x, kind, p, single, nsplit, Mb, Sb):
    sh = cuda.shared.array(MAXT, float64)
    g, j0, j1 = _slice(x.shape[1], nsplit)
    if g >= x.shape[0]:
        return
    tid = cuda.threadIdx.x
    b = cuda.blockIdx.x
    if single:
        # float32 |x| and x^2 summed in float64 neither overflow nor
        # underflow, and NaN/Inf propagate into the sum: one pass, unscaled
        acc = 0.0
        j = j0 + tid
        while j < j1:
            d = float64(x[g, j])
            if kind == KIND_ONE:
                acc += abs(d)
            else:
                acc += d * d
            j += cuda.blockDim.x
        t = bsum(sh, acc)
        if tid == 0:
            Mb[b] = 1.0
            Sb[b] = t if t < INF else NAN
        return
    m = _slice_max(x, g, j0, j1, sh)
    if not m < INF:
        if tid == 0:
            Mb[b] = m
            Sb[b] = NAN
        return
    if kind == KIND_INF or m == 0.0:
        if tid == 0:
            Mb[b] = m
            Sb[b] = 0.0
        return
    mt = x.dtype.type(m)
    acc = 0.0
    j = j0 + tid
    while j < j1:
        r = abs(x[g, j]) / mt
        if kind == KIND_ONE:
            acc += float64(r)
        elif kind == KIND_TWO:
            acc += float64(r) * float64(r)
        else:
            acc += float64(math.pow(r, p))
        j += cuda.blockDim.x
    t = bsum(sh, acc)
    if tid == 0:
        Mb[b] = m
        Sb[b] = t


@cuda.jit(device=True)
def _slices_max(Mb, S1, S2, c0, c1, sh):
    """Over a group's slices ``c0 .. c1`` (the block's threads striding): the
    block max of the slice maxima ``Mb`` and 1.0 if any slice is bad (its
    maximum or one of its sums ``S1``, ``S2`` not finite), else 0.0."""
    m = 0.0
    bad = 0.0
    c = c0 + cuda.threadIdx.x
    while c < c1:
        if not (S1[c] < INF) or not (S2[c] < INF) or not (Mb[c] < INF):
            bad = 1.0
        else:
            m = max(m, Mb[c])
        c += cuda.blockDim.x
    return bmax(sh, m), bmax(sh, bad)


@cuda.jit(device=True)
def group_start(Mb, S1, S2, i, nsplit, G, out, flag, sh):
    """The start of a combine for group ``i``: (the max over its slices, 1.0
    if a slice is bad else 0.0); a bad group's result is NaN and it is
    flagged in ``flag[0]``."""
    m, bad = _slices_max(Mb, S1, S2, i * nsplit, (i + 1) * nsplit, sh)
    if bad > 0.0 and cuda.threadIdx.x == 0:
        out[i] = NAN
        cuda.atomic.max(flag, 0, G - i)
    return m, bad


@cuda.jit(cache=True)
def _k_norm_combine(Mb, Sb, G, nsplit, kind, p, out, flag):
    # one block per group: threads stride over its slices, block reductions
    sh = cuda.shared.array(MAXT, float64)
    tid = cuda.threadIdx.x
    i = cuda.blockIdx.x
    while i < G:
        c0, c1 = i * nsplit, (i + 1) * nsplit
        # Sb is a sum of non-negative terms or NaN: "not < INF" is "is NaN"
        m, bad = group_start(Mb, Sb, Sb, i, nsplit, G, out, flag, sh)
        if bad == 0.0:
            s = 0.0
            if kind != KIND_INF and m > 0.0:
                c = c0 + tid
                while c < c1:
                    if Mb[c] > 0.0:
                        q = Mb[c] / m
                        if kind == KIND_ONE:
                            s += Sb[c] * q
                        elif kind == KIND_TWO:
                            s += Sb[c] * q * q
                        else:
                            s += Sb[c] * q ** p
                    c += cuda.blockDim.x
            s = bsum(sh, s)
            if tid == 0:
                r = m
                if kind != KIND_INF and m > 0.0:
                    if kind == KIND_ONE:
                        r = m * s
                    elif kind == KIND_TWO:
                        r = m * math.sqrt(s)
                    else:
                        r = m * s ** (1.0 / p)
                out[i] = r
                if not (out[i] < INF):
                    # finite data whose norm overflows (float64, or the output
                    # dtype): flagged like bad data; the caller tells them apart
                    cuda.atomic.max(flag, 0, G - i)
                if r == 0.0:
                    cuda.atomic.max(flag, 1, G - i)
        i += cuda.gridDim.x


def group_norms(x, p, out_dtype=None):
    """Lp norms of the rows of a (G, n) device array: (device array of G norms,
    first group with NaN/Inf data or an overflowing norm (its norm is then NaN
    or Inf respectively) or G, first zero group or G).  ``out_dtype=None``:
    the norms are used within the caller only (a float64 scratch buffer,
    valid until this thread's next call)."""
    G, n = x.shape
    out = scratch("norm.out", (G,)) if out_dtype is None else cuda.device_array(G, dtype=out_dtype)
    if G == 0:
        return out, G, G
    if n == 0:
        fill(out.reshape(G, 1), 0.0)
        return out, G, 0
    fl = flags()
    kind = norm_kind(p)
    nt, nsplit = split(n)
    Mb = scratch("norm.M", (G * nsplit,))
    Sb = scratch("norm.S", (G * nsplit,))
    single = x.dtype == np.float32 and kind in (KIND_ONE, KIND_TWO)
    pe = x.dtype.type(p if kind != KIND_INF else 1.0)
    s = stream()
    _k_powsum[G * nsplit, nt, s](x, kind, pe, single, nsplit, Mb, Sb)
    bl, t = combine_grid(G, nsplit)
    _k_norm_combine[bl, t, s](Mb, Sb, G, nsplit, kind, float(p), out, fl)
    return (out,) + read_flags(fl, G)


def group_max(x):
    """Row maxima of |x| (float64 scratch, device) and the first bad / zero group."""
    return group_norms(x, math.inf)



# The per-row writing kernels run one block per slice of a row (as the
# reductions do), so the row index is known per block: no division per element.
@cuda.jit(cache=True)
def _k_scale(x, nrm, out, nsplit):
    """out[i, :] = x[i, :] * (1 / nrm[i]) (0 for a zero group), formed in float64."""
    i, j0, j1 = _slice(x.shape[1], nsplit)
    if i >= x.shape[0]:
        return
    s = nrm[i]
    # a subnormal norm has no finite reciprocal: lift both by 2**1074 (exact)
    tiny = s < TINY
    f = 1.0 / (math.ldexp(s, 1074) if tiny else s) if s != 0.0 else 0.0
    j = j0 + cuda.threadIdx.x
    while j < j1:
        v = float64(x[i, j])
        out[i, j] = (math.ldexp(v, 1074) if tiny else v) * f
        j += cuda.blockDim.x


def scale_rows(x, nrm, out):
    """``out = x / nrm[:, None]`` (rows with nrm == 0 become 0); ``out`` may be ``x``."""
    if x.size:
        bl, t, ns = rows_grid(*x.shape)
        _k_scale[bl, t, stream()](x, nrm, out, ns)
    return out
