"""Semi-pruning's drop rule on the GPU: the twin of :mod:`lpcore.kernels.topology`.

One block per group (grid-stride over the groups): the active entries' sum
of ``|w|`` and their count in one reduction tree, the threshold, then the new
mask row.  The number of dropped connections and the first bad group are
accumulated on the device and read back as two integers, the call's one
copy to the host: a decision copies scalars, never a mask.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64

from ._launch import MAXT, config, flags, scratch, stream, threads_for, to_host
from ._reduce import bmax, bsum, bsum2

INF = math.inf
NAN = math.nan
#: shared memory for two block reductions at once (bsum2)
MAXT2 = 2 * MAXT


@cuda.jit(cache=True)
def _k_drop(w, m, h, revive, out, tau, flag):
    sh = cuda.shared.array(MAXT2, float64)
    G = w.shape[0]
    n = w.shape[1]
    tid = cuda.threadIdx.x
    i = cuda.blockIdx.x
    while i < G:
        s = 0.0
        c = 0.0
        bad = 0.0
        j = tid
        while j < n:
            a = abs(float64(w[i, j]))
            if m[i, j]:
                s += a
                c += 1.0
            elif revive and not a < INF:
                bad = 1.0
            j += cuda.blockDim.x
        s, c = bsum2(sh, s, c)
        bad = bmax(sh, bad)
        if c == 0.0:  # nothing active: the group is left alone, latent values unread
            j = tid
            while j < n:
                out[i, j] = m[i, j]
                j += cuda.blockDim.x
            if tid == 0:
                tau[i] = 0.0
        elif bad != 0.0 or not s < INF:
            if tid == 0:  # a non-finite weight taking part; the out row is unset
                tau[i] = NAN
                cuda.atomic.max(flag, 0, G - i)
        else:
            t = h * s / c
            dropped = 0.0
            j = tid
            while j < n:
                on = (m[i, j] or revive) and abs(float64(w[i, j])) >= t
                out[i, j] = on
                if m[i, j] and not on:
                    dropped += 1.0
                j += cuda.blockDim.x
            dropped = bsum(sh, dropped)
            if tid == 0:
                tau[i] = t
                cuda.atomic.add(flag, 1, int(dropped))
        i += cuda.gridDim.x


def drop_rows(w, m, h, out, revive=False):
    """The contract of :func:`lpcore.kernels.topology.drop_rows` on (G, n)
    device arrays: ``(tau, first bad row or G, connections dropped)``, with
    ``tau`` a float64 device array (the thresholds, NaN for a bad row;
    scratch that the next call reuses)."""
    G, n = w.shape
    if w.size == 0:  # no entries: every threshold 0, nothing to launch
        return cuda.to_device(np.zeros(G)), G, 0
    tau = scratch("drop_tau", (G,))
    fl = flags()  # [G - first bad row, connections dropped]
    _k_drop[max(1, min(G, config.max_blocks)), threads_for(n), stream()](
        w, m, float(h), bool(revive), out, tau, fl)
    f = to_host(fl)
    return tau[:G], (G - int(f[0]) if f[0] else G), int(f[1])
