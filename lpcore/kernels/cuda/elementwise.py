"""Writing passes on the GPU (grid-stride loops); they run after validation.

Contract as ``lpcore/kernels/elementwise.py``.  Also the layout kernels:
``gather`` copies any strided N-d device array (with its axes permuted) into
the C-contiguous (G, n) layout the other kernels use, converting the dtype
on the way; ``scatter`` is its inverse, writing into a strided ``out``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64

from ._launch import block_slice, flags, grid1d, read_flags, rows_grid

INF = math.inf
TINY = 2.2250738585072014e-308  # the smallest normal float64


# The per-row writing kernels run one block per slice of a row (as the
# reductions do), so the row index is known per block: no division per element.
@cuda.jit(cache=True)
def _k_scale(x, nrm, out, nsplit):
    """out[i, :] = x[i, :] * (1 / nrm[i]) (0 for a zero group), formed in float64."""
    i, j0, j1 = block_slice(x.shape[1], nsplit)
    if i >= x.shape[0]:
        return
    s = nrm[i]
    # a subnormal norm has no finite reciprocal: lift both by 2**1074 (exact)
    tiny = s < TINY
    f = 1.0 / (math.ldexp(s, 1074) if tiny else s) if s != 0.0 else 0.0
    j = j0 + cuda.threadIdx.x
    while j < j1:
        v = float64(x[i, j])
        out[i, j] = (math.ldexp(v, 1074) if tiny else v) * f
        j += cuda.blockDim.x


def scale_rows(x, nrm, out):
    """``out = x / nrm[:, None]`` (rows with nrm == 0 become 0); ``out`` may be ``x``."""
    if x.size:
        bl, t, ns = rows_grid(*x.shape)
        _k_scale[bl, t](x, nrm, out, ns)
    return out


@cuda.jit(cache=True)
def _k_tangent_write(w, g, mw, coef, e, out, nsplit):
    i, j0, j1 = block_slice(w.shape[1], nsplit)
    if i >= w.shape[0]:
        return
    mt = w.dtype.type(mw[i])
    c = coef[i]
    j = j0 + cuda.threadIdx.x
    while j < j1:
        wj = w[i, j]
        nu = float64(math.pow(abs(wj) / mt, e))
        if wj < 0:
            nu = -nu
        out[i, j] = float64(g[i, j]) - c * nu
        j += cuda.blockDim.x


def tangent_write(w, g, mw, coef, p, out):
    """``out = g - coef[i] * sign(w) (|w| / mw)^(p-1)``."""
    if w.size:
        bl, t, ns = rows_grid(*w.shape)
        _k_tangent_write[bl, t](w, g, mw, coef, w.dtype.type(p - 1.0), out, ns)
    return out


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
    _k_signed_pow[bl, t](x, x.dtype.type(e), out, fl)
    i = read_flags(fl, x.size)[0]
    return -1 if i >= x.size else i


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
        _k_add[bl, t](a, b, out, ns)
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
        _k_fill[bl, t](out, out.dtype.type(v), ns)
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
        _k_gather[bl, t](src_flat, tuple(np.int64(s) for s in shape),
                         tuple(np.int64(s) for s in strides), dst)
    return dst


def scatter(src, dst_flat, shape, strides):
    """The strided array described by (shape, element strides) <- src (G, n)."""
    if src.size:
        bl, t = grid1d(src.size)
        _k_scatter[bl, t](src, dst_flat, tuple(np.int64(s) for s in shape),
                          tuple(np.int64(s) for s in strides))
    return dst_flat
