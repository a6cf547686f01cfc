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

from ._launch import flags, grid1d

INF = math.inf


@cuda.jit(cache=True)
def _k_scale(x, nrm, out):
    """out[i, :] = x[i, :] / nrm[i] (0 for a zero group), formed in float64."""
    n = x.shape[1]
    k = cuda.grid(1)
    while k < x.size:
        i = k // n
        j = k - i * n
        s = nrm[i]
        out[i, j] = float64(x[i, j]) / s if s != 0.0 else 0.0
        k += cuda.gridsize(1)


def scale_rows(x, nrm, out):
    """``out = x / nrm[:, None]`` (rows with nrm == 0 become 0); ``out`` may be ``x``."""
    if x.size:
        bl, t = grid1d(x.size)
        _k_scale[bl, t](x, nrm, out)
    return out


@cuda.jit(cache=True)
def _k_tangent_write(w, g, mw, coef, e, out):
    n = w.shape[1]
    k = cuda.grid(1)
    while k < w.size:
        i = k // n
        j = k - i * n
        wj = w[i, j]
        nu = float64(math.pow(abs(wj) / w.dtype.type(mw[i]), e))
        if wj < 0:
            nu = -nu
        out[i, j] = float64(g[i, j]) - coef[i] * nu
        k += cuda.gridsize(1)


def tangent_write(w, g, mw, coef, p, out):
    """``out = g - coef[i] * sign(w) (|w| / mw)^(p-1)``."""
    if w.size:
        bl, t = grid1d(w.size)
        _k_tangent_write[bl, t](w, g, mw, coef, w.dtype.type(p - 1.0), out)
    return out


@cuda.jit(cache=True)
def _k_signed_pow(x, e, out, flag):
    k = cuda.grid(1)
    while k < x.size:
        v = x[k]
        a = abs(v)
        if not (a < INF):
            cuda.atomic.min(flag, 0, k)
        r = math.pow(a, e)
        out[k] = -r if v < 0 else r
        k += cuda.gridsize(1)


def signed_pow(x, e, out):
    """``out = sign(x) |x|^e`` on 1-D contiguous device arrays; returns the first
    flat index holding NaN/Inf, or -1."""
    if x.size == 0:
        return -1
    fl = flags(x.size)
    bl, t = grid1d(x.size)
    _k_signed_pow[bl, t](x, x.dtype.type(e), out, fl)
    i = int(fl.copy_to_host()[0])
    return -1 if i >= x.size else i


@cuda.jit(cache=True)
def _k_add(a, b, out):
    k = cuda.grid(1)
    n = a.shape[1]
    while k < a.size:
        i = k // n
        j = k - i * n
        out[i, j] = a[i, j] + b[i, j]
        k += cuda.gridsize(1)


def add(a, b, out):
    if a.size:
        bl, t = grid1d(a.size)
        _k_add[bl, t](a, b, out)
    return out


@cuda.jit(cache=True)
def _k_fill(out, v):
    k = cuda.grid(1)
    n = out.shape[1]
    while k < out.size:
        i = k // n
        out[i, k - i * n] = v
        k += cuda.gridsize(1)


def fill(out, v):
    if out.size:
        bl, t = grid1d(out.size)
        _k_fill[bl, t](out, out.dtype.type(v))
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
