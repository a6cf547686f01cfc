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
from numba import cuda, float64, int32, int64

from ._launch import MAXT, config, flags, grid1d, launch1d, scratch, stream, threads_for, to_host
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


# ---------------------------------------------------------------------------
# select_keys: the k largest keys among the inactive entries (or the k
# smallest among the active ones), ties to the lower flat index, found by a
# radix select on the composite key (the float64 key's bit pattern, reversed
# for the smallest, then N - 1 - index): 12 passes of an 8-bit histogram and
# a one-thread pick, all on the device; the composite key of every entry is
# distinct, so "at least the k-th largest" selects exactly k.  Non-negative
# float64 keys order as their int64 bit patterns, and finite ones lie below
# the bits of +Inf.

_DIGITS_HI = 8  # digits of the key's bits (bits 63..0)
_PASSES = _DIGITS_HI + 4  # and of the 32-bit index part
#: the bit pattern of +Inf, whose difference reverses the order of finite keys
_INF_BITS = int(np.array(np.inf).view(np.int64))
#: the selection's device state: the chosen prefix (key bits, index part),
#: the rank still to find, the candidates' count
_ST_HI, _ST_LO, _ST_K, _ST_N = 0, 1, 2, 3


@cuda.jit(cache=True)
def _k_select_start(m, active, k, st, hist):
    """Count the candidates (``m == active``, into a zeroed ``st``); zero the
    histogram."""
    e = cuda.grid(1)
    if e == 0:
        st[_ST_K] = k
    z = e
    while z < 256:
        hist[z] = 0
        z += cuda.gridsize(1)
    c = 0
    while e < m.size:
        if m[e] == active:
            c += 1
        e += cuda.gridsize(1)
    if c:
        cuda.atomic.add(st, _ST_N, c)


@cuda.jit(device=True)
def _key(bits, e, active):
    """The high part of entry ``e``'s composite key."""
    return _INF_BITS - bits[e] if active else bits[e]


@cuda.jit(device=True)
def _digit(hi, lo, d):
    if d < _DIGITS_HI:
        return (hi >> (56 - 8 * d)) & 255
    return (lo >> (24 - 8 * (d - _DIGITS_HI))) & 255


@cuda.jit(device=True)
def _prefix_matches(hi, lo, st, d):
    """Whether the composite key's digits before ``d`` are the chosen ones."""
    if d == 0:
        return True
    if d <= _DIGITS_HI:
        s = 64 - 8 * d
        return (hi >> s) == (st[_ST_HI] >> s)
    if hi != st[_ST_HI]:
        return False
    s = 32 - 8 * (d - _DIGITS_HI)
    return (lo >> s) == (st[_ST_LO] >> s)


@cuda.jit(cache=True)
def _k_hist(bits, m, active, d, st, hist):
    loc = cuda.shared.array(256, int32)
    t = cuda.threadIdx.x
    while t < 256:
        loc[t] = 0
        t += cuda.blockDim.x
    cuda.syncthreads()
    N = m.size
    e = cuda.grid(1)
    while e < N:
        if m[e] == active:
            hi = _key(bits, e, active)
            lo = N - 1 - e
            if _prefix_matches(hi, lo, st, d):
                cuda.atomic.add(loc, _digit(hi, lo, d), 1)
        e += cuda.gridsize(1)
    cuda.syncthreads()
    t = cuda.threadIdx.x
    while t < 256:
        if loc[t]:
            cuda.atomic.add(hist, t, int64(loc[t]))
        t += cuda.blockDim.x


@cuda.jit(cache=True)
def _k_pick(hist, st, d):
    """One thread: the digit of the rank still sought (from the largest), the
    rank within it; the histogram zeroed for the next pass."""
    if cuda.grid(1) != 0:
        return
    k = st[_ST_K]
    acc = 0
    b = 255
    while b > 0 and acc + hist[b] < k:
        acc += hist[b]
        b -= 1
    st[_ST_K] = k - acc
    if d < _DIGITS_HI:
        st[_ST_HI] = st[_ST_HI] | (b << (56 - 8 * d))
    else:
        st[_ST_LO] = st[_ST_LO] | (b << (24 - 8 * (d - _DIGITS_HI)))
    for c in range(256):
        hist[c] = 0


@cuda.jit(cache=True)
def _k_mark(bits, m, active, st, new, marks):
    """new = m XOR (candidates with a composite key at least the k-th largest)."""
    N = m.size
    e = cuda.grid(1)
    while e < N:
        g = False
        if m[e] == active:
            hi = _key(bits, e, active)
            g = hi > st[_ST_HI] or (hi == st[_ST_HI] and N - 1 - e >= st[_ST_LO])
        new[e] = m[e] != g
        marks[e] = 1 if g else 0
        e += cuda.gridsize(1)


@cuda.jit(cache=True)
def _k_compact(flags, idx):
    """One block: the positions of the set flags, in order (a block-wide
    exclusive scan per tile of blockDim.x entries)."""
    sh = cuda.shared.array(MAXT, int64)
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    base = 0
    start = 0
    while start < flags.size:
        e = start + t
        f = 1 if e < flags.size and flags[e] else 0
        sh[t] = f
        cuda.syncthreads()
        off = 1
        while off < nt:  # Hillis-Steele inclusive scan
            v = sh[t - off] if t >= off else 0
            cuda.syncthreads()
            sh[t] += v
            cuda.syncthreads()
            off *= 2
        if f:
            idx[base + sh[t] - 1] = e
        total = sh[nt - 1]
        cuda.syncthreads()
        base += total
        start += nt


def _start(m, k, active=False):
    """Zero the selection state, count the candidates (``m == active``) into
    it and zero the histogram: (state, histogram)."""
    st = scratch("select_state", (4,), np.int64)
    hist = scratch("select_hist", (256,), np.int64)
    st.copy_to_device(np.zeros(4, np.int64), stream=stream())
    bl, nt = grid1d(max(m.size, 256))
    _k_select_start[bl, nt, stream()](m, bool(active), int(k), st, hist)
    return st, hist


def inactive_count(m):
    """The number of False entries of a 1-D boolean device array (one integer
    copied to the host)."""
    st, _ = _start(m, 0)
    return int(to_host(st)[_ST_N])


@cuda.jit(cache=True)
def _k_keys(s, nrm, n, out):
    """out = |s| / (nrm / n) per row, 0 where that mean is 0."""
    cols = s.shape[1]
    e = cuda.grid(1)
    while e < s.size:
        i = e // cols
        j = e - i * cols
        mean = nrm[i] / n
        out[i, j] = abs(float64(s[i, j])) / mean if mean > 0.0 else 0.0
        e += cuda.gridsize(1)


def grow_keys(s, nrm, n, out):
    """The contract of :func:`lpcore.kernels.topology.grow_keys` on device arrays."""
    if s.size:
        bl, nt = grid1d(s.size)
        _k_keys[bl, nt, stream()](s, nrm, float(max(n, 1)), out)
    return out


def select_keys(keys, m, k, active=False):
    """The contract of :func:`lpcore.kernels.topology.select_keys` on 1-D
    device arrays: ``(m XOR selected, the selected indices increasing,
    int64)``, all on the device (no copy to the host)."""
    N = m.size
    if N >= 1 << 32:
        raise ValueError("lpcore: a GPU selection ranks at most 2**32 entries per call")
    new = cuda.device_array(N, dtype=np.bool_, stream=stream())
    idx = cuda.device_array(max(int(k), 1), dtype=np.int64, stream=stream())[:int(k)]
    bl, nt = grid1d(max(N, 1))
    if k <= 0:
        return copy_mask(m, new), idx
    st, bits = _radix(keys, m, k, active, _PASSES)
    marks = cuda.device_array(N, dtype=np.uint8, stream=stream())
    _k_mark[bl, nt, stream()](bits, m, bool(active), st, new, marks)
    _k_compact[1, config.threads, stream()](marks, idx)
    return new, idx


def _radix(keys, m, k, active, passes):
    """The radix select's first ``passes`` digit passes (``_DIGITS_HI``: the
    key bits only): (the device state, the keys' bits)."""
    st, hist = _start(m, k, active)
    bits = keys.view(np.int64)
    bl, nt = grid1d(max(m.size, 1))
    for d in range(passes):
        _k_hist[bl, nt, stream()](bits, m, bool(active), d, st, hist)
        _k_pick[1, 1, stream()](hist, st, d)
    return st, bits


def kth_key(keys, m, k, active=False):
    """The value of the ``k``-th (1-based) largest non-negative float64 key
    where the 1-D boolean ``m`` is False (``active``: the ``k``-th smallest
    where it is True): the radix select's key passes, one copy of its state
    to the host."""
    st, _ = _radix(keys, m, k, active, _DIGITS_HI)
    hi = int(to_host(st)[_ST_HI])
    return float(np.array(_INF_BITS - hi if active else hi, np.int64).view(np.float64))


def copy_mask(src, dst):
    """``dst[...] = src`` on 1-D boolean device arrays."""
    launch1d(_k_copy_mask, src.size, src, dst)
    return dst


@cuda.jit(cache=True)
def _k_magnitudes(x, m, among, out, count):
    e = cuda.grid(1)
    c = 0
    while e < x.size:
        if m[e] == among:
            a = abs(float64(x[e]))
            out[e] = a
            if not a < INF:
                c += 1
        else:
            out[e] = 0.0
        e += cuda.gridsize(1)
    if c:
        cuda.atomic.add(count, 0, c)


def magnitudes(x, m, among, out):
    """The contract of :func:`lpcore.kernels.topology.magnitudes` on 1-D
    device arrays (the count of non-finite entries is the one copy)."""
    if x.size == 0:
        return 0
    count = flags()
    bl, nt = grid1d(x.size)
    _k_magnitudes[bl, nt, stream()](x, m, bool(among), out, count)
    return int(to_host(count)[0])


@cuda.jit(cache=True)
def _k_marks(m, among, marks):
    e = cuda.grid(1)
    while e < m.size:
        marks[e] = 1 if m[e] == among else 0
        e += cuda.gridsize(1)


@cuda.jit(cache=True)
def _k_take(free, ranks, new, idx):
    """idx[r] = free[ranks[r]]; those entries of ``new`` set."""
    r = cuda.grid(1)
    while r < ranks.size:
        e = free[ranks[r]]
        idx[r] = e
        new[e] = True
        r += cuda.gridsize(1)


def grow_at(m, ranks, n_free):
    """The contract of :func:`lpcore.kernels.topology.grow_at` on a 1-D
    boolean device array (``ranks`` from the host: the one copy is to the
    device)."""
    N, k = m.size, len(ranks)
    new = copy_mask(m, cuda.device_array(N, dtype=np.bool_, stream=stream()))
    idx = cuda.device_array(max(k, 1), dtype=np.int64, stream=stream())[:k]
    if k:
        marks = cuda.device_array(N, dtype=np.uint8, stream=stream())
        bl, nt = grid1d(N)
        _k_marks[bl, nt, stream()](m, False, marks)
        free = cuda.device_array(int(n_free), dtype=np.int64, stream=stream())
        _k_compact[1, config.threads, stream()](marks, free)
        r = cuda.to_device(np.ascontiguousarray(ranks, dtype=np.int64), stream=stream())
        bl, nt = grid1d(k)
        _k_take[bl, nt, stream()](free, r, new, idx)
    return new, idx


@cuda.jit(cache=True)
def _k_copy_mask(m, new):
    e = cuda.grid(1)
    while e < m.size:
        new[e] = m[e]
        e += cuda.gridsize(1)


# ---------------------------------------------------------------------------
# activated: the positions of new & ~(a & b), counted on the device (one
# integer copied to the host: the length of the result), then compacted in
# order by the one-block scan


@cuda.jit(cache=True)
def _k_activated(new, a, b, marks, count):
    e = cuda.grid(1)
    c = 0
    while e < new.size:
        on = new[e] and not (a[e] and b[e])
        marks[e] = 1 if on else 0
        if on:
            c += 1
        e += cuda.gridsize(1)
    if c:
        cuda.atomic.add(count, 0, c)


def activated(new, a, b):
    """The contract of :func:`lpcore.kernels.topology.activated` on 1-D
    boolean device arrays: an int64 device array of the positions."""
    N = new.size
    count = flags()  # zeroed; [0] counts the marks
    marks = cuda.device_array(max(N, 1), dtype=np.uint8, stream=stream())
    if N:
        bl, nt = grid1d(N)
        _k_activated[bl, nt, stream()](new, a, b, marks, count)
    k = int(to_host(count)[0])
    idx = cuda.device_array(max(k, 1), dtype=np.int64, stream=stream())[:k]
    if k:
        _k_compact[1, config.threads, stream()](marks, idx)
    return idx


# ---------------------------------------------------------------------------
# Chase's channel steps: one block per row (grid-stride over the rows) for
# the row reductions; the counts that decide are the one copy to the host


@cuda.jit(cache=True)
def _k_rows(w, m, with_w, live, umm, cnt):
    """Per row (a block each): ``live`` = it has an active entry (rows
    without one counted in cnt[0]); ``with_w``: ``umm`` = the sum of the
    active ``|w|`` over n, the first row with a non-finite active weight as
    G - i in cnt[1]."""
    sh = cuda.shared.array(MAXT2, float64)
    n = m.shape[1]
    for i in range(cuda.blockIdx.x, m.shape[0], cuda.gridDim.x):
        acc = 0.0
        on = 0.0
        for j in range(cuda.threadIdx.x, n, cuda.blockDim.x):
            if m[i, j]:
                on += 1.0
                if with_w:
                    a = abs(float64(w[i, j]))
                    acc += a
                    if not a < INF:  # the first bad row: the largest G - i
                        cuda.atomic.max(cnt, 1, m.shape[0] - i)
        acc, on = bsum2(sh, acc, on)
        if cuda.threadIdx.x == 0:
            live[i] = on != 0.0
            if on == 0.0:
                cuda.atomic.add(cnt, 0, 1)
            if with_w:
                umm[i] = acc / max(n, 1)


def _rows(w, m, live, umm):
    """Launch :func:`_k_rows` over the (G, n) mask ``m``: (rows without an
    active entry, the first row with a non-finite active weight or G), one
    copy."""
    G, n = m.shape
    cnt = flags()
    with_w = umm is not None
    _k_rows[max(1, min(G, config.max_blocks)), threads_for(max(n, 1)), stream()](
        w if with_w else m, m, with_w, live, umm if with_w else scratch("rows_umm", (1,)), cnt)
    c = to_host(cnt)
    return int(c[0]), G - int(c[1])


def live_rows(m, out):
    """The contract of :func:`lpcore.kernels.topology.live_rows` on device
    arrays (one integer copied)."""
    if m.shape[0] == 0:
        return 0
    return _rows(None, m, out, None)[0]


def row_umm(w, m, out):
    """The contract of :func:`lpcore.kernels.topology.row_umm` on device
    arrays (the first bad row is the one copy)."""
    G = w.shape[0]
    if G == 0:
        return 0
    return _rows(w, m, scratch("rows_live", (G,), np.bool_), out)[1]


@cuda.jit(cache=True)
def _k_fill_rows(m, rows, on, value, out, cnt):
    cols = m.shape[1]
    e = cuda.grid(1)
    c = 0
    while e < m.size:
        i = e // cols
        j = e - i * cols
        v = m[i, j]
        if rows[i] == on:
            if v != value:
                c += 1
            v = value
        out[i, j] = v
        e += cuda.gridsize(1)
    if c:
        cuda.atomic.add(cnt, 0, c)


def fill_rows(m, rows, on, value, out):
    """The contract of :func:`lpcore.kernels.topology.fill_rows` on device
    arrays (the changed count is the one copy)."""
    if m.size == 0:
        return 0
    cnt = flags()
    launch1d(_k_fill_rows, m.size, m, rows, bool(on), bool(value), out, cnt)
    return int(to_host(cnt)[0])
