"""The duality maps' elementwise signed power."""
from __future__ import annotations

import numpy as np
from numba import njit

from ._dispatch import CHUNK, TaskKernel, n_chunks, spow
from ._pow32 import FASTMATH



# out = sign(x) |x|^e elementwise on flat arrays; returns a per-task flag that
# is NaN where the input held NaN/Inf.
@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def _signed_pow_task(t, x, e, out, bad):
    j0 = t * CHUNK
    j1 = min(x.size, j0 + CHUNK)
    xs = x[j0:j1]
    os = out[j0:j1]
    ok = True
    for j in range(xs.size):
        v = xs[j]
        a = abs(v)
        ok &= a < np.inf
        r = spow(a, e)
        os[j] = -r if v < 0 else r
    bad[t] = 0.0 if ok else 1.0


_signed_pow = TaskKernel(_signed_pow_task)


def signed_pow(x, e, out):
    """``out = sign(x) * |x| ** e`` on 1-D contiguous arrays; returns the first
    flat index holding NaN/Inf, or -1."""
    nt = n_chunks(x.size) if x.size else 0
    bad = np.zeros(nt)
    if nt:
        _signed_pow(nt, x.size, x, float(e), out, bad)
    if np.all(bad == 0.0):
        return -1
    return int(np.flatnonzero(~np.isfinite(x))[0])  # the error path only

