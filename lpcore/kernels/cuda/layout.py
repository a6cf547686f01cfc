"""Layout kernels on the GPU: ``add`` and ``fill`` (as ``kernels/layout.py``),
and the strided copies the host gets from NumPy: ``gather`` copies any
strided N-d device array (with its axes permuted) into the C-contiguous
(G, n) layout the other kernels use, converting the dtype on the way;
``scatter`` is its inverse, writing into a strided ``out``.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from ._launch import grid1d, stream


@cuda.jit(cache=True)
def _k_add(a, b, out):
    k = cuda.grid(1)
    while k < a.size:
        i, j = divmod(k, a.shape[1])
        out[i, j] = a[i, j] + b[i, j]
        k += cuda.gridsize(1)


def add(a, b, out):
    """``out = a + b`` on (G, n) device arrays."""
    if a.size:
        bl, t = grid1d(a.size)
        _k_add[bl, t, stream()](a, b, out)
    return out


@cuda.jit(cache=True)
def _k_fill(out, v):
    k = cuda.grid(1)
    while k < out.size:
        out[k // out.shape[1], k % out.shape[1]] = v
        k += cuda.gridsize(1)


def fill(out, v):
    """Fill a (G, n) device array with ``v``; returns it."""
    if out.size:
        bl, t = grid1d(out.size)
        _k_fill[bl, t, stream()](out, out.dtype.type(v))
    return out


# ---------------------------------------------------------------------------
# layout: flat element k of the C-ordered (permuted) index space sits at
# src_flat[sum_d idx_d * strides_d]; shape/strides are tuples (one compiled
# specialisation per number of dimensions)
@cuda.jit(device=True)
def _offset(k, shape, strides):
    off = 0
    r = k
    for d in range(len(shape) - 1, -1, -1):
        q = r // shape[d]
        off += (r - q * shape[d]) * strides[d]
        r = q
    return off


@cuda.jit(cache=True)
def _k_strided(flat, dense, shape, strides, to_dense):
    """Flat element k of the index space: ``dense`` (G, n) at k <-> ``flat`` at
    its strided offset (``to_dense``: gather, else scatter)."""
    n = dense.shape[1]
    k = cuda.grid(1)
    while k < dense.size:
        i = k // n
        off = _offset(k, shape, strides)
        if to_dense:
            dense[i, k - i * n] = flat[off]
        else:
            flat[off] = dense[i, k - i * n]
        k += cuda.gridsize(1)


def gather(src_flat, shape, strides, dst):
    """dst (G, n) <- the strided array described by (shape, element strides)."""
    _strided(src_flat, dst, shape, strides, True)
    return dst


def scatter(src, dst_flat, shape, strides):
    """The strided array described by (shape, element strides) <- src (G, n)."""
    _strided(dst_flat, src, shape, strides, False)
    return dst_flat


def _strided(flat, dense, shape, strides, to_dense):
    if dense.size:
        bl, t = grid1d(dense.size)
        _k_strided[bl, t, stream()](flat, dense, tuple(np.int64(s) for s in shape),
                                    tuple(np.int64(s) for s in strides), to_dense)
