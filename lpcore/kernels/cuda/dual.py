"""The duality maps' elementwise signed power on the GPU (``kernels/dual.py``)."""
from __future__ import annotations

import math

from numba import cuda

from ._launch import flags, grid1d, read_flags, stream

INF = math.inf


@cuda.jit(cache=True)
def _k_signed_pow(x, e, out, flag):
    k = cuda.grid(1)
    while k < x.size:
        v = x[k]
        a = abs(v)
        if not (a < INF):
            cuda.atomic.max(flag, 0, x.size - k)
        r = math.pow(a, e)
        out[k] = -r if v < 0 else r
        k += cuda.gridsize(1)


def signed_pow(x, e, out):
    """``out = sign(x) |x|^e`` on 1-D contiguous device arrays; returns the first
    flat index holding NaN/Inf, or -1."""
    if x.size == 0:
        return -1
    fl = flags()
    bl, t = grid1d(x.size)
    _k_signed_pow[bl, t, stream()](x, x.dtype.type(e), out, fl)
    i = read_flags(fl, x.size)[0]
    return -1 if i >= x.size else i
