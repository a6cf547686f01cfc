"""The LpSGD step on the GPU: every group of every tensor of a step in three
launches, without a synchronisation.

Contract as the CPU :class:`lpcore.kernels.lpsgd.MultiStep` (the same tensor
table, status codes and per-group arithmetic; directions and updates in
float64, fractional powers in the data's precision (``powf`` for float32),
sums in float64).  One
thread block per *slice* of a group (``nsplit`` slices per group, one for
ordinary fan-ins); a per-group reduction over several slices is finished by
the group's last block to arrive (an atomic counter per group, reset by that
block), not by a second kernel; a group of one slice has its values when its
block's reductions end and skips the combine.  The check and update kernels
are compiled once per variant and momentum setting (:data:`KERNELS`), so
each holds only its own branches (fewer registers, more blocks in flight):

``_k_check``  (phase 1, reads only) per slice, in one pass: max |d|, max |s|
              (s = v for ``dual``, w otherwise; NaN-propagating) and the
              slice's max-scaled ``sum (|d| / max)^q`` or, for
              ``riemannian``, ``<nu, d>`` and ``<nu, nu>``; the group's last
              block combines them into (max|d|, max|s|, ||d||_q or the
              tangent coefficient, update?, status).  A bad group sets the
              *guard* (an atomic min of its global index).
``_k_update`` (phase 2) nothing if the guard is set; else per slice, in one
              pass, the momentum buffer, the updated state, and the slice's
              max and max-scaled power sum of the new state; the last block
              makes the group's norm.
``_k_scale``  nothing if the guard is set; else normalise (``dual`` also maps
              v back to w) and advance the tensor's counters (step, momentum
              started).

One pass (DESIGN section 9) with max-scaled sums: each thread keeps its sums
scaled by its own running maximum (one power per entry, in the data's
precision: the entry's term, or the factor rescaling the sum when the entry is
a new maximum, :func:`_online`) and rescales them to the block's maximum in
float64 after the block's max reduction.  (The code before read each slice
twice: a max pass, then the scaled sums.)

Two entries a trip: each thread's loop loads two entries (``j`` and ``j +
blockDim``) before it computes or writes either, so it waits on memory once
per two entries; the ratios of the scaled sums are products with a
reciprocal (:func:`_ratio`), not float64 divisions, whose call pinned enough
registers to cost the check kernel a block per SM.  The kernels are bound by
memory latency, not bandwidth (DESIGN section 9): what overlaps is the loads
in flight, blocks per SM times entries per trip.  A block finds its tensor,
group and slice in its row of the block table (:func:`block_table`, made
once on the host), not by a search of the tensor table and 64-bit divisions.

The step size and the first-momentum-step rule are computed on the device
from the counters, so a CUDA graph that captured the launches replays later
steps correctly.  The guard stays set until the host clears it
(:meth:`MultiStep.clear`): a bad step, and every step after it, writes
nothing.  The host learns of it by a synchronising read (``check=
"immediate"``), by a copy into pinned memory read at the next call
(``"deferred"``, no synchronisation), or not at all (``"none"``, for graph
capture; :meth:`MultiStep.pending` reads it).
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64, int32

from ..._device import simulated
from ..lpsgd import (BAD_DIRECTION, BAD_STATE, C_STARTED, C_STEP, DUAL, F_DAMP, F_DECAY, F_LR,
                     F_MU, F_NEST, F_P, F_WD, OK, PRIMAL, RIEMANNIAN, T_BUF, T_G, T_GOFF, T_GRAD,
                     T_MASK, T_MASKED, T_N, T_V, T_W, direction, step_coefficients)
from ._launch import MAXT, config, launcher, stream
from ._reduce import bmax, bmax2, bsum, bsum2, last_block, maxnan, pow_like, slices_max2
from ._pointers import as_ptr

INF = math.inf
#: float64's smallest normal number (below it, 1 / x overflows)
SUB = float(np.finfo(np.float64).tiny)
#: shared memory for two block reductions at once (bsum2, bmax2)
MAXT2 = 2 * MAXT
#: the guard's value while no group is bad
CLEAR = np.int64(1 << 62)
_U8 = np.uint8(0)
_F32 = np.float32(0)
#: the guard's value when the external flag stopped the step
FLAG = np.int64(-2)
#: columns of the block table (a row per block): tensor, group, first and last
#: element of the block's slice, slices of its group, the group's first block,
#: the group counted from the table's first
B_T, B_I, B_J0, B_J1, B_NSPLIT, B_B0, B_GG = range(7)
#: rows of the float64 scratch: per group S (5 cols), per block partials, per group N;
#: S columns: max |d|, max |w|, the step coefficient (||d||_q, or <nu, d>/<nu, nu>
#: for the Riemannian variant), whether the group updates, its status
S_MD, S_MS, S_C, S_UPD, S_ST = range(5)

_dir = cuda.jit(device=True)(direction)
_coef = cuda.jit(device=True)(step_coefficients)


@cuda.jit(device=True)
def _tensor(itab, ftab, ctr, t, like, has_mom):
    """Tensor ``t``'s arrays (w, gradient, momentum buffer, dual state) and its
    step's coefficients, step size, weight decay and p."""
    bmu, bd, c1, c2, eta = _coef(ftab[t, F_MU], ftab[t, F_DAMP], ftab[t, F_NEST],
                                 ctr[t, C_STARTED], ftab[t, F_LR], ftab[t, F_DECAY],
                                 ctr[t, C_STEP], has_mom)
    return (as_ptr(itab[t, T_W], like), as_ptr(itab[t, T_GRAD], like),
            as_ptr(itab[t, T_BUF], like), as_ptr(itab[t, T_V], like), bmu, bd, c1, c2, eta,
            ftab[t, F_WD], ftab[t, F_P])


@cuda.jit(device=True)
def _locate(btab, b):
    """(tensor, group, first, last element of the slice, nsplit, first block of
    the group, the group counted from the table's first) of block ``b``: its
    row of the block table made on the host (:func:`block_table`), loads
    independent of each other, where a binary search of the tensor table and
    two 64-bit divisions were a chain of them."""
    return (btab[b, B_T], btab[b, B_I], btab[b, B_J0], btab[b, B_J1], btab[b, B_NSPLIT],
            btab[b, B_B0], btab[b, B_GG])


@cuda.jit(device=True, inline="always")
def _check(itab, btab, ftab, ctr, S, P, cnt, guard, like, variant, has_mom, ext):
    """The check kernel's body (inlined into each specialisation, where
    ``variant`` and ``has_mom`` are constants)."""
    sh = cuda.shared.array(MAXT2, float64)  # room for two reductions at once
    flag = cuda.shared.array(1, int32)
    b = cuda.blockIdx.x
    if ext != 0 and b == 0 and cuda.threadIdx.x == 0 and as_ptr(ext, _F32)[0] != 0:
        cuda.atomic.min(guard, 0, FLAG)
    t, i, j0, j1, nsplit, b0, gg = _locate(btab, b)
    G = itab[t, T_G]
    n = itab[t, T_N]
    tid = cuda.threadIdx.x
    md = 0.0
    ms = 0.0
    a = 0.0
    bb = 0.0
    if i < G:
        w, g, buf, v, bmu, bd, c1, c2, eta, wd, p = _tensor(itab, ftab, ctr, t, like, has_mom)
        row = i * n
        brow = row if has_mom else 0
        dual = variant == DUAL
        riem = variant == RIEMANNIAN
        # one pass: the sums are scaled by this thread's running maximum m of
        # |w| (riemannian) or |d| (rescaled when it grows), then by m / max.
        # Two entries a trip: both entries' loads are issued before either is
        # used, so a thread waits on memory once per two entries
        e = p - 1.0 if riem else p / (p - 1.0)
        m = 0.0
        nt = cuda.blockDim.x
        j = j0 + tid
        while j < j1:
            k = j + nt
            ga, wa, ua, va = _inputs(g, w, buf, v, row, brow, j, dual, has_mom)
            if k < j1:
                gb, wb, ub, vb = _inputs(g, w, buf, v, row, brow, k, dual, has_mom)
            else:
                gb, wb, ub, vb = ga, wa, ua, va
            md, ms, m, a, bb = _check_entry(ga, wa, ua, va, wd, bmu, bd, c1, c2, e, like, md,
                                            ms, m, a, bb, variant, has_mom)
            if k < j1:
                md, ms, m, a, bb = _check_entry(gb, wb, ub, vb, wd, bmu, bd, c1, c2, e, like,
                                                md, ms, m, a, bb, variant, has_mom)
            j = k + nt
        md, ms = bmax2(sh, md, ms)
        ref = ms if riem else md
        if md < INF and ms < INF and ref > 0.0:
            f = _rescale(m, ref, e)
            a *= f
            bb *= f * f
        else:
            a = 0.0
            bb = 0.0
        a, bb = bsum2(sh, a, bb)
    if i >= G:
        return
    p = ftab[t, F_P]
    if nsplit > 1:
        if tid == 0:  # this slice's partials
            P[b, 0], P[b, 1], P[b, 2], P[b, 3] = md, ms, a, bb
        if not last_block(cnt, gg, nsplit, flag):
            return
        # the group's last block: combine its slices (a one-slice group has its
        # values already: the combine would scale them by 1.0, exactly)
        md, ms, a, bb = _combine_check(sh, P, b0, nsplit, p, variant)
    if tid == 0:
        S[gg, S_MD] = md
        S[gg, S_MS] = ms
        S[gg, S_C] = 0.0
        S[gg, S_UPD] = 0.0
        if not ms < INF:  # first: a non-finite w also spoils d through weight decay
            S[gg, S_ST] = BAD_STATE
            cuda.atomic.min(guard, 0, gg + itab[0, T_GOFF])
        elif not md < INF:
            S[gg, S_ST] = BAD_DIRECTION
            cuda.atomic.min(guard, 0, gg + itab[0, T_GOFF])
        else:
            S[gg, S_ST] = OK
            if md > 0.0 and ms > 0.0:  # else: zero direction or dead group, left unchanged
                S[gg, S_UPD] = 1.0
                if variant == RIEMANNIAN:
                    S[gg, S_C] = a / bb
                else:
                    S[gg, S_C] = md * a ** (1.0 / (p / (p - 1.0)))


@cuda.jit(device=True, inline="always")
def _inputs(g, w, buf, v, row, brow, j, dual, has_mom):
    """Entry ``j``'s gradient, weight, momentum buffer and dual state as
    stored; an array the step does not read is not loaded (w stands in)."""
    wj = w[row + j]
    return g[row + j], wj, buf[brow + j] if has_mom else wj, v[row + j] if dual else wj


@cuda.jit(device=True, inline="always")
def _check_entry(gj, wj, bj, vj, wd, bmu, bd, c1, c2, e, like, md, ms, m, a, bb, variant,
                 has_mom):
    """One entry of the check's pass: the running (max |d|, max |s|, the
    sums' scale m, the sums a and bb) after it."""
    d, _ = _dir(gj, wj, bj, wd, bmu, bd, c1, c2, has_mom)
    w64 = float64(wj)
    md = maxnan(md, abs(d))
    ms = maxnan(ms, abs(float64(vj)) if variant == DUAL else abs(w64))
    riem = variant == RIEMANNIAN
    x = abs(w64) if riem else abs(d)
    up, r = _online(x, m, e, like)
    if riem:
        sd = -d if w64 < 0 else d
        if up:
            a = a * r + sd
            bb = bb * (r * r) + 1.0
            m = x
        else:
            a += r * sd
            bb += r * r
    elif up:
        a = a * r + 1.0
        m = x
    else:
        a += r
    return md, ms, m, a, bb


@cuda.jit(device=True)
def _online(x, m, e, like):
    """Entry ``x >= 0`` of a power sum kept scaled by the running maximum
    ``m``: (whether ``x`` is the new maximum, the power: ``(m / x)^e`` then,
    the factor rescaling the sum so far, else ``(x / m)^e``, the entry's
    term; 0 when both are 0).  One power either way, in the data's precision."""
    up = x > m
    num = m if up else x
    den = x if up else m
    return up, pow_like(_ratio(num, den), e, like) if den > 0.0 else 0.0


@cuda.jit(device=True, inline="always")
def _ratio(num, den):
    """``num / den`` (``0 <= num``, ``0 < den``) as num times den's reciprocal:
    within an ulp of the quotient and lighter on registers than a float64
    division (whose full-range routine is a call).  Both are scaled by 2^54
    when den is subnormal, so that the reciprocal stays finite."""
    sc = 18014398509481984.0 if den < SUB else 1.0
    return (num * sc) * (1.0 / (den * sc))


@cuda.jit(device=True)
def _rescale(m, ref, e):
    """``(m / ref)^e``: the factor taking a thread's sums from its own
    maximum ``m`` to the block's ``ref`` (0 for a thread that saw only zeros)."""
    return (m / ref) ** e if m > 0.0 else 0.0


@cuda.jit(device=True)
def _combine_check(sh, P, b0, nsplit, p, variant):
    """The group's (max |d|, max |s|, and its sums rescaled from each slice's
    maximum to the group's) from the partials of its ``nsplit`` slices
    ``P[b0 : b0 + nsplit]`` (block reductions; every thread gets them)."""
    md, ms = slices_max2(sh, P, b0, nsplit, 0, 1)
    bad = not (ms < INF and md < INF)
    a = 0.0
    bb = 0.0
    if not bad and md > 0.0 and ms > 0.0:
        c = b0 + cuda.threadIdx.x
        if variant == RIEMANNIAN:
            e = p - 1.0
            while c < b0 + nsplit:
                if P[c, 1] > 0.0:
                    r = (P[c, 1] / ms) ** e
                    a += P[c, 2] * r
                    bb += P[c, 3] * r * r
                c += cuda.blockDim.x
        else:
            q = p / (p - 1.0)
            while c < b0 + nsplit:
                if P[c, 0] > 0.0:
                    a += P[c, 2] * (P[c, 0] / md) ** q
                c += cuda.blockDim.x
    a, bb = bsum2(sh, a, bb)
    return md, ms, a, bb


@cuda.jit(device=True)
def _slice_terms(sh, x, row, j0, j1, e, like):
    """The slice's max |x| and sum (|x| / max)^e (block reductions)."""
    mx = 0.0
    j = j0 + cuda.threadIdx.x
    while j < j1:
        mx = maxnan(mx, abs(float64(x[row + j])))
        j += cuda.blockDim.x
    mx = bmax(sh, mx)
    acc = 0.0
    if mx > 0.0:
        j = j0 + cuda.threadIdx.x
        while j < j1:
            acc += pow_like(abs(float64(x[row + j])) / mx, e, like)
            j += cuda.blockDim.x
    return mx, bsum(sh, acc)


@cuda.jit(device=True, inline="always")
def _update_entry(gj, wj, bj, vj, kept, w, buf, v, at, wd, bmu, bd, c1, c2, keep, eta, coef, md,
                  ms, ud, p, r, like, masked, mx, m, acc, third, variant, has_mom):
    """One entry (index ``at``, inputs as loaded; ``kept``: its mask bit) of
    the update's pass: writes its momentum buffer and new state, returns the
    running (max |new state|, the sums' scale m, the sums of the terms of all
    and of the active entries) after it."""
    d, nb = _dir(gj, wj, bj, wd, bmu, bd, c1, c2, has_mom)
    if has_mom:
        buf[at] = nb
    if variant == DUAL:
        v[at] = keep * float64(vj) - (eta / coef) * d
        xv = float64(v[at])  # as stored
    else:
        w64 = float64(wj)
        if variant == PRIMAL:
            u = pow_like(_ratio(abs(d), md), 1.0 / (p - 1.0), like) * ud
            if d < 0:
                u = -u
            x = keep * w64 - eta * u
        else:
            nu = pow_like(_ratio(abs(w64), ms), p - 1.0, like)
            if w64 < 0:
                nu = -nu
            x = w64 - eta * (d - coef * nu)
        if not kept:
            x = 0.0
        w[at] = x
        xv = float64(w[at])
    ax = abs(xv)
    mx = maxnan(mx, ax)
    up, rr = _online(ax, m, r, like)
    active = masked and kept
    if up:
        acc = acc * rr + 1.0
        third = third * rr + (1.0 if active else 0.0)
        m = ax
    else:
        acc += rr
        if active:
            third += rr
    return mx, m, acc, third


@cuda.jit(device=True, inline="always")
def _update(itab, btab, ftab, ctr, S, Q, N, cnt, guard, like, variant, has_mom, ext):
    """The update kernel's body (inlined into each specialisation)."""
    if guard[0] != CLEAR:
        if ext != 0 and cuda.blockIdx.x == 0 and cuda.threadIdx.x == 0:
            as_ptr(ext, _F32)[0] = 1.0  # the binding's own updates skip too
        return
    sh = cuda.shared.array(MAXT2, float64)  # room for two reductions at once
    flag = cuda.shared.array(1, int32)
    b = cuda.blockIdx.x
    t, i, j0, j1, nsplit, b0, gg = _locate(btab, b)
    G = itab[t, T_G]
    if i >= G:
        return
    n = itab[t, T_N]
    tid = cuda.threadIdx.x
    w, g, buf, v, bmu, bd, c1, c2, eta, wd, p = _tensor(itab, ftab, ctr, t, like, has_mom)
    masked = itab[t, T_MASKED] != 0
    mk = as_ptr(itab[t, T_MASK], _U8)
    row = i * n
    brow = row if has_mom else 0
    dual = variant == DUAL
    r = p / (p - 1.0) if dual else p
    moved = S[gg, S_UPD] != 0.0
    mx = 0.0
    acc = 0.0
    third = 0.0  # moved: the active entries' terms (dual, masked); else: whether the mask hit
    if not moved:
        j = j0 + tid
        while j < j1:
            if has_mom:  # the momentum buffer still advances
                _, nb = _dir(g[row + j], w[row + j], buf[brow + j], wd, bmu, bd, c1, c2,
                             has_mom)
                buf[row + j] = nb
            if masked and mk[row + j] == 0:  # zero the masked entries
                if w[row + j] != 0:
                    third = 1.0
                w[row + j] = 0
            j += cuda.blockDim.x
        if masked:  # the Lp terms of the rest, in case the mask zeroed an entry
            third = bmax(sh, third)
            mx, acc = _slice_terms(sh, w, row, j0, j1, p, like)
    else:
        md = S[gg, S_MD]
        ms = S[gg, S_MS]
        coef = S[gg, S_C]
        keep = 1.0 - eta
        inv_p_minus_one = 1.0 / (p - 1.0)
        ud = (md / coef) ** inv_p_minus_one if variant == PRIMAL else 1.0
        m = 0.0  # this thread's running maximum of the new state: its sums' scale
        nt = cuda.blockDim.x
        j = j0 + tid
        while j < j1:  # two entries a trip, loaded before either is written
            k = j + nt
            ga, wa, ua, va = _inputs(g, w, buf, v, row, brow, j, dual, has_mom)
            ka = mk[row + j] != 0 if masked else True
            if k < j1:
                gb, wb, ub, vb = _inputs(g, w, buf, v, row, brow, k, dual, has_mom)
                kb = mk[row + k] != 0 if masked else True
            else:
                gb, wb, ub, vb, kb = ga, wa, ua, va, ka
            mx, m, acc, third = _update_entry(ga, wa, ua, va, ka, w, buf, v, row + j, wd, bmu,
                                              bd, c1, c2, keep, eta, coef, md, ms, ud, p, r,
                                              like, masked, mx, m, acc, third, variant, has_mom)
            if k < j1:
                mx, m, acc, third = _update_entry(gb, wb, ub, vb, kb, w, buf, v, row + k, wd,
                                                  bmu, bd, c1, c2, keep, eta, coef, md, ms, ud,
                                                  p, r, like, masked, mx, m, acc, third, variant,
                                                  has_mom)
            j = k + nt
        mx = bmax(sh, mx)
        if mx > 0.0:
            f = _rescale(m, mx, r)
            acc *= f
            third *= f
        else:
            acc = 0.0
            third = 0.0
        acc, third = bsum2(sh, acc, third)
    # N[gg] = (the r-norm of the new state, or for a group the step did not
    # move the Lp norm of its masked w if the mask zeroed an entry, else 0:
    # left as it is; the factor putting w's active entries on the sphere)
    e = r if moved else p
    if nsplit > 1:
        if tid == 0:  # this slice's partials
            Q[b, 0], Q[b, 1], Q[b, 2] = mx, acc, third
        if not last_block(cnt, gg, nsplit, flag):
            return
        # the group's last block: combine its slices
        mx, hit = slices_max2(sh, Q, b0, nsplit, 0, 2)
        use = mx > 0.0 and (moved or (masked and hit > 0.0))
        acc, act = _combine_update(sh, Q, b0, nsplit, e, mx, use)
    else:  # one slice: its values are the group's (the combine would scale by 1.0)
        use = mx > 0.0 and (moved or (masked and maxnan(0.0, third) > 0.0))
        act = third if use else 0.0
        if not use:
            acc = 0.0
    if tid == 0:
        N[gg, 0] = mx * acc ** (1.0 / e) if use else 0.0
        N[gg, 1] = 1.0
        if masked and dual and moved and use:
            N[gg, 1] = (act / acc) ** (-1.0 / p) if act > 0.0 else 0.0


@cuda.jit(device=True)
def _combine_update(sh, Q, b0, nsplit, e, mx, use):
    """The group's sums of the new state's terms (all, active) rescaled from
    each slice's maximum to the group's ``mx`` (block reductions)."""
    acc = 0.0
    act = 0.0
    if use:
        c = b0 + cuda.threadIdx.x
        while c < b0 + nsplit:
            if Q[c, 0] > 0.0:
                sc = (Q[c, 0] / mx) ** e
                acc += Q[c, 1] * sc
                act += Q[c, 2] * sc
            c += cuda.blockDim.x
    return bsum2(sh, acc, act)


@cuda.jit
def _k_scale(itab, btab, ftab, ctr, S, N, guard, like, variant, has_mom):
    if guard[0] != CLEAR:
        return
    b = cuda.blockIdx.x
    t, i, j0, j1, nsplit, b0, gg = _locate(btab, b)
    if i == 0 and b == b0 and cuda.threadIdx.x == 0:  # the tensor's first block: its counters
        ctr[t, C_STEP] += 1
        if has_mom:
            ctr[t, C_STARTED] = 1
    if i >= itab[t, T_G]:
        return
    nv = N[gg, 0]
    if not nv > 0.0:
        return
    n = itab[t, T_N]
    w = as_ptr(itab[t, T_W], like)
    v = as_ptr(itab[t, T_V], like)
    masked = itab[t, T_MASKED] != 0
    mk = as_ptr(itab[t, T_MASK], _U8)
    inv_p_minus_one = 1.0 / (ftab[t, F_P] - 1.0)
    f = 1.0 / nv
    fw = N[gg, 1]
    row = i * n
    dual = variant == DUAL and S[gg, S_UPD] != 0.0
    src = v if dual else w
    gate = masked and dual  # only the dual variant's w reads the mask here
    nt = cuda.blockDim.x
    j = j0 + cuda.threadIdx.x
    while j < j1:  # two entries a trip, loaded before either is written
        k = j + nt
        xa = src[row + j]
        ka = mk[row + j] != 0 if gate else True
        if k < j1:
            xb = src[row + k]
            kb = mk[row + k] != 0 if gate else True
        else:
            xb, kb = xa, ka
        _scale_entry(xa, ka, w, v, row + j, f, fw, inv_p_minus_one, like, dual, masked)
        if k < j1:
            _scale_entry(xb, kb, w, v, row + k, f, fw, inv_p_minus_one, like, dual, masked)
        j = k + nt


@cuda.jit(device=True, inline="always")
def _scale_entry(x, kept, w, v, at, f, fw, inv_p_minus_one, like, dual, masked):
    """Entry ``at`` of the scale: ``x`` (as loaded: v's entry for a dual
    group the step moved, else w's) times ``f``; a dual group's w is then
    mapped back from the new v (zero where the mask is off)."""
    if dual:
        v[at] = float64(x) * f
        y = float64(v[at])
        if not kept:
            w[at] = 0.0
        else:
            rr = pow_like(abs(y), inv_p_minus_one, like)
            if masked:
                rr = rr * fw
            w[at] = -rr if y < 0 else rr
    else:
        w[at] = float64(x) * f


def _specialised(variant, has_mom):
    """The check and update kernels of one variant and momentum setting.  The
    two are compile-time constants there, so each kernel keeps only its own
    branches and registers: on sm_90 (ptxas, float32) the dual check and
    update with momentum need 56 and 68 registers a thread (four and three
    blocks of 256 threads per SM); one kernel of every variant needed 119 in
    its update, two blocks."""
    @cuda.jit
    def _k_check(itab, btab, ftab, ctr, S, P, cnt, guard, like, ext):
        _check(itab, btab, ftab, ctr, S, P, cnt, guard, like, variant, has_mom, ext)

    @cuda.jit
    def _k_update(itab, btab, ftab, ctr, S, Q, N, cnt, guard, like, ext):
        _update(itab, btab, ftab, ctr, S, Q, N, cnt, guard, like, variant, has_mom, ext)

    return _k_check, _k_update


#: (variant, has_mom) -> (check kernel, update kernel), each compiled on first use
KERNELS = {(v, m): _specialised(v, m) for v in (DUAL, PRIMAL, RIEMANNIAN) for m in (False, True)}
_LAUNCH = {key: (launcher(c), launcher(u)) for key, (c, u) in KERNELS.items()}
_scale_launch = launcher(_k_scale)


def block_table(itab, per_block):
    """The block table of a step over the tensor table ``itab``: a row per
    thread block (columns ``B_*``), a group of ``n`` entries cut into
    ``ceil(n / per_block)`` slices of equal span, one block each, tensor
    after tensor and group after group; an empty tensor keeps one block (it
    still advances its counters)."""
    rows = []
    goff0 = int(itab[0, T_GOFF]) if len(itab) else 0
    boff = 0
    for t in range(itab.shape[0]):
        G, n = int(itab[t, T_G]), int(itab[t, T_N])
        nsplit = max(1, -(-n // per_block))
        local = np.arange(max(1, G * nsplit), dtype=np.int64)
        i = local // nsplit
        sl = local - i * nsplit
        span = -(-n // nsplit)
        j0 = sl * span
        rows.append(np.stack([np.full_like(local, t), i, j0, np.minimum(n, j0 + span),
                              np.full_like(local, nsplit), boff + local - sl,
                              int(itab[t, T_GOFF]) - goff0 + i], axis=1))
        boff += local.size
    return np.ascontiguousarray(np.concatenate(rows) if rows else np.zeros((0, 7), np.int64))


class MultiStep:
    """The GPU twin of :class:`lpcore.kernels.lpsgd.MultiStep`: the tables in
    device memory (uploaded once; a gradient, mask or learning rate that
    changes is uploaded from pinned memory, asynchronously, before the next
    launch), per-group and per-block scratch made once, three launches per
    step on the current stream (:func:`._launch.stream`), and the guard."""

    def __init__(self, tables, variant, has_mom, guard=None):
        self.t = tables
        self.variant, self.has_mom = int(variant), bool(has_mom)
        self.launch_check, self.launch_update = _LAUNCH[(self.variant, self.has_mom)]
        self.like = tables.dtype.type(0)
        self.threads = config.threads
        per_block = self.threads * config.items
        btab = block_table(tables.itab, per_block)
        self.blocks = nblocks = btab.shape[0]
        s = stream()
        # pinned host mirrors of what the host updates, device copies the kernels read
        self.h_itab = cuda.pinned_array(tables.itab.shape, np.int64)
        self.h_itab[...] = tables.itab
        self.h_ftab = cuda.pinned_array(tables.ftab.shape, np.float64)
        self.h_ftab[...] = tables.ftab
        self.itab = cuda.to_device(self.h_itab, stream=s)
        self.ftab = cuda.to_device(self.h_ftab, stream=s)
        self.ctr = cuda.to_device(tables.ctr, stream=s)
        self.btab = cuda.to_device(btab, stream=s)
        NG = max(1, tables.ngroups)
        self.S = cuda.device_array((NG, 5))
        self.P = cuda.device_array((nblocks, 4))
        self.N = cuda.device_array((NG, 2))
        self.cnt = cuda.to_device(np.zeros(NG, np.int64), stream=s)
        # the guard may be shared with the other tables of a step (tensors of other
        # dtypes): then a bad group in any of them stops them all
        self.guard = cuda.to_device(np.array([CLEAR], np.int64), stream=s) if guard is None \
            else guard
        self.h_guard = cuda.pinned_array(1, np.int64)
        self.h_guard[0] = CLEAR
        self.h_clear = cuda.pinned_array(1, np.int64)
        self.h_clear[0] = CLEAR
        self.event = None  # the deferred check's copy, until read
        self.dirty_i = self.dirty_f = False
        if s != 0:
            s.synchronize()  # the pinned sources above are reused by later uploads

    # ------------------------------------------------------------------ setters
    def set_grad(self, t, addr):
        if self.h_itab[t, T_GRAD] != addr:
            self.h_itab[t, T_GRAD] = addr
            self.t.itab[t, T_GRAD] = addr
            self.dirty_i = True

    def set_mask(self, t, addr):
        if self.h_itab[t, T_MASK] != addr:
            self.h_itab[t, T_MASK] = addr
            self.h_itab[t, T_MASKED] = 1 if addr else 0
            self.t.itab[t, T_MASK] = addr
            self.t.itab[t, T_MASKED] = 1 if addr else 0
            self.dirty_i = True

    def set_lr(self, t, lr, decay):
        if self.h_ftab[t, F_LR] != lr or self.h_ftab[t, F_DECAY] != decay:
            self.h_ftab[t, F_LR] = lr
            self.h_ftab[t, F_DECAY] = decay
            self.t.ftab[t, F_LR] = lr
            self.t.ftab[t, F_DECAY] = decay
            self.dirty_f = True

    def set_counters(self, t, step, started):
        """The counters of tensor ``t`` (a synchronous upload: not a hot path)."""
        self.t.ctr[t] = (step, started)
        self.ctr[t:t + 1].copy_to_device(np.ascontiguousarray(self.t.ctr[t:t + 1]),
                                         stream=stream())

    def counters(self):
        """The device counters, copied to the host (waits for the stream)."""
        from ._launch import to_host
        self.t.ctr[...] = to_host(self.ctr)
        return self.t.ctr

    # ------------------------------------------------------------------ the step
    def run(self, check="immediate", what="step", flag=0):
        """Enqueue the step.  ``check``: ``"immediate"`` reads the guard back
        after the check kernel (a synchronisation) and returns (first bad
        global group, status) with nothing written, or (-1, None);
        ``"deferred"`` enqueues everything and a copy of the guard into pinned
        memory that :meth:`pending` reads; ``"none"`` enqueues the kernels
        only (graph capture)."""
        s = stream()
        if self.dirty_i:
            self.itab.copy_to_device(self.h_itab, stream=s)
            self.dirty_i = False
        if self.dirty_f:
            self.ftab.copy_to_device(self.h_ftab, stream=s)
            self.dirty_f = False
        common = (self.itab, self.btab, self.ftab, self.ctr, self.S)
        nt = self.threads
        if what != "phase2":
            self.launch_check(self.blocks, nt, s, *common, self.P, self.cnt, self.guard,
                              self.like, flag)
            if check == "immediate":
                bad = self._read_guard(s)
                if bad != -1:
                    return bad, self._status(bad)
            if what == "phase1":
                return -1, None
        self.launch_update(self.blocks, nt, s, *common, self.P, self.N, self.cnt, self.guard,
                           self.like, flag)
        _scale_launch(self.blocks, nt, s, *common, self.N, self.guard, self.like, self.variant,
                      self.has_mom)
        if check == "deferred":
            self.guard.copy_to_host(self.h_guard, stream=s)
            self.event = cuda.event() if simulated() else cuda.event(timing=False)
            self.event.record(stream=s)
        return -1, None

    def _read_guard(self, s):
        self.guard.copy_to_host(self.h_guard, stream=s)
        if s != 0:
            s.synchronize()
        else:
            cuda.synchronize()
        g = int(self.h_guard[0])
        return -1 if g == CLEAR else g

    def _status(self, gg):
        """The status of global group ``gg``, or None when it is another table's."""
        from ._launch import to_host
        k = gg - self.t.base
        if not 0 <= k < self.t.ngroups:
            return None
        return int(to_host(self.S[k:k + 1])[0, S_ST])

    def pending(self, wait=True):
        """The deferred check of the last step: (first bad global group,
        status) or (-1, None); None when it is not known yet and ``wait`` is
        false.  ``wait``: wait for the last step's kernels (not for later work)."""
        if self.event is None:
            return -1, None
        if not wait and not self.event.query():
            return None
        self.event.synchronize()
        self.event = None
        g = int(self.h_guard[0])
        return (-1, None) if g == CLEAR else (g, self._status(g))

    def check_now(self):
        """The guard as it is after all enqueued work (a synchronisation)."""
        self.event = None
        bad = self._read_guard(stream())
        return (-1, None) if bad == -1 else (bad, self._status(bad))

    def clear(self):
        """Clear the guard (after its error was raised): later steps write again."""
        self.guard.copy_to_device(self.h_clear, stream=stream())
        self.h_guard[0] = CLEAR
        self.event = None
