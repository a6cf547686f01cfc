"""Per-group reductions on the GPU: max-scaled r-norms, Hoyer sums, tangent sums.

Contract as ``lpcore/kernels/reduce.py``: (G, n) C-contiguous float32/float64
device arrays in, float64 per-group results out, NaN for a group holding NaN
or Inf; additionally the index of the first such group (and of the first
all-zero group) is recorded on the device with an atomic min, so the public
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

from ..reduce import KIND_INF, KIND_ONE, KIND_TWO, norm_kind
from ._launch import MAXT, block_slice as _slice, bmax, bsum, flags, grid1d, maxnan, split

INF = math.inf
NAN = math.nan


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
def _norm_combine_one(i, Mb, Sb, nsplit, kind, p, out, flag):
    m = 0.0
    bad = False
    for c in range(i * nsplit, (i + 1) * nsplit):
        if not (Sb[c] == Sb[c]) or not (Mb[c] < INF):
            bad = True
        else:
            m = max(m, Mb[c])
    if bad:
        out[i] = NAN
        cuda.atomic.min(flag, 0, i)
        return
    r = m
    if kind != KIND_INF and m > 0.0:
        s = 0.0
        for c in range(i * nsplit, (i + 1) * nsplit):
            if Mb[c] > 0.0:
                q = Mb[c] / m
                if kind == KIND_ONE:
                    s += Sb[c] * q
                elif kind == KIND_TWO:
                    s += Sb[c] * q * q
                else:
                    s += Sb[c] * q ** p
        if kind == KIND_ONE:
            r = m * s
        elif kind == KIND_TWO:
            r = m * math.sqrt(s)
        else:
            r = m * s ** (1.0 / p)
    out[i] = r
    if r == 0.0:
        cuda.atomic.min(flag, 1, i)


@cuda.jit(cache=True)
def _k_norm_combine(Mb, Sb, nsplit, kind, p, out, flag):
    i = cuda.grid(1)
    while i < out.size:
        _norm_combine_one(i, Mb, Sb, nsplit, kind, p, out, flag)
        i += cuda.gridsize(1)


def group_norms(x, p, out_dtype=np.float64):
    """Lp norms of the rows of a (G, n) device array: (device array of G norms,
    first group with NaN/Inf or G, first zero group or G)."""
    G, n = x.shape
    out = cuda.device_array(G, dtype=out_dtype)
    if G == 0:
        return out, G, G
    fl = flags(G)
    if n == 0:
        out[:] = 0
        return out, G, 0
    kind = norm_kind(p)
    nt, nsplit = split(n)
    Mb = cuda.device_array(G * nsplit)
    Sb = cuda.device_array(G * nsplit)
    single = x.dtype == np.float32 and kind in (KIND_ONE, KIND_TWO)
    pe = x.dtype.type(p if kind != KIND_INF else 1.0)
    _k_powsum[G * nsplit, nt](x, kind, pe, single, nsplit, Mb, Sb)
    bl, t = grid1d(G)
    _k_norm_combine[bl, t](Mb, Sb, nsplit, kind, float(p), out, fl)
    f = fl.copy_to_host()
    return out, int(f[0]), int(f[1])


def group_max(x):
    """Row maxima of |x| (float64, device) and the first bad / zero group."""
    return group_norms(x, math.inf)


# ---------------------------------------------------------------------------
# Hoyer: per slice Mb, S1 = sum |x|/Mb, S2 = sum (x/Mb)^2 (float32: unscaled)
@cuda.jit(cache=True)
def _k_hoyer(x, scaled, nsplit, Mb, S1, S2):
    sh = cuda.shared.array(MAXT, float64)
    g, j0, j1 = _slice(x.shape[1], nsplit)
    if g >= x.shape[0]:
        return
    tid = cuda.threadIdx.x
    b = cuda.blockIdx.x
    m = 1.0
    if scaled:
        m = _slice_max(x, g, j0, j1, sh)
        if not (0.0 < m < INF):
            if tid == 0:
                Mb[b] = m
                S1[b] = 0.0 if m == 0.0 else NAN
                S2[b] = S1[b]
            return
    mt = x.dtype.type(m)
    s1 = 0.0
    s2 = 0.0
    j = j0 + tid
    while j < j1:
        d = float64(abs(x[g, j]) / mt)
        s1 += d
        s2 += d * d
        j += cuda.blockDim.x
    t1 = bsum(sh, s1)
    t2 = bsum(sh, s2)
    if tid == 0:
        Mb[b] = m
        S1[b] = t1
        S2[b] = t2


@cuda.jit(device=True)
def _hoyer_combine_one(i, Mb, S1, S2, nsplit, n, out, flag):
    m = 0.0
    bad = False
    for c in range(i * nsplit, (i + 1) * nsplit):
        if not (S1[c] + S2[c] < INF) or not (Mb[c] < INF):
            bad = True
        else:
            m = max(m, Mb[c])
    if bad:
        out[i] = NAN
        cuda.atomic.min(flag, 0, i)
        return
    s1 = 0.0
    s2 = 0.0
    if m > 0.0:
        for c in range(i * nsplit, (i + 1) * nsplit):
            r = Mb[c] / m
            s1 += S1[c] * r
            s2 += S2[c] * r * r
    if s2 == 0.0:
        out[i] = 1.0  # all-zero group: a dead neuron, maximally sparse
    else:
        sn = math.sqrt(float64(n))
        h = (sn - math.sqrt(s1 * s1 / s2)) / (sn - 1.0)
        out[i] = min(1.0, max(0.0, h))


@cuda.jit(cache=True)
def _k_hoyer_combine(Mb, S1, S2, nsplit, n, out, flag):
    i = cuda.grid(1)
    while i < out.size:
        _hoyer_combine_one(i, Mb, S1, S2, nsplit, n, out, flag)
        i += cuda.gridsize(1)


def hoyer_sums(x, out_dtype):
    """Hoyer sparsity of the rows of a (G, n >= 2) device array; (result, first bad group)."""
    G, n = x.shape
    out = cuda.device_array(G, dtype=out_dtype)
    if G == 0:
        return out, G
    fl = flags(G)
    nt, nsplit = split(n)
    Mb = cuda.device_array(G * nsplit)
    S1 = cuda.device_array(G * nsplit)
    S2 = cuda.device_array(G * nsplit)
    _k_hoyer[G * nsplit, nt](x, x.dtype != np.float32, nsplit, Mb, S1, S2)
    bl, t = grid1d(G)
    _k_hoyer_combine[bl, t](Mb, S1, S2, nsplit, n, out, fl)
    return out, int(fl.copy_to_host()[0])


# ---------------------------------------------------------------------------
# tangent sums with nu' = sign(w) (|w| / mw)^(p-1):  A = <nu', g>, B = <nu', nu'>
@cuda.jit(cache=True)
def _k_tangent(w, g, mw, e, nsplit, A, B):
    sh = cuda.shared.array(MAXT, float64)
    i, j0, j1 = _slice(w.shape[1], nsplit)
    if i >= w.shape[0]:
        return
    mt = w.dtype.type(mw[i])
    a = 0.0
    bb = 0.0
    j = j0 + cuda.threadIdx.x
    while j < j1:
        wj = w[i, j]
        nu = float64(math.pow(abs(wj) / mt, e))
        if wj < 0:
            nu = -nu
        a += nu * float64(g[i, j])
        bb += nu * nu
        j += cuda.blockDim.x
    ta = bsum(sh, a)
    tb = bsum(sh, bb)
    if cuda.threadIdx.x == 0:
        A[cuda.blockIdx.x] = ta
        B[cuda.blockIdx.x] = tb


@cuda.jit(device=True)
def _tangent_combine_one(i, A, B, nsplit, coef, flag):
    a = 0.0
    b = 0.0
    for c in range(i * nsplit, (i + 1) * nsplit):
        a += A[c]
        b += B[c]
    if not (abs(a) < INF):
        cuda.atomic.min(flag, 0, i)
    coef[i] = a / b


@cuda.jit(cache=True)
def _k_tangent_combine(A, B, nsplit, coef, flag):
    i = cuda.grid(1)
    while i < coef.size:
        _tangent_combine_one(i, A, B, nsplit, coef, flag)
        i += cuda.gridsize(1)


def tangent_coef(w, g, mw, p):
    """``<nu', g> / <nu', nu'>`` per row (device) and the first group where g is bad."""
    G, n = w.shape
    coef = cuda.device_array(G)
    fl = flags(G)
    nt, nsplit = split(n)
    A = cuda.device_array(G * nsplit)
    B = cuda.device_array(G * nsplit)
    _k_tangent[G * nsplit, nt](w, g, mw, w.dtype.type(p - 1.0), nsplit, A, B)
    bl, t = grid1d(G)
    _k_tangent_combine[bl, t](A, B, nsplit, coef, fl)
    return coef, int(fl.copy_to_host()[0])
