"""The LpSGD step on the GPU: the CPU kernel's two phases as five launches.

Contract as ``lpcore/kernels/lpsgd.py`` (same arguments, same status codes);
a group may span several thread blocks (``nsplit`` slices), so each
per-group reduction is a slice kernel plus a combine (one block per group,
its threads striding over the group's slices):

phase 1 (reads only)
    ``_k_p1``   per slice: max |d|, max |s| (s = v for ``dual``, w otherwise;
                NaN-propagating), then the slice's max-scaled sum
                ``sum (|d|/max_slice |d|)^q`` or, for ``riemannian``,
                ``<nu, d>`` and ``<nu, nu>`` with nu from the slice max of |w|.
    ``_k_c1``   per group: rescale and combine the slices into (max|d|,
                max|s|, ||d||_q or the tangent coefficient, update?) and a
                status; the first bad group is recorded with an atomic max of
                ``G - i`` (see ``_launch.flags``).
check       two integers to the host; nothing has been written.
phase 2 (writes)
    ``_k_p2a``  per slice: momentum buffer and the updated state in one pass,
                then the slice's max and max-scaled power sum of the new state.
    ``_k_c2``   per group: the new state's norm (Lq for ``dual``, Lp else).
    ``_k_p2b``  elementwise: normalise; ``dual`` also maps v back to w
                (``w = sign(v) (|v| / ||v||_q)^(1/(p-1))``, one power).

Arithmetic: directions and updates in float64 as on the CPU, fractional powers
in the data's precision (``powf`` for float32), sums in float64.
"""
from __future__ import annotations

import math

from numba import cuda, float64

from ..lpsgd import (BAD_DIRECTION, BAD_STATE, DUAL, OK, PRIMAL, RIEMANNIAN, coefficients,
                     direction)
from ._launch import (MAXT, block_slice as _slice, bmax, bsum, combine_grid, flags, maxnan,
                      read_flags, scratch, split, stream, to_host)

INF = math.inf


#: the update direction, the CPU kernel's own source compiled for the GPU
_dir = cuda.jit(device=True)(direction)


@cuda.jit(cache=True)
def _k_p1(w, g, buf, v, wd, bmu, bd, c1, c2, e1, qe, variant, has_mom, nsplit, P):
    sh = cuda.shared.array(MAXT, float64)
    i, j0, j1 = _slice(w.shape[1], nsplit)
    if i >= w.shape[0]:
        return
    bi = i if has_mom else 0
    dual = variant == DUAL
    md = 0.0
    ms = 0.0
    j = j0 + cuda.threadIdx.x
    while j < j1:
        d, _ = _dir(g[i, j], w[i, j], buf[bi, j], wd, bmu, bd, c1, c2, has_mom)
        md = maxnan(md, abs(d))
        ms = maxnan(ms, abs(float64(v[i, j] if dual else w[i, j])))
        j += cuda.blockDim.x
    md = bmax(sh, md)
    ms = bmax(sh, ms)
    a = 0.0
    bb = 0.0
    if md < INF and ms < INF:
        if variant == RIEMANNIAN:
            if ms > 0.0:
                mt = w.dtype.type(ms)
                j = j0 + cuda.threadIdx.x
                while j < j1:
                    d, _ = _dir(g[i, j], w[i, j], buf[bi, j], wd, bmu, bd, c1, c2, has_mom)
                    wj = w[i, j]
                    nu = float64(math.pow(abs(wj) / mt, e1))
                    if wj < 0:
                        nu = -nu
                    a += nu * d
                    bb += nu * nu
                    j += cuda.blockDim.x
        elif md > 0.0:
            j = j0 + cuda.threadIdx.x
            while j < j1:
                d, _ = _dir(g[i, j], w[i, j], buf[bi, j], wd, bmu, bd, c1, c2, has_mom)
                a += float64(math.pow(w.dtype.type(abs(d) / md), qe))
                j += cuda.blockDim.x
    a = bsum(sh, a)
    bb = bsum(sh, bb)
    if cuda.threadIdx.x == 0:
        b = cuda.blockIdx.x
        P[b, 0] = md
        P[b, 1] = ms
        P[b, 2] = a
        P[b, 3] = bb


@cuda.jit(cache=True)
def _k_c1(P, G, nsplit, variant, p, S, flag):
    """Combine phase 1, one block per group: S[i] = (max|d|, max|state|, the
    dual norm of d or the tangent coefficient, 1 if the group moves, status)."""
    sh = cuda.shared.array(MAXT, float64)
    tid = cuda.threadIdx.x
    i = cuda.blockIdx.x
    while i < G:
        c0, c1 = i * nsplit, (i + 1) * nsplit
        md = 0.0
        ms = 0.0
        c = c0 + tid
        while c < c1:
            md = maxnan(md, P[c, 0])
            ms = maxnan(ms, P[c, 1])
            c += cuda.blockDim.x
        md = bmax(sh, md)
        ms = bmax(sh, ms)
        if tid == 0:
            S[i, 0] = md
            S[i, 1] = ms
            S[i, 2] = 0.0
            S[i, 3] = 0.0
        if not ms < INF:  # first: a non-finite w also spoils d through weight decay
            if tid == 0:
                S[i, 4] = BAD_STATE
                cuda.atomic.max(flag, 0, G - i)
        elif not md < INF:
            if tid == 0:
                S[i, 4] = BAD_DIRECTION
                cuda.atomic.max(flag, 0, G - i)
        else:
            if tid == 0:
                S[i, 4] = OK
            if md > 0.0 and ms > 0.0:  # else: zero direction or dead group, left unchanged
                a = 0.0
                bb = 0.0
                c = c0 + tid
                if variant == RIEMANNIAN:
                    e = p - 1.0
                    while c < c1:
                        if P[c, 1] > 0.0:
                            r = (P[c, 1] / ms) ** e
                            a += P[c, 2] * r
                            bb += P[c, 3] * r * r
                        c += cuda.blockDim.x
                else:
                    q = p / (p - 1.0)
                    while c < c1:
                        if P[c, 0] > 0.0:
                            a += P[c, 2] * (P[c, 0] / md) ** q
                        c += cuda.blockDim.x
                a = bsum(sh, a)
                bb = bsum(sh, bb)
                if tid == 0:
                    S[i, 3] = 1.0
                    if variant == RIEMANNIAN:
                        S[i, 2] = a / bb
                    else:
                        S[i, 2] = md * a ** (1.0 / (p / (p - 1.0)))
        i += cuda.gridDim.x


@cuda.jit(device=True)
def _slice_norm_terms(sh, x, i, j0, j1, e):
    """The slice's max |x[i]| and sum (|x| / max)^e (block reductions)."""
    mx = 0.0
    j = j0 + cuda.threadIdx.x
    while j < j1:
        mx = maxnan(mx, abs(float64(x[i, j])))
        j += cuda.blockDim.x
    mx = bmax(sh, mx)
    acc = 0.0
    if mx > 0.0:
        mxt = x.dtype.type(mx)
        j = j0 + cuda.threadIdx.x
        while j < j1:
            acc += float64(math.pow(abs(x[i, j]) / mxt, e))
            j += cuda.blockDim.x
    return mx, bsum(sh, acc)


@cuda.jit(cache=True)
def _k_p2a(w, g, buf, v, wd, bmu, bd, c1, c2, p, eta, ae, e1, re, variant, has_mom,
           nsplit, S, Q, mk, masked):
    sh = cuda.shared.array(MAXT, float64)
    i, j0, j1 = _slice(w.shape[1], nsplit)
    if i >= w.shape[0]:
        return
    bi = i if has_mom else 0
    b = cuda.blockIdx.x
    if S[i, 3] == 0.0:
        if has_mom:  # the momentum buffer still advances
            j = j0 + cuda.threadIdx.x
            while j < j1:
                _, nb = _dir(g[i, j], w[i, j], buf[bi, j], wd, bmu, bd, c1, c2, has_mom)
                buf[i, j] = nb
                j += cuda.blockDim.x
        mx = 0.0
        acc = 0.0
        hit = 0.0
        if masked:  # zero the masked entries; the Lp terms of the rest, in case one was not zero
            j = j0 + cuda.threadIdx.x
            while j < j1:
                if not mk[i, j]:
                    if w[i, j] != 0:
                        hit = 1.0
                    w[i, j] = 0
                j += cuda.blockDim.x
            hit = bmax(sh, hit)
            mx, acc = _slice_norm_terms(sh, w, i, j0, j1, w.dtype.type(p))
        if cuda.threadIdx.x == 0:
            Q[b, 0] = mx
            Q[b, 1] = acc
            Q[b, 2] = hit
        return
    md = S[i, 0]
    ms = S[i, 1]
    c2s = S[i, 2]
    keep = 1.0 - eta
    dual = variant == DUAL
    ud = (md / c2s) ** (1.0 / (p - 1.0)) if variant == PRIMAL else 1.0
    mst = w.dtype.type(ms)
    mx = 0.0
    j = j0 + cuda.threadIdx.x
    while j < j1:
        d, nb = _dir(g[i, j], w[i, j], buf[bi, j], wd, bmu, bd, c1, c2, has_mom)
        if has_mom:
            buf[i, j] = nb
        if dual:
            x = keep * float64(v[i, j]) - (eta / c2s) * d
            xv = v.dtype.type(x)
            v[i, j] = xv
        else:
            wj = w[i, j]
            if variant == PRIMAL:
                u = float64(math.pow(w.dtype.type(abs(d) / md), ae)) * ud
                if d < 0:
                    u = -u
                x = keep * float64(wj) - eta * u
            else:
                nu = float64(math.pow(abs(wj) / mst, e1))
                if wj < 0:
                    nu = -nu
                x = float64(wj) - eta * (d - c2s * nu)
            xv = w.dtype.type(x) if not masked or mk[i, j] else w.dtype.type(0)
            w[i, j] = xv
        mx = maxnan(mx, abs(float64(xv)))
        j += cuda.blockDim.x
    mx = bmax(sh, mx)
    acc = 0.0
    act = 0.0  # dual and masked: the active entries' terms (their share of ||w||_p^p)
    if mx > 0.0:
        mxt = w.dtype.type(mx)
        j = j0 + cuda.threadIdx.x
        while j < j1:
            xv = v[i, j] if dual else w[i, j]
            t = float64(math.pow(abs(xv) / mxt, re))
            acc += t
            if masked and mk[i, j]:
                act += t
            j += cuda.blockDim.x
    acc = bsum(sh, acc)
    act = bsum(sh, act)
    if cuda.threadIdx.x == 0:
        Q[b, 0] = mx
        Q[b, 1] = acc
        Q[b, 2] = act


@cuda.jit(cache=True)
def _k_c2(Q, G, nsplit, r, p, dual, masked, S, N):
    """Combine phase 2, one block per group: N[i, 0] = the r-norm of the new
    state; masked: N[i, 1] = the factor putting w's active entries on the
    sphere (dual), and for a group the step did not move the Lp norm of its
    masked w if the mask zeroed an entry (else 0: left as it is)."""
    sh = cuda.shared.array(MAXT, float64)
    tid = cuda.threadIdx.x
    i = cuda.blockIdx.x
    while i < G:
        c0, c1 = i * nsplit, (i + 1) * nsplit
        moved = S[i, 3] != 0.0
        e = r if moved else p
        mx = 0.0
        hit = 0.0
        c = c0 + tid
        while c < c1:
            mx = max(mx, Q[c, 0])
            hit = max(hit, Q[c, 2])
            c += cuda.blockDim.x
        mx = bmax(sh, mx)
        hit = bmax(sh, hit)
        use = mx > 0.0 and (moved or (masked and hit > 0.0))
        acc = 0.0
        act = 0.0
        if use:
            c = c0 + tid
            while c < c1:
                if Q[c, 0] > 0.0:
                    sc = (Q[c, 0] / mx) ** e
                    acc += Q[c, 1] * sc
                    act += Q[c, 2] * sc
                c += cuda.blockDim.x
        acc = bsum(sh, acc)
        act = bsum(sh, act)
        if tid == 0:
            N[i, 0] = mx * acc ** (1.0 / e) if use else 0.0
            N[i, 1] = 1.0
            if masked and dual and moved and use:
                N[i, 1] = (act / acc) ** (-1.0 / p) if act > 0.0 else 0.0
        i += cuda.gridDim.x


@cuda.jit(cache=True)
def _k_p2b(w, v, N, ae, variant, nsplit, S, mk, masked):
    i, j0, j1 = _slice(w.shape[1], nsplit)
    if i >= w.shape[0]:
        return
    nv = N[i, 0]
    if not nv > 0.0:
        return
    f = 1.0 / nv
    fw = N[i, 1]
    j = j0 + cuda.threadIdx.x
    while j < j1:
        if variant == DUAL and S[i, 3] != 0.0:
            x = v.dtype.type(float64(v[i, j]) * f)
            v[i, j] = x
            if masked and not mk[i, j]:
                w[i, j] = 0
            else:
                r = math.pow(abs(x), ae)
                if masked:
                    r = w.dtype.type(float64(r) * fw)
                w[i, j] = -r if x < 0 else r
        else:
            w[i, j] = float64(w[i, j]) * f
        j += cuda.blockDim.x


class StepCall:
    """The GPU twin of :class:`lpcore.kernels.lpsgd.StepCall` (same arguments,
    device arrays): ``run("step" | "phase1" | "phase2")``."""

    @staticmethod
    def workspace(G):
        """The per-group scratch of one tensor's step (phase-1 statistics and
        statuses), a (G, 5) device array to pass as ``work=`` to its later calls."""
        return cuda.device_array((max(G, 1), 5))

    def __init__(self, w, g, buf, v, wd, mu, damp, nest, first, variant, p, eta, mask=None,
                 work=None):
        G, n = w.shape
        self.empty = G == 0 or n == 0
        has_mom = buf is not None
        dummy = scratch("lpsgd.unused", (1, max(n, 1)), w.dtype)  # never written
        bmu, bd, c1, c2 = coefficients(mu, damp, nest, first, has_mom)
        if not has_mom:
            buf = dummy
        if v is None:
            v = dummy if variant != DUAL else v
        self.w, self.g, self.buf, self.v = w, g, buf, v
        self.masked = mask is not None
        self.mask = mask if self.masked else scratch("lpsgd.nomask", (1, 1), "bool")
        self.coef = (float(wd), bmu, bd, c1, c2)
        self.variant, self.has_mom, self.p, self.eta = int(variant), has_mom, float(p), float(eta)
        self.G = G
        if not self.empty:
            self.nt, self.nsplit = split(n)
            # the tensor's own workspace, not a shared scratch: step_many runs
            # every tensor's phase 1 before any phase 2
            self.S = self.workspace(G) if work is None else work

    def _phase1(self):
        G, nsplit = self.G, self.nsplit
        dt = self.w.dtype.type
        p = self.p
        P = scratch("lpsgd.P", (G * nsplit, 4))
        s = stream()
        _k_p1[G * nsplit, self.nt, s](self.w, self.g, self.buf, self.v, *self.coef, dt(p - 1.0),
                                      dt(p / (p - 1.0)), self.variant, self.has_mom, nsplit, P)
        fl = flags()
        bl, t = combine_grid(G, nsplit)
        _k_c1[bl, t, s](P, G, nsplit, self.variant, p, self.S, fl)
        bad = read_flags(fl, G)[0]
        if bad < G:
            return bad, int(to_host(self.S[bad:bad + 1])[0, 4])
        return -1, None

    def _phase2(self):
        G, nsplit = self.G, self.nsplit
        dt = self.w.dtype.type
        p = self.p
        a = 1.0 / (p - 1.0)
        r = p / (p - 1.0) if self.variant == DUAL else p
        Q = scratch("lpsgd.Q", (G * nsplit, 3))
        s = stream()
        _k_p2a[G * nsplit, self.nt, s](self.w, self.g, self.buf, self.v, *self.coef, p, self.eta,
                                       dt(a), dt(p - 1.0), dt(r), self.variant, self.has_mom,
                                       nsplit, self.S, Q, self.mask, self.masked)
        N = scratch("lpsgd.N", (G, 2))
        bl, t = combine_grid(G, nsplit)
        _k_c2[bl, t, s](Q, G, nsplit, r, p, self.variant == DUAL, self.masked, self.S, N)
        _k_p2b[G * nsplit, self.nt, s](self.w, self.v, N, dt(a), self.variant, nsplit, self.S,
                                       self.mask, self.masked)

    def run(self, what="step"):
        """Run ``"step"``, ``"phase1"`` or ``"phase2"``; returns (-1, None) or
        (first bad group, status code)."""
        if self.empty:
            return -1, None
        if what == "phase2":
            self._phase2()
            return -1, None
        res = self._phase1()
        if what == "step" and res[0] < 0:
            self._phase2()
        return res
