"""Hoyer sparsity of the rows on the GPU (``kernels/hoyer.py``): per slice
Mb, S1 = sum |x|/Mb, S2 = sum (x/Mb)^2 (float32: unscaled), then a combine."""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64

from ._launch import (MAXT, block_slice as _slice, bsum, combine_grid, flags, read_flags,
                      scratch, split, stream)
from .norm import _slice_max, group_start

INF = math.inf
NAN = math.nan


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


@cuda.jit(cache=True)
def _k_hoyer_combine(Mb, S1, S2, G, nsplit, n, out, flag):
    sh = cuda.shared.array(MAXT, float64)
    tid = cuda.threadIdx.x
    i = cuda.blockIdx.x
    while i < G:
        c0, c1 = i * nsplit, (i + 1) * nsplit
        m, bad = group_start(Mb, S1, S2, i, nsplit, G, out, flag, sh)
        if bad == 0.0:
            s1 = 0.0
            s2 = 0.0
            if m > 0.0:
                c = c0 + tid
                while c < c1:
                    r = Mb[c] / m
                    s1 += S1[c] * r
                    s2 += S2[c] * r * r
                    c += cuda.blockDim.x
            s1 = bsum(sh, s1)
            s2 = bsum(sh, s2)
            if tid == 0:
                if s2 == 0.0:
                    out[i] = 1.0  # all-zero group: a dead neuron, maximally sparse
                else:
                    sn = math.sqrt(float64(n))
                    h = (sn - math.sqrt(s1 * s1 / s2)) / (sn - 1.0)
                    out[i] = min(1.0, max(0.0, h))
        i += cuda.gridDim.x


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
    s = stream()
    _k_hoyer[G * nsplit, nt, s](x, x.dtype != np.float32, nsplit, Mb, S1, S2)
    bl, t = combine_grid(G, nsplit)
    _k_hoyer_combine[bl, t, s](Mb, S1, S2, G, nsplit, n, out, fl)
    return out, read_flags(fl, G)[0]

