"""The learned-mask kernels: SCL's score step, the concave lottery's mask
step, the order statistic and counts of :func:`lpcore.calibrate_lambda`,
and the elementwise pieces of the ticket's threshold (their CUDA twins are
in :mod:`lpcore.kernels.cuda.masklearn`).  On the host they are NumPy: the
arithmetic :mod:`lpcore.masklearn` has always used."""
from __future__ import annotations

import math

import numpy as np


def unit_rms_rows(rows, eps):
    """float64 (G, n) ``rows`` scaled to unit root-mean-square per row (a row
    whose RMS is at most ``eps`` left as it is); rows whose squares over- or
    underflow are max-scaled first."""
    with np.errstate(over="ignore", under="ignore"):
        rms = np.sqrt(np.mean(rows * rows, axis=1, keepdims=True))
    top = np.max(np.abs(rows), axis=1, keepdims=True)
    off = ~np.isfinite(rms) | ((rms < 1e-150) & (top > 0))  # the squares over- or underflowed
    if off.any():  # those rows max-scaled: entries near 1e200 or 1e-200 keep their RMS
        r = np.flatnonzero(off[:, 0])
        rms[r] = top[r] * np.sqrt(np.mean((rows[r] / top[r]) ** 2, axis=1, keepdims=True))
    return rows / np.where(rms > eps, rms, 1.0)


def ste_rows(g, th):
    """``N(g * th)`` on (G, n) arrays (finite): the product in its own dtype,
    normalised per row to unit RMS in float64 and rounded back to that dtype;
    a product that overflows is formed from both factors max-scaled per row
    in float64 (the normalised result is scale-free)."""
    with np.errstate(over="ignore"):
        p = g * th
    if np.all(np.isfinite(p)):
        return unit_rms_rows(p.astype(np.float64), 1e-12).astype(p.dtype, copy=False)
    g64, th64 = g.astype(np.float64), th.astype(np.float64)
    for x in (g64, th64):
        top = np.max(np.abs(x), axis=1, keepdims=True)
        x /= np.where(top > 0, top, 1.0)
    return unit_rms_rows(g64 * th64, 1e-300).astype(p.dtype, copy=False)


def _nonfinite(a):
    return int(a.size - np.count_nonzero(np.isfinite(a)))


def _first_bad(ok):
    """The first row of the boolean (G, n) ``ok`` with a False entry, or G."""
    bad = np.flatnonzero(~ok.all(axis=1))
    return int(bad[0]) if bad.size else ok.shape[0]


def score_step(s, g, th, lr, out):
    """``out = s - lr * N(g * th)`` on (G, n) arrays (``s``, ``out`` float64;
    ``g`` None: ``out = s``); returns the first rows of ``g`` and of ``th``
    holding NaN or Inf (``G`` for none; ``out`` is unset unless both are
    ``G``)."""
    G = s.shape[0]
    if g is None:
        out[...] = s
        return G, G
    bad = (_first_bad(np.isfinite(g)), _first_bad(np.isfinite(th)))
    if bad == (G, G) and s.size:
        np.subtract(s, lr * ste_rows(g, th), out=out)
    return bad


def penalty_grad(m, kind_log, eps):
    """The concave penalty's gradient (float64 of ``m``'s shape)."""
    if not kind_log:
        return np.ones(m.shape)
    return 1.0 / ((eps + m) * math.log1p(1.0 / eps))


def concave_step(m, g, th, lr, lam, kind_log, eps, out):
    """``out = clip(m - lr * (lam R'(m) + g th), 0, 1)`` on (G, n) arrays
    (``m``, ``out`` float64; ``g`` None: the penalty only); returns the
    first rows of ``m`` with an entry outside [0, 1] (or NaN) and of ``g``
    and ``th`` holding NaN or Inf (``G`` for none; ``out`` is unset unless
    all are ``G``)."""
    G = m.shape[0]
    bad_m = _first_bad((m >= 0.0) & (m <= 1.0))
    bad = (bad_m, G, G) if g is None else \
        (bad_m, _first_bad(np.isfinite(g)), _first_bad(np.isfinite(th)))
    if bad == (G, G, G) and m.size:
        d = lam * penalty_grad(m, kind_log, eps)
        if g is not None:
            d = d + g.astype(np.float64) * th
        np.clip(m - lr * d, 0.0, 1.0, out=out)
    return bad


def kth_smallest(a, k):
    """The ``k``-th smallest (1-based) of the finite 1-D float64 ``a``."""
    return float(np.partition(a, k - 1)[k - 1])


def count_at_most(a, v, c):
    """``(#(a <= v), #(a - c <= 0))`` of the 1-D float64 ``a``."""
    return int(np.count_nonzero(a <= v)), int(np.count_nonzero(a - c <= 0.0))


def nonfinite_count(a):
    """The number of NaN or Inf entries of a 1-D float array."""
    return _nonfinite(a)


def shift(a, c, out):
    """``out = a - c`` (1-D float64)."""
    return np.subtract(a, c, out=out)


def positive(s, out):
    """``out = 1.0`` where ``s > 0``, else 0.0 (1-D float64)."""
    np.copyto(out, s > 0.0)
    return out


def tiers(m, v, below, tied):
    """``below = m < v``, ``tied = m == v`` (1-D); returns ``#below``."""
    np.less(m, v, out=below)
    np.equal(m, v, out=tied)
    return int(np.count_nonzero(below))


def keep_above(below, tied, tied_kept, out):
    """``out = ~below & (~tied | tied_kept)``: the entries a cut keeps."""
    np.copyto(out, ~below & (~tied | tied_kept))
    return out
