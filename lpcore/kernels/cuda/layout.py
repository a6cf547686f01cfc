"""Layout kernels on the GPU: ``add`` and ``fill`` (as ``kernels/layout.py``),
and the strided copies the host gets from NumPy: ``gather`` copies any
strided N-d device array (with its axes permuted) into the C-contiguous
(G, n) layout the other kernels use, converting the dtype on the way;
``scatter`` is its inverse, writing into a strided ``out``.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from ._launch import grid1d, rows_grid, stream
from ._reduce import block_slice


@cuda.jit(cache=True)
def _k_add(a, b, out, nsplit):
    i, j0, j1 = block_slice(a.shape[1], nsplit)
    if i >= a.shape[0]:
        return
    j = j0 + cuda.threadIdx.x
    while j < j1:
        out[i, j] = a[i, j] + b[i, j]
        j += cuda.blockDim.x


def add(a, b, out):
    """``out = a + b`` on (G, n) device arrays."""
    if a.size:
        bl, t, ns = rows_grid(*a.shape)
        _k_add[bl, t, stream()](a, b, out, ns)
    return out


@cuda.jit(cache=True)
def _k_fill(out, v, nsplit):
    i, j0, j1 = block_slice(out.shape[1], nsplit)
    if i >= out.shape[0]:
        return
    j = j0 + cuda.threadIdx.x
    while j < j1:
        out[i, j] = v
        j += cuda.blockDim.x


def fill(out, v):
    """Fill a (G, n) device array with ``v``; returns it."""
    if out.size:
        bl, t, ns = rows_grid(*out.shape)
        _k_fill[bl, t, stream()](out, out.dtype.type(v), ns)
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
def _k_gather(src, shape, strides, dst):
    n = dst.shape[1]
    k = cuda.grid(1)
    while k < dst.size:
        i = k // n
        dst[i, k - i * n] = src[_offset(k, shape, strides)]
        k += cuda.gridsize(1)


@cuda.jit(cache=True)
def _k_scatter(src, dst, shape, strides):
    n = src.shape[1]
    k = cuda.grid(1)
    while k < src.size:
        i = k // n
        dst[_offset(k, shape, strides)] = src[i, k - i * n]
        k += cuda.gridsize(1)


def gather(src_flat, shape, strides, dst):
    """dst (G, n) <- the strided array described by (shape, element strides)."""
    if dst.size:
        bl, t = grid1d(dst.size)
        _k_gather[bl, t, stream()](src_flat, tuple(np.int64(s) for s in shape),
                                   tuple(np.int64(s) for s in strides), dst)
    return dst


def scatter(src, dst_flat, shape, strides):
    """The strided array described by (shape, element strides) <- src (G, n)."""
    if src.size:
        bl, t = grid1d(src.size)
        _k_scatter[bl, t, stream()](src, dst_flat, tuple(np.int64(s) for s in shape),
                                    tuple(np.int64(s) for s in strides))
    return dst_flat
