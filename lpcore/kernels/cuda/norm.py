"""Lp norms of the rows on the GPU, and the scaling by a norm (``kernels/norm.py``).

Contract as ``lpcore/kernels/norm.py``: (G, n) C-contiguous float32/float64
device arrays in, float64 per-group results out, NaN for a group holding NaN
or Inf; additionally the index of the first such group (and of the first
all-zero group) is recorded on the device with an atomic max of ``G - i``
(see :func:`._launch.flags`), so the public
layer copies two integers to the host to decide whether to raise.

One launch per call: each thread sums its elements in float64, the block
reduces the float64 partials in shared memory (a tree), and the slices of a
group are combined in float64 by the group's last block to finish (an atomic
counter per group), rescaled from each slice's own maximum to the group's;
a group of one slice is finished by its block's first thread, with no
combine (it would scale by 1.0, exactly).
float32 data with p < 8 is read once (|x|^p summed unscaled in float64
cannot overflow); float64 data and p = inf take a max pass and a scaled pass
over each block's slice (the second from cache).  The unscaled float32
powers are float32 powers of the mantissa and of a fraction of two, scaled
by an exact power of two in float64 (:func:`._reduce.pow_wide`: what makes
them safe, at float32's cost; a float64 power made this pass
compute-bound); the scaled ones, ratios <= 1, are in the data's precision
(``powf`` for float32).  Every block-stride loop here loads four entries a
trip before it uses any (:func:`._reduce.load4`), in ``normalize``'s
scaling too.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64, int32

from ..norm import KIND_INF, KIND_ONE, KIND_TWO, norm_kind
from ._launch import MAXT, counters, flags, launcher, read_flags, rows_grid, scratch, split, stream
from ._reduce import (block_slice as _slice, bmax, bsum, last_block, load4, maxnan, pow_like,
                      pow_wide)
from .layout import fill

INF = math.inf
NAN = math.nan
TINY = 2.2250738585072014e-308  # the smallest normal float64



@cuda.jit(device=True)
def _slice_max(x, g, j0, j1, sh):
    m = 0.0
    nt = cuda.blockDim.x
    j = j0 + cuda.threadIdx.x
    while j < j1:  # four entries a trip (past j1: entry j again, harmless to a max)
        a, b, c, d = load4(x, g, j, nt, j1)
        m = maxnan(maxnan(maxnan(maxnan(m, float64(abs(a))), float64(abs(b))),
                          float64(abs(c))), float64(abs(d)))
        j += 4 * nt
    return bmax(sh, m)


@cuda.jit(device=True, inline="always")
def _wide_term(v, p, m, acc):
    """One entry ``v`` of the one-pass float32 sum: (running max, sum of |x|^p)."""
    d = abs(float64(v))
    return maxnan(m, d), acc + pow_wide(d, p, v)


@cuda.jit(device=True, inline="always")
def _scaled_term(v, m, p, acc):
    """One entry ``v`` of the max-scaled sum: acc + (|v| / m)^p."""
    return acc + pow_like(abs(float64(v)) / m, p, v)


# ---------------------------------------------------------------------------
# r-norms in one launch: per slice Mb = max |x| and Sb = sum (|x| / Mb)^r (or,
# for float32 data and p < 8, the unscaled sum with Mb = 1: one pass), then the
# group's last block to finish combines its slices into out[i]
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
def _k_norm(x, kind, p, fast, nsplit, Mb, Sb, cnt, out, flag):
    sh = cuda.shared.array(MAXT, float64)
    last = cuda.shared.array(1, int32)
    g, j0, j1 = _slice(x.shape[1], nsplit)
    if g >= x.shape[0]:
        return
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    b = cuda.blockIdx.x
    G = x.shape[0]
    if fast:
        # float32 |x|^p, p < 8, summed in float64 can overflow nowhere and
        # underflows only for an all-subnormal slice (then the scaled pass
        # below); NaN/Inf propagate into the sum.  One pass over memory, the
        # slice max from the same pass.
        # pow_wide: float32 powers, float64 range ((float32 max)^8 fits).
        # Four entries a trip (load4), summed in the one-entry loop's order
        acc = 0.0
        m = 0.0
        j = j0 + tid
        while j < j1:
            xa, xb, xc, xd = load4(x, g, j, nt, j1)
            m, acc = _wide_term(xa, p, m, acc)
            if j + nt < j1:
                m, acc = _wide_term(xb, p, m, acc)
                if j + 2 * nt < j1:
                    m, acc = _wide_term(xc, p, m, acc)
                    if j + 3 * nt < j1:
                        m, acc = _wide_term(xd, p, m, acc)
            j += 4 * nt
        t = bsum(sh, acc)
        m = bmax(sh, m)
        if tid == 0:
            Mb[b] = 1.0 if m < INF else m
            Sb[b] = t if m < INF else NAN
        if m < INF and (t > 1e-280 or m == 0.0):
            pass  # the unscaled sum is exact enough
        elif m < INF:
            fast = False  # tiny values: redo the slice scaled (rare)
    if not fast:
        m = _slice_max(x, g, j0, j1, sh)
        if not m < INF:
            if tid == 0:
                Mb[b] = m
                Sb[b] = NAN
        elif kind == KIND_INF or m == 0.0:
            if tid == 0:
                Mb[b] = m
                Sb[b] = 0.0
        else:
            acc = 0.0
            j = j0 + tid
            while j < j1:  # four entries a trip, as above
                xa, xb, xc, xd = load4(x, g, j, nt, j1)
                acc = _scaled_term(xa, m, p, acc)
                if j + nt < j1:
                    acc = _scaled_term(xb, m, p, acc)
                    if j + 2 * nt < j1:
                        acc = _scaled_term(xc, m, p, acc)
                        if j + 3 * nt < j1:
                            acc = _scaled_term(xd, m, p, acc)
                j += 4 * nt
            t = bsum(sh, acc)
            if tid == 0:
                Mb[b] = m
                Sb[b] = t
    if nsplit == 1:  # the slice is the group: thread 0 finishes it (it wrote Mb, Sb)
        if tid != 0 or slice_bad(Mb[b], Sb[b], Sb[b], g, G, out, flag):
            return
        m = Mb[b]
        acc = Sb[b]  # (_norm_out reads it only for a finite p and m > 0)
    else:
        if not last_block(cnt, g, nsplit, last):
            return
        # the group's last block: combine its slices (Sb is a sum of non-negative
        # terms or NaN: "not < INF" is "is NaN")
        c0 = g * nsplit
        m, bad = group_start(Mb, Sb, Sb, g, nsplit, G, out, flag, sh)
        if bad != 0.0:
            return
        acc = 0.0
        if kind != KIND_INF and m > 0.0:
            c = c0 + tid
            while c < c0 + nsplit:
                if Mb[c] > 0.0:
                    q = Mb[c] / m
                    if kind == KIND_ONE:
                        acc += Sb[c] * q
                    elif kind == KIND_TWO:
                        acc += Sb[c] * q * q
                    else:
                        acc += Sb[c] * q ** p
                c += cuda.blockDim.x
        acc = bsum(sh, acc)
        if tid != 0:
            return
    _norm_out(out, flag, g, G, kind, p, m, acc)


@cuda.jit(device=True)
def slice_bad(M, S1, S2, i, G, out, flag):
    """A one-slice group's :func:`group_start`: whether its maximum ``M`` or
    a sum is not finite (then its result is NaN and it is flagged)."""
    if not (S1 < INF) or not (S2 < INF) or not (M < INF):
        out[i] = NAN
        cuda.atomic.max(flag, 0, G - i)
        return True
    return False


@cuda.jit(device=True)
def _norm_out(out, flag, g, G, kind, p, m, acc):
    """out[g] from the group's maximum ``m`` and its sum ``acc`` scaled by it;
    an overflowing or zero norm is flagged."""
    r = m
    if kind != KIND_INF and m > 0.0:
        if kind == KIND_ONE:
            r = m * acc
        elif kind == KIND_TWO:
            r = m * math.sqrt(acc)
        else:
            r = m * acc ** (1.0 / p)
    out[g] = r
    if not (out[g] < INF):
        # finite data whose norm overflows (float64, or the output
        # dtype): flagged like bad data; the caller tells them apart
        cuda.atomic.max(flag, 0, G - g)
    if r == 0.0:
        cuda.atomic.max(flag, 1, G - g)


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
    cnt = counters("norm.cnt", G)
    fast = x.dtype == np.float32 and kind != KIND_INF and p < 8.0
    pe = float(p if kind != KIND_INF else 1.0)
    _norm_launch(G * nsplit, nt, stream(), x, kind, pe, fast, nsplit, Mb, Sb, cnt, out, fl)
    return (out,) + read_flags(fl, G)


_norm_launch = launcher(_k_norm)


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
    nt = cuda.blockDim.x
    j = j0 + cuda.threadIdx.x
    while j < j1:  # four entries a trip, all loaded before any is written
        xa, xb, xc, xd = load4(x, i, j, nt, j1)
        _scale_to(out, i, j, xa, tiny, f)
        if j + nt < j1:
            _scale_to(out, i, j + nt, xb, tiny, f)
            if j + 2 * nt < j1:
                _scale_to(out, i, j + 2 * nt, xc, tiny, f)
                if j + 3 * nt < j1:
                    _scale_to(out, i, j + 3 * nt, xd, tiny, f)
        j += 4 * nt


@cuda.jit(device=True, inline="always")
def _scale_to(out, i, j, x, tiny, f):
    v = float64(x)
    out[i, j] = (math.ldexp(v, 1074) if tiny else v) * f


def scale_rows(x, nrm, out):
    """``out = x / nrm[:, None]`` (rows with nrm == 0 become 0); ``out`` may be ``x``."""
    if x.size:
        bl, t, ns = rows_grid(*x.shape)
        _k_scale[bl, t, stream()](x, nrm, out, ns)
    return out
