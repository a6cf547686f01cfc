"""Plain NumPy reference implementations (float64, no cleverness beyond scaling).

These are the oracles every kernel is tested against.
"""
from __future__ import annotations

import numpy as np


def _axis(x, axis):
    return tuple(range(x.ndim)) if axis is None else axis


def norm_ref(x, p, axis=None):
    a = np.abs(np.asarray(x, dtype=np.float64))
    ax = _axis(a, axis)
    if a.size == 0:
        return np.sum(a, axis=ax)
    m = np.max(a, axis=ax, keepdims=True)
    if np.isinf(p):
        return np.squeeze(m, axis=ax)
    ms = np.where(m == 0, 1.0, m)
    s = np.sum((a / ms) ** p, axis=ax)
    return np.squeeze(m, axis=ax) * s ** (1.0 / p)


def normalize_ref(x, p, axis=None):
    n = norm_ref(x, p, axis)
    ax = _axis(np.asarray(x), axis)
    return np.asarray(x, dtype=np.float64) / np.expand_dims(n, ax)


def hoyer_ref(x, axis=None):
    a = np.abs(np.asarray(x, dtype=np.float64))
    ax = _axis(a, axis)
    n = np.prod([a.shape[i] for i in (ax if isinstance(ax, tuple) else (ax,))])
    m = np.max(a, axis=ax, keepdims=True)
    ms = np.where(m == 0, 1.0, m)
    s1 = np.sum(a / ms, axis=ax)
    s2 = np.sqrt(np.sum((a / ms) ** 2, axis=ax))
    with np.errstate(invalid="ignore", divide="ignore"):
        h = (np.sqrt(n) - s1 / s2) / (np.sqrt(n) - 1)
    return np.where(s2 == 0, 1.0, np.clip(h, 0, 1))


def rows(x):
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(x.shape[0], -1)


def dual_ref(w, p):
    w = np.asarray(w, dtype=np.float64)
    return np.sign(w) * np.abs(w) ** (p - 1)


def inv_dual_ref(v, p):
    v = np.asarray(v, dtype=np.float64)
    return np.sign(v) * np.abs(v) ** (1.0 / (p - 1))


def tangent_ref(w, g, p):
    """Per row of 2-D w, g."""
    w = np.asarray(w, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    m = np.abs(w).max(axis=1, keepdims=True)
    nu = np.sign(w) * (np.abs(w) / m) ** (p - 1)
    c = np.sum(nu * g, axis=1, keepdims=True) / np.sum(nu * nu, axis=1, keepdims=True)
    return g - c * nu


def holder_minimizer(c, p):
    """argmin_{||w||_p = 1} <c, w> = -sign(c)|c|^(q-1) / ||c||_q^(q-1)."""
    c = np.asarray(c, dtype=np.float64)
    q = p / (p - 1)
    cq = norm_ref(c, q)
    return -np.sign(c) * (np.abs(c) / cq) ** (q - 1)


def project_l1_ref(y, r):
    """Duchi et al. (2008) sort-based projection onto the L1 ball, one vector."""
    y = np.asarray(y, dtype=np.float64)
    if np.abs(y).sum() <= r:
        return y.copy()
    u = np.sort(np.abs(y))[::-1]
    cs = np.cumsum(u)
    k = np.arange(1, y.size + 1)
    rho = np.nonzero(u - (cs - r) / k > 0)[0][-1]
    tau = (cs[rho] - r) / (rho + 1)
    return np.sign(y) * np.maximum(np.abs(y) - tau, 0)


def project_l2_ref(y, r):
    y = np.asarray(y, dtype=np.float64)
    n = np.linalg.norm(y)
    return y.copy() if n <= r else y * (r / n)


def project_linf_ref(y, r):
    return np.clip(np.asarray(y, dtype=np.float64), -r, r)


def ball_certificate(y, x, p, r):
    """Optimality gap of x as the projection of y onto the radius-r Lp ball.

    By Hoelder, max_{||z||_p <= r} <y - x, z> = r ||y - x||_q, so the
    variational inequality <y - x, z - x> <= 0 for all z in the ball is
    ``r ||y - x||_q - <y - x, x> <= 0``.  Returns that gap (>= 0 up to rounding)
    and ||x||_p.
    """
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    d = y - x
    q = np.inf if p == 1 else (1.0 if np.isinf(p) else p / (p - 1))
    return r * norm_ref(d, q) - float(d @ x), norm_ref(x, p)


class LpSGDRef:
    """Plain NumPy transcription of DESIGN section 4's LpSGD, per row, float64."""

    def __init__(self, p, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0,
                 lr_decay=0.0, variant="dual"):
        self.p, self.lr, self.mu, self.damp = p, lr, momentum, dampening
        self.nest, self.wd, self.decay, self.variant = nesterov, weight_decay, lr_decay, variant
        self.q = p / (p - 1)

    def init(self, w):
        w = np.asarray(w, dtype=np.float64)
        n = norm_ref(w, self.p, 1)[:, None]
        self.w = np.where(n > 0, w / np.where(n > 0, n, 1), 0.0)
        self.v = dual_ref(self.w, self.p)
        self.buf = None
        self.t = 0
        return self.w.copy()

    def step(self, g, mask=None):
        """One step; ``mask`` (bool, w's shape): then the masked entries of w
        are zeroed and each row's active entries renormalised (a row the
        step did not move only if the mask zeroed one of its entries); the
        dual state keeps every entry."""
        p, q = self.p, self.q
        d = np.asarray(g, dtype=np.float64) + self.wd * self.w
        if self.mu:
            self.buf = d.copy() if self.buf is None else self.mu * self.buf + (1 - self.damp) * d
            d = d + self.mu * self.buf if self.nest else self.buf
        eta = self.lr / (1 + self.decay * self.t)
        for i in range(d.shape[0]):
            s = self.v[i] if self.variant == "dual" else self.w[i]
            if not np.any(d[i]) or not np.any(s):
                if mask is not None and np.any(self.w[i][~mask[i]]):
                    self._mask_row(i, mask[i])
                continue
            gh = d[i] / norm_ref(d[i], q)
            if self.variant == "dual":
                v = (1 - eta) * self.v[i] - eta * gh
                v = v / norm_ref(v, q)
                self.v[i] = v
                self.w[i] = inv_dual_ref(v, p)
            elif self.variant == "primal":
                y = (1 - eta) * self.w[i] - eta * inv_dual_ref(gh, p)
                self.w[i] = y / norm_ref(y, p)
            else:
                y = self.w[i] - eta * tangent_ref(self.w[i:i + 1], d[i:i + 1], p)[0]
                self.w[i] = y / norm_ref(y, p)
            if mask is not None:
                self._mask_row(i, mask[i])
        self.t += 1
        return self.w.copy()

    def _mask_row(self, i, m):
        w = np.where(m, self.w[i], 0.0)
        n = norm_ref(w, self.p)
        self.w[i] = w / n if n > 0 else w
