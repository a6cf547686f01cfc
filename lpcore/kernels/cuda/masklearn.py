"""The learned-mask kernels on the GPU: the twins of
:mod:`lpcore.kernels.masklearn`.

SCL's score step runs one block per row (grid-stride over the rows): the
product's non-finite count, sum of squares and maximum in one pass and one
reduction tree each, the rare max-scaled passes where the squares over- or
underflow, then the new scores.  The concave step and the rest are
elementwise grid-stride kernels.  Each call copies at most a few integers
(the first bad rows or the counts that decide an error) or one selection state to the host; the
scores stay on the device.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64

from ._launch import MAXT, config, flags, launch1d, scratch, stream, threads_for, to_host
from ._pointers import cast_like
from ._reduce import bmax, bmax2, bsum, bsum2
from .topology import kth_key

INF = math.inf
MAXT2 = 2 * MAXT


@cuda.jit(device=True)
def _count2(cnt, a, b):
    """A thread's two counts added to ``cnt[0]`` and ``cnt[1]``."""
    if a:
        cuda.atomic.add(cnt, 0, a)
    if b:
        cuda.atomic.add(cnt, 1, b)


@cuda.jit(device=True)
def _prod(a, b, sa, sb, scaled):
    """``a * b`` in the data's precision, or (``scaled``) of the max-scaled
    factors in float64."""
    if scaled:
        return (float64(a) / sa) * (float64(b) / sb)
    return float64(a * b)


@cuda.jit(cache=True)
def _k_score(s, g, th, lr, out, cnt):
    sh = cuda.shared.array(MAXT2, float64)
    G, n = s.shape
    tid, nt = cuda.threadIdx.x, cuda.blockDim.x
    for i in range(cuda.blockIdx.x, G, cuda.gridDim.x):
        # the non-finite counts, the sum of squares and the max of the product
        bg, bt, ss, top = 0.0, 0.0, 0.0, 0.0
        for j in range(tid, n, nt):
            if not abs(float64(g[i, j])) < INF:
                bg += 1.0
            if not abs(float64(th[i, j])) < INF:
                bt += 1.0
            p = _prod(g[i, j], th[i, j], 1.0, 1.0, False)
            ss += p * p
            top = max(top, abs(p))
        bg, bt = bsum2(sh, bg, bt)
        if bg != 0.0 or bt != 0.0:
            if tid == 0:  # the first bad row of each: the largest G - i
                if bg != 0.0:
                    cuda.atomic.max(cnt, 0, G - i)
                if bt != 0.0:
                    cuda.atomic.max(cnt, 1, G - i)
            continue
        ss = bsum(sh, ss)
        top = bmax(sh, top)
        sg, st, eps = 1.0, 1.0, 1e-12
        scaled = not top < INF  # the product overflows its dtype
        if scaled:  # both factors max-scaled per row, in float64
            sg, st, eps = 0.0, 0.0, 1e-300
            for j in range(tid, n, nt):
                sg = max(sg, abs(float64(g[i, j])))
                st = max(st, abs(float64(th[i, j])))
            sg, st = bmax2(sh, sg, st)
            sg = sg if sg > 0.0 else 1.0
            st = st if st > 0.0 else 1.0
            ss, top = 0.0, 0.0
            for j in range(tid, n, nt):
                p = _prod(g[i, j], th[i, j], sg, st, True)
                ss += p * p
                top = max(top, abs(p))
            ss = bsum(sh, ss)
            top = bmax(sh, top)
        rms = math.sqrt(ss / n)
        if not rms < INF or (rms < 1e-150 and top > 0.0):  # max-scaled squares
            ss = 0.0
            for j in range(tid, n, nt):
                q = _prod(g[i, j], th[i, j], sg, st, scaled) / top
                ss += q * q
            rms = top * math.sqrt(bsum(sh, ss) / n)
        scale = rms if rms > eps else 1.0
        for j in range(tid, n, nt):
            # the normalised gradient rounded to the data's dtype, times lr in it
            q = cast_like(_prod(g[i, j], th[i, j], sg, st, scaled) / scale, g[i, j])
            out[i, j] = s[i, j] - float64(cast_like(cast_like(lr, q) * q, q))


def score_step(s, g, th, lr, out):
    """The contract of :func:`lpcore.kernels.masklearn.score_step` on (G, n)
    device arrays (the two rows are the one copy to the host)."""
    G, n = s.shape
    if g is None:  # a copy (both C-contiguous)
        launch1d(_k_scores, s.size, s.reshape(s.size), 0.0, False, out.reshape(out.size))
        return G, G
    if s.size == 0:
        return G, G
    cnt = flags()
    _k_score[max(1, min(G, config.max_blocks)), threads_for(n), stream()](
        s, g, th, float(lr), out, cnt)
    c = to_host(cnt)
    return G - int(c[0]), G - int(c[1])


@cuda.jit(cache=True)
def _k_concave(m, g, th, has_g, lr, lam, kind_log, eps, logc, out, cnt):
    G = m.shape[0]
    cols = m.shape[1]
    e = cuda.grid(1)
    while e < m.size:  # the first bad row of each: the largest G - i
        i = e // cols
        j = e - i * cols
        mv = m[i, j]
        if not (mv >= 0.0 and mv <= 1.0):
            cuda.atomic.max(cnt, 0, G - i)
        d = lam * (1.0 / ((eps + mv) * logc) if kind_log else 1.0)
        if has_g:
            a = float64(g[i, j])
            b = float64(th[i, j])
            if not abs(a) < INF:
                cuda.atomic.max(cnt, 1, G - i)
            if not abs(b) < INF:
                cuda.atomic.max(cnt, 2, G - i)
            d = d + a * b
        v = mv - lr * d
        out[i, j] = min(max(v, 0.0), 1.0)
        e += cuda.gridsize(1)


def concave_step(m, g, th, lr, lam, kind_log, eps, out):
    """The contract of :func:`lpcore.kernels.masklearn.concave_step` on (G, n)
    device arrays (``out`` is unset when a row is bad; the rows are the one
    copy)."""
    G = m.shape[0]
    if m.size == 0:
        return G, G, G
    cnt = flags(3)
    has_g = g is not None
    launch1d(_k_concave, m.size, m, g if has_g else m, th if has_g else m, has_g, float(lr),
             float(lam), bool(kind_log), float(eps), math.log1p(1.0 / eps), out, cnt)
    c = to_host(cnt)
    return G - int(c[0]), G - int(c[1]), G - int(c[2])


@cuda.jit(cache=True)
def _k_signs(a, keys, nonneg, cnt):
    """keys = |a|, nonneg = not (a < 0); counts the negative and the
    non-finite entries."""
    e = cuda.grid(1)
    neg = 0
    bad = 0
    while e < a.size:
        v = a[e]
        keys[e] = abs(v)
        nonneg[e] = not v < 0.0
        if v < 0.0:
            neg += 1
        if not abs(v) < INF:
            bad += 1
        e += cuda.gridsize(1)
    _count2(cnt, neg, bad)


def _signs(a):
    N = a.size
    keys = scratch("masklearn_keys", (N,))[:N]
    nonneg = scratch("masklearn_nonneg", (N,), np.bool_)[:N]
    cnt = flags()
    launch1d(_k_signs, N, a, keys, nonneg, cnt)
    c = to_host(cnt)
    return keys, nonneg, int(c[0]), int(c[1])


def nonfinite_count(a):
    """The number of NaN or Inf entries of a 1-D float device array."""
    if a.size == 0:
        return 0
    return _signs(a)[3]


def kth_smallest(a, k):
    """The contract of :func:`lpcore.kernels.masklearn.kth_smallest` on a 1-D
    float64 device array: the negatives counted, then the radix select's
    key passes among the negatives (the ``k``-th largest magnitude) or among
    the rest (the ``k - negatives``-th smallest); two copies of integers."""
    keys, nonneg, neg, _ = _signs(a)
    if k <= neg:
        return -kth_key(keys, nonneg, k, active=False)
    return kth_key(keys, nonneg, k - neg, active=True)


@cuda.jit(cache=True)
def _k_count_at_most(a, v, c, cnt):
    e = cuda.grid(1)
    n0 = 0
    n1 = 0
    while e < a.size:
        if a[e] <= v:
            n0 += 1
        if a[e] - c <= 0.0:
            n1 += 1
        e += cuda.gridsize(1)
    _count2(cnt, n0, n1)


def count_at_most(a, v, c):
    """The contract of :func:`lpcore.kernels.masklearn.count_at_most` (one copy)."""
    if a.size == 0:
        return 0, 0
    cnt = flags()
    launch1d(_k_count_at_most, a.size, a, float(v), float(c), cnt)
    r = to_host(cnt)
    return int(r[0]), int(r[1])


@cuda.jit(cache=True)
def _k_tiers(m, v, below, tied, cnt):
    e = cuda.grid(1)
    c = 0
    while e < m.size:
        below[e] = m[e] < v
        tied[e] = m[e] == v
        if m[e] < v:
            c += 1
        e += cuda.gridsize(1)
    if c:
        cuda.atomic.add(cnt, 0, c)


def tiers(m, v, below, tied):
    """The contract of :func:`lpcore.kernels.masklearn.tiers` (one copy)."""
    if m.size == 0:
        return 0
    cnt = flags()
    launch1d(_k_tiers, m.size, m, float(v), below, tied, cnt)
    return int(to_host(cnt)[0])


@cuda.jit(cache=True)
def _k_keep(below, tied, tied_kept, out):
    e = cuda.grid(1)
    while e < out.size:
        out[e] = not below[e] and (not tied[e] or tied_kept[e])
        e += cuda.gridsize(1)


def keep_above(below, tied, tied_kept, out):
    """``out = ~below & (~tied | tied_kept)`` on 1-D boolean device arrays."""
    launch1d(_k_keep, out.size, below, tied, tied_kept, out)
    return out


@cuda.jit(cache=True)
def _k_scores(a, c, gate, out):
    """out = a - c, or (``gate``) 1.0 where a > 0, else 0.0."""
    e = cuda.grid(1)
    while e < a.size:
        if gate:
            out[e] = 1.0 if a[e] > 0.0 else 0.0
        else:
            out[e] = a[e] - c
        e += cuda.gridsize(1)


def shift(a, c, out):
    """``out = a - c`` on 1-D float64 device arrays."""
    launch1d(_k_scores, a.size, a, float(c), False, out)
    return out


def positive(s, out):
    """``out = 1.0`` where ``s > 0``, else 0.0 (1-D float64 device arrays)."""
    launch1d(_k_scores, s.size, s, 0.0, True, out)
    return out
