"""The fused LpSGD step: one kernel call for every tensor of a step.

The per-group work (one group = one row of a tensor's (G, n) view) runs in
two phases, over every group of every tensor of a :class:`Tables`:

phase 1 (reads only)  per group: the update direction ``d`` (weight decay,
    momentum, Nesterov, formed on the fly), ``max |d|`` and ``max |s|`` of the
    state ``s`` (the dual vector for ``dual``, the weights otherwise) as
    integer max reductions over the float64 bit patterns (these also flag
    NaN/Inf), then ``||d||_q`` max-scaled (``dual``/``primal``) or the tangent
    coefficient ``<nu, d> / <nu, nu>`` (``riemannian``).
check                 if any group is non-finite, return its index: nothing
    has been written.
phase 2 (writes)      per group: momentum buffer and updated state in one
    pass, the new state's norm in a second, the normalisation and the map
    back to ``w`` in a third.  Each group is one task (its row stays in cache
    between the passes); a single group longer than the caches is re-read.

Memory traffic per step (``dual`` with momentum): g, buf, v and w are read
twice (once per phase: w enters d through weight decay, and is read at
weight decay 0 too, so that a non-finite w is refused), buf and v and w
written once.

Powers: float32 data through :mod:`._pow32` (vectorised), float64 through
``**``; at p = 2 (the library's default) the exponents are 1 and 2, and the
``dual`` step's power loops (and the ``||d||_q`` loop of ``primal``) use
products instead: rounded once instead of a power's ~1e-7, and 3.7-4.6x
faster per float32 step on 2 cores (2026-12-05).  For float32 data the
``dual`` step's two powers take roots and products where the exponent is a
multiple of 1/2 or 1/3 (p = 1.3: q = 13/3, 1/(p-1) = 10/3;
:func:`._pow32.ratpow32`), of the entries scaled by a power of two, the
scale's own power applied once per group.  The loops that take the
powers (:func:`._dispatch.rat_powers`, :func:`._dispatch.scaled_powers`) are
calls of their own, 512 bits wide where the CPU has AVX-512 (the same
results); so are the phases' loops (:func:`._pow32.prefer_wide_vectors`;
their float64 sums then add 8 terms at a time, not 4).
Whether a step runs on threads is decided per call (:data:`STEP_MIN_SIZE`,
and not while the machine is busy); on threads, the groups are handed out
in contiguous runs of about equal work (:func:`balanced_chunks`), not one by
one.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import literally, njit, prange  # noqa: F401 (prange: the generated drivers)

from .._threads import env_number
from ._dispatch import (POW_BLOCK, block_powsum, block_ratsum, log2_for, rat_powers,
                        rational_scale, scaled_pow, scaled_pow_like, scaled_powers,
                        scaled_powsum, use_parallel)
from ._pointers import as_ptr
from ._pow32 import FASTMATH, float_from_bits, float_to_bits, prefer_wide_vectors

DUAL, PRIMAL, RIEMANNIAN = 0, 1, 2
#: group status codes returned through ``st``
OK, BAD_DIRECTION, BAD_STATE = 0, 1, 2

_JIT = dict(fastmath=FASTMATH, cache=True, error_model="numpy")

@njit(inline="always", **_JIT)
def _absbits(x):
    return float_to_bits(abs(np.float64(x)))


@njit(inline="always", **_JIT)
def _from_bits(b):
    return float_from_bits(b, b)


@njit(**_JIT)
def _renormalize(x, i, mx, p):
    """x[i] /= ||x[i]||_p given mx = max |x[i]| > 0."""
    n = x.shape[1]
    inv = 1.0 / mx
    acc = scaled_powsum(x[i], inv, log2_for(mx, x), p, False)
    f = 1.0 / (mx * acc ** (1.0 / p))
    for j in range(n):
        x[i, j] = np.float64(x[i, j]) * f


def direction(gj, wj, bj, wd, bmu, bd, c1, c2, has_mom):
    """(d, new momentum buffer) for one entry, in float64: ``buf' = bmu * buf +
    bd * d``, ``d' = c1 * d + c2 * buf'`` (torch.optim.SGD's rules as
    coefficients, see :func:`step_coefficients`).

    Plain Python source compiled twice: by ``njit`` here and as a CUDA device
    function in ``lpcore/kernels/cuda/lpsgd.py``."""
    d = float(gj) + wd * float(wj)
    if has_mom:
        nb = bmu * float(bj) + bd * d
        return c1 * d + c2 * nb, nb
    return d, 0.0


_direction = njit(inline="always", **_JIT)(direction)


@njit(**_JIT)
def _phase1(i, k, w, g, buf, v, wd, bmu, bd, c1, c2, p, st, S, scr, variant, has_mom):
    literally(variant)
    literally(has_mom)
    prefer_wide_vectors()  # AVX-512: the float64 loops 8 wide
    n = w.shape[1]
    bi = i if has_mom else 0
    s = v if variant == DUAL else w
    mbd = _absbits(0.0)
    mbs = _absbits(0.0)
    # the same pass sums d^2 unscaled (one multiply-add an entry): at p = 2
    # (q = 2) the norm of d where the group max keeps every square in range
    # (always for float32 data), with no second pass over d
    two = variant != RIEMANNIAN and p == 2.0
    acc2 = 0.0
    # ... and keeps |d|, rounded to the data's dtype, in the scratch row (a row
    # long): the powers of ||d||_q below read it there instead of forming d again
    for j in range(n):
        d, _ = _direction(g[i, j], w[i, j], buf[bi, j], wd, bmu, bd, c1, c2, has_mom)
        b = _absbits(d)
        mbd = b if b > mbd else mbd
        c = _absbits(s[i, j])
        mbs = c if c > mbs else mbs
        acc2 += d * d
        if variant != RIEMANNIAN:
            scr[j] = abs(d)
    md = _from_bits(mbd)
    ms = _from_bits(mbs)
    S[k, 0] = md
    S[k, 1] = ms
    S[k, 2] = 0.0
    S[k, 3] = 0.0
    if not ms < np.inf:  # first: a non-finite w also spoils d through weight decay
        st[k] = BAD_STATE
        return
    if not md < np.inf:
        st[k] = BAD_DIRECTION
        return
    st[k] = OK
    if md == 0.0 or ms == 0.0:
        return  # zero direction or dead group: left unchanged
    S[k, 3] = 1.0
    if variant == RIEMANNIAN:
        inv = 1.0 / ms
        l2m = log2_for(ms, w)
        a = 0.0
        bb = 0.0
        for j in range(n):
            d, _ = _direction(g[i, j], w[i, j], buf[bi, j], wd, bmu, bd, c1, c2, has_mom)
            wj = w[i, j]
            nu = scaled_pow(abs(wj), inv, l2m, p - 1.0)
            nu = -nu if wj < 0 else nu
            a += nu * d
            bb += nu * nu
        S[k, 2] = a / bb
    else:
        if two and 1e-140 <= md <= 1e140:  # n d^2 <= 2**62 * 1e280: no overflow
            S[k, 2] = np.sqrt(acc2)
            return
        q = p / (p - 1.0)
        inv = 1.0 / md
        acc = 0.0
        if p == 2.0:  # q = 2: a product, exact and several times faster than a power
            for j in range(n):
                d, _ = _direction(g[i, j], w[i, j], buf[bi, j], wd, bmu, bd, c1, c2, has_mom)
                r = abs(d) * inv
                acc += r * r
        else:
            # |d| from the scratch row, in blocks (the powers in a loop of their
            # own, for float32 twice as wide as one forming d in float64 around
            # them).  Float32 with q = m + s/den (p = 1.3: 13/3): roots and
            # products of |d| 2**-k (block_ratsum), times (2**k / md)**q;
            # otherwise the general power (block_powsum); either way into the
            # scratch's last block, apart from the row
            use, rm, rs, rden, scl, cq = rational_scale(q, md, scr)
            pbuf = scr[scr.size - POW_BLOCK:]
            if use:
                for j0 in range(0, n, POW_BLOCK):
                    acc += block_ratsum(scr[j0:min(n, j0 + POW_BLOCK)], pbuf, scl, rm, rs, rden)
                acc *= cq
            else:
                l2m = log2_for(md, w)
                for j0 in range(0, n, POW_BLOCK):
                    acc += block_powsum(scr[j0:min(n, j0 + POW_BLOCK)], pbuf, inv, l2m, q)
        S[k, 2] = md * acc ** (1.0 / q)


@njit(**_JIT)
def _mask_row(w, i, mk):
    """Zero w[i]'s masked entries; if any was non-zero, put the rest back on
    the unit sphere (a row the mask leaves alone is not touched)."""
    n = w.shape[1]
    hit = False
    mbx = _absbits(0.0)
    for j in range(n):
        if not mk[i, j]:
            if w[i, j] != 0.0:
                hit = True
            w[i, j] = 0.0
        else:
            b = _absbits(w[i, j])
            mbx = b if b > mbx else mbx
    return hit, _from_bits(mbx)


@njit(inline="always", **_JIT)
def _dual_entry(w, mk, i, j, x, ra, rq, masked):
    """Write ``w[i, j] = sign(x) ra`` (0 where masked); return ``rq`` if the
    entry is active (its share of the active entries' Lp sum), else 0.
    Branch-free (selects), so the calling loop stays vectorised."""
    on = 1.0
    if masked:
        on = 1.0 if mk[i, j] else 0.0
        ra = ra * on
    w[i, j] = -ra if x < 0 else ra
    return rq * on


@njit(**_JIT)
def _phase2(i, k, w, g, buf, v, wd, bmu, bd, c1, c2, p, eta, S, mk, variant, has_mom, masked):
    literally(variant)
    literally(has_mom)
    literally(masked)
    prefer_wide_vectors()  # AVX-512: the float64 loops 8 wide
    n = w.shape[1]
    bi = i if has_mom else 0
    md = S[k, 0]
    ms = S[k, 1]
    c2s = S[k, 2]
    upd = S[k, 3] != 0.0
    if not upd:
        if has_mom:  # the momentum buffer still advances
            for j in range(n):
                _, nb = _direction(g[i, j], w[i, j], buf[bi, j], wd, bmu, bd, c1, c2, has_mom)
                buf[i, j] = nb
        if masked:
            hit, mx = _mask_row(w, i, mk)
            if hit and mx > 0.0:
                _renormalize(w, i, mx, p)
        return
    keep = 1.0 - eta
    a = 1.0 / (p - 1.0)
    mbx = _absbits(0.0)
    if variant == DUAL:
        f = eta / c2s
        for j in range(n):
            d, nb = _direction(g[i, j], w[i, j], buf[bi, j], wd, bmu, bd, c1, c2, has_mom)
            if has_mom:
                buf[i, j] = nb
            v[i, j] = keep * np.float64(v[i, j]) - f * d
            b = _absbits(v[i, j])
            mbx = b if b > mbx else mbx
        mx = _from_bits(mbx)
        if mx == 0.0:
            return
        # One power per entry gives both w's magnitudes ra = (|v|/mx)^(1/(p-1))
        # and the terms of ||v||_q, (|v|/mx)^q = ra * |v|/mx (q = 1 + 1/(p-1):
        # a product, not a second power); a scaling pass over the cached row
        # then normalises v in Lq and w in Lp.  w is formed relative to the
        # group max of |v|, so small entries underflow harmlessly;
        # (mx/||v||_q)^(1/(p-1)) >= n^(-1/p).
        inv = 1.0 / mx
        acc = 0.0
        act = 0.0  # masked: the active entries' share, sum (|w_j| / scale)^p
        ca = 1.0  # w holds ra / ca until the scaling pass
        if p == 2.0:  # a = 1, q = 2: products, not powers
            for j in range(n):
                x = v[i, j]
                ra = abs(np.float64(x)) * inv
                acc += ra * ra
                act += _dual_entry(w, mk, i, j, x, ra, ra * ra, masked)
        else:
            # the powers in a loop of their own (for float32 data a float32
            # loop, twice as wide as one that also sums in float64), into w;
            # masked entries are zeroed by the scaling pass.  Float32 with
            # a = m + s/den (p = 1.3: 10/3): roots and products of |v| 2**-k,
            # the factor ca = (2**k / mx)**a applied to the sums and to w's
            # scale; otherwise the general power of |v| / mx
            use, rm, rs, rden, scl, ca = rational_scale(a, mx, v)
            if use:
                rat_powers(v[i], w[i], scl, rm, rs, rden)
            else:
                ca = 1.0
                scaled_powers(v[i], w[i], inv, log2_for(mx, v), a, True)
            for j in range(n):
                rq = abs(np.float64(w[i, j])) * (abs(np.float64(v[i, j])) * inv)
                acc += rq
                if masked:
                    act += rq * (1.0 if mk[i, j] else 0.0)
            acc *= ca
            act *= ca
        # ||v||_q / mx = acc^(1/q) = acc * acc^(-1/p), and w's factor
        # (mx / ||v||_q)^a = acc^(-1/p): one scalar power for both
        fw = 1.0 / np.sqrt(acc) if p == 2.0 else acc ** (-1.0 / p)
        rel = acc * fw
        if masked:  # the active entries of w on the unit sphere: sum_active |w|^p = 1
            fw = act ** (-1.0 / p) if act > 0.0 else 0.0
        fw *= ca
        fv = 1.0 / (mx * rel)
        for j in range(n):
            on = 1.0 if not masked or mk[i, j] else 0.0  # a select: stays vectorised
            w[i, j] = np.float64(w[i, j]) * (fw * on)
            v[i, j] = np.float64(v[i, j]) * fv
        return
    # primal and riemannian update w directly, then renormalise it
    if variant == PRIMAL:
        # D_q(d/||d||_q) = sign(d) (|d|/||d||_q)^a: one power of a ratio <= 1.
        # (Not (|d|/md)^a (md/||d||_q)^a: fastmath's reassociation merges the
        # two powers into one of |d| md / ..., which overflowed for |d| beyond
        # 1e154 and underflowed to NaN below 1e-154.)
        sc = 1.0
        ref = c2s
    else:
        sc = c2s  # the tangent coefficient
        ref = ms  # the powers are of |w| / ms
    inv = 1.0 / ref
    l2 = log2_for(ref, w)
    for j in range(n):
        d, nb = _direction(g[i, j], w[i, j], buf[bi, j], wd, bmu, bd, c1, c2, has_mom)
        if has_mom:
            buf[i, j] = nb
        wj = w[i, j]
        if variant == PRIMAL:
            u = scaled_pow_like(abs(d), w, inv, l2, a)
            u = -u if d < 0 else u
            nw = keep * np.float64(wj) - eta * u
        else:
            nu = scaled_pow(abs(wj), inv, l2, p - 1.0)
            nu = -nu if wj < 0 else nu
            nw = np.float64(wj) - eta * (d - sc * nu)
        on = 1.0 if not masked or mk[i, j] else 0.0  # a select: stays vectorised
        w[i, j] = nw * on
        b = _absbits(w[i, j])
        mbx = b if b > mbx else mbx
    mx = _from_bits(mbx)
    if mx > 0.0:
        _renormalize(w, i, mx, p)


# ---------------------------------------------------------------------------
# The multi-tensor step: every group of every tensor of a step in one call.
#
# A tensor table describes the tensors (one row each; the layout both
# backends share, :class:`Tables`): the int64 table holds the addresses of
# w, the gradient, the momentum buffer, the dual state and the mask (all
# C-contiguous (G, n); the gradient of w's dtype, the mask one byte per
# entry), G, n, the tensor's first global group and whether it is masked;
# the float64 table its hyperparameters; the int64 counters its step count
# and whether its momentum buffer has started (device memory on the GPU, so
# that a CUDA graph replays with them).

#: int64 table columns
T_W, T_GRAD, T_BUF, T_V, T_MASK, T_G, T_N, T_GOFF, T_MASKED = range(9)
T_COLS = 9
#: float64 table columns
F_P, F_WD, F_MU, F_DAMP, F_NEST, F_LR, F_DECAY = range(7)
F_COLS = 7
#: counter columns
C_STEP, C_STARTED = 0, 1

_U8 = np.uint8(0)

#: The step's own parallel cut-off, in units of work: an element at p = 2
#: counts 1, at any other p 3 (its fractional powers: measured on 2 cores,
#: float32, 2026-12-05: about 2.6 and 8 ns per element on one core).  From
#: about 24,000 elements at p = 2 and 8,000 at other p, threads gained there
#: (7 x 64 x 64 at p = 1.3: 150 instead of 227 us); below, waking them cost
#: more.  ``LPCORE_STEP_PARALLEL_MIN_SIZE`` sets it (at import).
STEP_MIN_SIZE = env_number("LPCORE_STEP_PARALLEL_MIN_SIZE", 24576, int)


@njit(inline="always", **_JIT)
def tensor_of(itab, gg):
    """The table row of group ``gg`` (counted from the table's first group: the
    last row starting at or before it)."""
    lo = 0
    hi = itab.shape[0] - 1
    base = itab[0, T_GOFF]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if itab[mid, T_GOFF] - base <= gg:
            lo = mid
        else:
            hi = mid - 1
    return lo


def step_coefficients(mu, damp, nest, started, lr, decay, step, has_mom):
    """``(bmu, bd, c1, c2, eta)`` of one tensor's step: torch.optim.SGD's
    momentum, dampening and Nesterov as the coefficients of :func:`direction`
    (the first momentum step, ``started == 0``, copies d into the buffer; all
    zero without momentum), and the decayed step size ``lr / (1 + decay *
    step)``.  Compiled for both targets (the GPU reads ``started`` and
    ``step`` from device memory)."""
    bmu = 0.0
    bd = 0.0
    c1 = 0.0
    c2 = 0.0
    if has_mom:
        if started == 0:
            bd = 1.0
        else:
            bmu = mu
            bd = 1.0 - damp
        if nest != 0.0:
            c1 = 1.0
            c2 = mu
        else:
            c2 = 1.0
    return bmu, bd, c1, c2, lr / (1.0 + decay * step)


_step_coefficients = njit(inline="always", **_JIT)(step_coefficients)


@njit(inline="always", **_JIT)
def _views(itab, t, like, has_mom, dual):
    G = itab[t, T_G]
    n = itab[t, T_N]
    w = numba.carray(as_ptr(itab[t, T_W], like), (G, n))
    g = numba.carray(as_ptr(itab[t, T_GRAD], like), (G, n))
    buf = numba.carray(as_ptr(itab[t, T_BUF], like), (G if has_mom else 1, n))
    v = numba.carray(as_ptr(itab[t, T_V], like), (G if dual else 1, n))
    masked = itab[t, T_MASKED] != 0
    mk = numba.carray(as_ptr(itab[t, T_MASK], _U8), (G if masked else 1, n if masked else 1))
    return w, g, buf, v, mk, masked


@njit(inline="always", **_JIT)
def _tensor_coefficients(itab, ftab, ctr, gg, has_mom):
    """(tensor row, its first group, group count, bmu, bd, c1, c2, eta) of group ``gg``."""
    t = tensor_of(itab, gg)
    bmu, bd, c1, c2, eta = _step_coefficients(
        ftab[t, F_MU], ftab[t, F_DAMP], ftab[t, F_NEST], ctr[t, C_STARTED],
        ftab[t, F_LR], ftab[t, F_DECAY], ctr[t, C_STEP], has_mom)
    return t, itab[t, T_GOFF] - itab[0, T_GOFF], itab[t, T_G], bmu, bd, c1, c2, eta


@njit(inline="always", **_JIT)
def _count(itab, ctr, has_mom):
    for t in range(itab.shape[0]):
        ctr[t, C_STEP] += 1
        if has_mom:
            ctr[t, C_STARTED] = 1


# The multi-tensor drivers, over every group of every tensor of a table (the
# per-group work of the phases above, so the arithmetic is theirs): one per
# (what, variant, momentum on/off, serial/parallel), with those as constants
# in their source, which is compiled as this module's (so numba's on-disk
# cache keeps them, as for :class:`._dispatch.TaskKernel`).  ``what``: 0 the
# whole step (phase 1, the check, phase 2), 1 phase 1 and the check, 2 phase
# 2 (the phases apart let several tables, tensors of other dtypes, be checked
# before any is written).
_MULTI_SRC = """
def {name}(itab, ftab, ctr, S, st, like, NG, chunks):
    if {what} != 2:
        nmax = 1
        for t in range(itab.shape[0]):
            nmax = max(nmax, itab[t, T_N])
        for c in {loop}(chunks.size - 1):
            # phase 1's scratch: a row, and a block for powers (one per run of groups)
            scr = np.full(nmax + POW_BLOCK, like)
            for gg in range(chunks[c], chunks[c + 1]):
                t, o, G, bmu, bd, c1, c2, eta = _tensor_coefficients(itab, ftab, ctr, gg, {M})
                w, g, buf, v, mk, masked = _views(itab, t, like, {M}, {V} == DUAL)
                _phase1(np.int64(gg - o), np.int64(gg), w, g, buf, v, ftab[t, F_WD], bmu, bd,
                        c1, c2, ftab[t, F_P], st, S, scr, {V}, {M})
        for gg in range(NG):
            if st[gg] != OK:
                return gg
    if {what} != 1:
        for c in {loop}(chunks.size - 1):
            for gg in range(chunks[c], chunks[c + 1]):
                t, o, G, bmu, bd, c1, c2, eta = _tensor_coefficients(itab, ftab, ctr, gg, {M})
                w, g, buf, v, mk, masked = _views(itab, t, like, {M}, {V} == DUAL)
                if masked:
                    _phase2(np.int64(gg - o), np.int64(gg), w, g, buf, v, ftab[t, F_WD], bmu,
                            bd, c1, c2, ftab[t, F_P], eta, S, mk, {V}, {M}, True)
                else:
                    _phase2(np.int64(gg - o), np.int64(gg), w, g, buf, v, ftab[t, F_WD], bmu,
                            bd, c1, c2, ftab[t, F_P], eta, S, mk, {V}, {M}, False)
        _count(itab, ctr, {M})
    return -1
"""
_WHAT = {"step": 0, "phase1": 1, "phase2": 2}
_MULTI = {}


def _multi(what, variant, has_mom, parallel):
    """The driver of :data:`_MULTI_SRC` for these constants (made once)."""
    key = (_WHAT[what], int(variant), bool(has_mom), bool(parallel))
    f = _MULTI.get(key)
    if f is None:
        name = "_multi_{}_{}_{}_{}".format(*(int(k) for k in key))
        ns = dict(globals())
        src = _MULTI_SRC.format(name=name, what=key[0], V=key[1], M=key[2],
                                loop="prange" if parallel else "range")
        exec(compile(src, __file__, "exec"), ns)
        py = ns[name]
        py.__module__, py.__qualname__ = __name__, name
        f = _MULTI[key] = njit(parallel=bool(parallel), **_JIT)(py)
    return f


class Tables:
    """The host description of a multi-tensor step: the int64 tensor table,
    the float64 hyperparameters and the int64 counters (one row per tensor,
    columns ``T_*``, ``F_*``, ``C_*``), for tensors of one dtype.

    ``rows``: per tensor a dict with the addresses ``w``, ``grad``, ``buf``,
    ``v``, ``mask`` (0: none; ``buf`` and ``v`` then point to a dummy row of
    ``n`` zeros the kernels read but never write), ``G``, ``n``, and ``p``,
    ``wd``, ``mu``, ``damp``, ``nest``, ``lr``, ``decay``, ``step``,
    ``started``.  The backend's :class:`MultiStep` keeps its own copies
    where the kernels need them (device memory on the GPU) and updates them
    through its setters.
    """

    def __init__(self, dtype, rows, base=0):
        T = len(rows)
        self.dtype = np.dtype(dtype)
        self.itab = np.zeros((T, T_COLS), np.int64)
        self.ftab = np.zeros((T, F_COLS), np.float64)
        self.ctr = np.zeros((T, 2), np.int64)
        o = base
        for t, r in enumerate(rows):
            self.itab[t, [T_W, T_GRAD, T_BUF, T_V, T_MASK, T_G, T_N, T_GOFF, T_MASKED]] = (
                r["w"], r.get("grad", 0), r["buf"], r["v"], r["mask"], r["G"], r["n"], o,
                1 if r["mask"] else 0)
            self.ftab[t] = (r["p"], r["wd"], r["mu"], r["damp"], r["nest"], r["lr"], r["decay"])
            self.ctr[t] = (r["step"], r["started"])
            o += r["G"]
        self.base = base
        self.ngroups = o - base
        self.size = int(sum(r["G"] * r["n"] for r in rows))

    def locate(self, gg):
        """(tensor, group within it) of global group ``gg`` (``base`` <= gg <
        ``base + ngroups``)."""
        t = int(np.searchsorted(self.itab[:, T_GOFF], gg, side="right")) - 1
        while self.itab[t, T_G] == 0:  # empty tensors share their successor's offset
            t += 1
        return t, int(gg - self.itab[t, T_GOFF])




#: how many chunks of equal work a parallel step splits its groups into
#: (threads take contiguous runs of chunks, so a few per thread suffice)
STEP_CHUNKS = 64


def work_per_group(tables):
    """Each tensor's cost of one group in units of work (``n`` elements at
    p = 2, ``3 n`` at another p: :data:`STEP_MIN_SIZE`'s weights)."""
    n = tables.itab[:, T_N]
    return np.where(tables.ftab[:, F_P] == 2.0, n, 3 * n).astype(np.int64)


def balanced_chunks(G, cost, nchunks=STEP_CHUNKS):
    """Boundaries (global group indices, from 0, increasing, last = total
    groups) of at most ``nchunks`` contiguous runs of groups of about equal
    work, for tensors of ``G[t]`` groups costing ``cost[t]`` each.

    The parallel step hands out chunks, not groups: groups differ in size by
    tensor (ResNet-18: 147 to 4,608 entries), and numba's static schedule
    gives every thread an equal *count* of iterations, which left one of two
    threads with 72% of ResNet-18's work.

    >>> balanced_chunks(np.array([4, 2]), np.array([1, 6]), 4).tolist()
    [0, 4, 5, 6]
    """
    per = np.repeat(np.asarray(cost, np.int64), np.asarray(G, np.int64))
    if per.size == 0:
        return np.array([0, 0], np.int64)
    cum = np.cumsum(per)
    k = min(int(nchunks), per.size)
    # a chunk ends after the first group whose cumulative work reaches its share
    cuts = np.searchsorted(cum, cum[-1] * np.arange(1, k) / k, side="left") + 1
    return np.unique(np.concatenate(([0], cuts, [per.size]))).astype(np.int64)


class MultiStep:
    """The LpSGD step of many tensors in one kernel call (CPU).

    Over a :class:`Tables` (the kernels read and write its host arrays
    directly): :meth:`run` steps every tensor and advances its counters, or
    writes nothing and returns the first bad global group and its status.
    The GPU twin is :class:`lpcore.kernels.cuda.lpsgd.MultiStep` (same
    methods).
    """

    def __init__(self, tables, variant, has_mom, guard=None):
        self.variant, self.has_mom = int(variant), bool(has_mom)
        self.t = tables
        self.like = tables.dtype.type(0)
        cost = work_per_group(tables)
        self.work = int(np.sum(tables.itab[:, T_G] * cost))
        self.chunks = balanced_chunks(tables.itab[:, T_G], cost)
        self.serial = np.array([0, tables.ngroups], np.int64)
        self.S = np.zeros((max(tables.ngroups, 1), 4))
        self.st = np.zeros(max(tables.ngroups, 1), np.int8)

    def set_grad(self, t, addr):
        self.t.itab[t, T_GRAD] = addr

    def set_mask(self, t, addr):
        self.t.itab[t, T_MASK] = addr
        self.t.itab[t, T_MASKED] = 1 if addr else 0

    def set_lr(self, t, lr, decay):
        self.t.ftab[t, F_LR] = lr
        self.t.ftab[t, F_DECAY] = decay

    def set_counters(self, t, step, started):
        self.t.ctr[t] = (step, started)

    def counters(self):
        return self.t.ctr

    def run(self, check="immediate", what="step", flag=0):
        """Run ``what`` ("step", "phase1" or "phase2") over every tensor:
        (-1, None), or (first bad global group, status) with nothing written
        (the CPU always checks at once: ``check`` and ``flag`` are the GPU's)."""
        t = self.t
        if t.ngroups == 0:
            if what != "phase1":
                t.ctr[:, C_STEP] += 1
                if self.has_mom:
                    t.ctr[:, C_STARTED] = 1
            return -1, None
        # decided per call: whether the machine is busy changes while a plan lives
        par = use_parallel(self.work, t.ngroups, STEP_MIN_SIZE)
        bad = _multi(what, self.variant, self.has_mom, par)(
            t.itab, t.ftab, t.ctr, self.S, self.st, self.like, t.ngroups,
            self.chunks if par else self.serial)
        return (bad + t.base, int(self.st[bad])) if bad >= 0 else (-1, None)

    def pending(self, wait=True):
        return -1, None

    def check_now(self):
        return -1, None

    def clear(self):
        pass
