"""Hoyer sparsity of the rows on the GPU (``kernels/hoyer.py``), one launch:
per slice Mb, S1 = sum |x|/Mb, S2 = sum (x/Mb)^2 (float32: unscaled, one
pass), combined by the group's last block (``_reduce.last_block``); a group
of one slice is finished by its block's first thread.  The loop loads four
entries a trip (``_reduce.load4``)."""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64, int32

from ._launch import MAXT, counters, flags, launcher, read_flags, scratch, split, stream
from ._reduce import block_slice as _slice, bsum, last_block, load4
from .norm import _slice_max, group_start, slice_bad

INF = math.inf
NAN = math.nan


@cuda.jit(cache=True)
def _k_hoyer(x, scaled, nsplit, Mb, S1, S2, cnt, n, out, flag):
    sh = cuda.shared.array(MAXT, float64)
    last = cuda.shared.array(1, int32)
    g, j0, j1 = _slice(x.shape[1], nsplit)
    if g >= x.shape[0]:
        return
    tid = cuda.threadIdx.x
    b = cuda.blockIdx.x
    G = x.shape[0]
    m = 1.0
    done = False
    if scaled:
        m = _slice_max(x, g, j0, j1, sh)
        if not (0.0 < m < INF):
            if tid == 0:
                Mb[b] = m
                S1[b] = 0.0 if m == 0.0 else NAN
                S2[b] = S1[b]
            done = True
    if not done:
        s1 = 0.0
        s2 = 0.0
        nt = cuda.blockDim.x
        j = j0 + tid
        while j < j1:  # four entries a trip (load4), summed in the one-entry order
            xa, xb, xc, xd = load4(x, g, j, nt, j1)
            s1, s2 = _terms(xa, scaled, m, s1, s2)
            if j + nt < j1:
                s1, s2 = _terms(xb, scaled, m, s1, s2)
                if j + 2 * nt < j1:
                    s1, s2 = _terms(xc, scaled, m, s1, s2)
                    if j + 3 * nt < j1:
                        s1, s2 = _terms(xd, scaled, m, s1, s2)
            j += 4 * nt
        t1 = bsum(sh, s1)
        t2 = bsum(sh, s2)
        if tid == 0:
            Mb[b] = m
            S1[b] = t1
            S2[b] = t2
    if nsplit == 1:  # the slice is the group: thread 0 finishes it (it wrote Mb, S1, S2;
        # a zero slice wrote zero sums)
        if tid == 0 and not slice_bad(Mb[b], S1[b], S2[b], g, G, out, flag):
            _hoyer_out(out, g, n, S1[b], S2[b])
        return
    if not last_block(cnt, g, nsplit, last):
        return
    c0 = g * nsplit
    m, bad = group_start(Mb, S1, S2, g, nsplit, G, out, flag, sh)
    if bad == 0.0:
        s1 = 0.0
        s2 = 0.0
        if m > 0.0:
            c = c0 + tid
            while c < c0 + nsplit:
                r = Mb[c] / m
                s1 += S1[c] * r
                s2 += S2[c] * r * r
                c += cuda.blockDim.x
        s1 = bsum(sh, s1)
        s2 = bsum(sh, s2)
        if tid == 0:
            _hoyer_out(out, g, n, s1, s2)


@cuda.jit(device=True, inline="always")
def _terms(v, scaled, m, s1, s2):
    """One entry ``v`` added to the sums of |x| / m and (x / m)^2 (the
    unscaled float32 pass divides by nothing: a float64 division is a call)."""
    d = abs(float64(v))
    if scaled:
        d = d / m
    return s1 + d, s2 + d * d


@cuda.jit(device=True)
def _hoyer_out(out, g, n, s1, s2):
    """out[g] from the group's sums of |x| and x^2 (scaled alike)."""
    if s2 == 0.0:
        out[g] = 1.0  # all-zero group: a dead neuron, maximally sparse
    else:
        sn = math.sqrt(float64(n))
        h = (sn - math.sqrt(s1 * s1 / s2)) / (sn - 1.0)
        out[g] = min(1.0, max(0.0, h))


_hoyer_launch = launcher(_k_hoyer)


def hoyer_sums(x, out_dtype):
    """Hoyer sparsity of the rows of a (G, n >= 2) device array; (result, first bad group)."""
    G, n = x.shape
    out = cuda.device_array(G, dtype=out_dtype)
    if G == 0:
        return out, G
    fl = flags()
    nt, nsplit = split(n)
    Mb = scratch("hoyer.M", (G * nsplit,))
    S1 = scratch("hoyer.S1", (G * nsplit,))
    S2 = scratch("hoyer.S2", (G * nsplit,))
    cnt = counters("hoyer.cnt", G)
    _hoyer_launch(G * nsplit, nt, stream(), x, x.dtype != np.float32, nsplit, Mb, S1, S2, cnt,
                  n, out, fl)
    return out, read_flags(fl, G)[0]
