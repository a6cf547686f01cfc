"""Device-side building blocks shared by the CUDA kernels: block-level
reductions in shared memory (:func:`bsum`, :func:`bmax`, NaN-propagating
:func:`maxnan`; two at once: :func:`bsum2`, :func:`bmax2`,
:func:`slices_max2`), the last-block-done test of a multi-block group
(:func:`last_block`), a block's slice of its group (:func:`block_slice`) and
the power in the data's precision (:func:`pow_like`; :func:`pow_wide` for
float32 data whose float32 power could overflow) and the loads of four
entries of a block-stride loop at once (:func:`load4`).  The host side (launch
geometry, streams, scratch) is ``_launch.py``."""
import math

from numba import cuda, float64

from ._pointers import cast_like


@cuda.jit(device=True)
def pow_like(x, e, like):
    """``x ** e`` (``x >= 0``) in the precision of ``like`` (``powf`` for
    float32 data: the kernels would be bound by float64 powers, not by
    memory), as a float64; the exponents of p = 1 and 2 as products, as on
    the CPU."""
    if e == 2.0:
        return x * x
    if e == 1.0:
        return x
    return float64(math.pow(cast_like(x, like), cast_like(e, like)))


@cuda.jit(device=True)
def pow_wide(d, p, like):
    """``d ** p`` for ``d >= 0`` (NaN and Inf propagate) and ``0 < p < 8``, as
    a float64 that neither overflows nor underflows where float64 holds the
    result, computed in the precision of ``like``: ``d = f 2^k`` exactly
    (``f`` in [1/2, 1)), ``k p = n + r`` in float64 (``n`` an integer, ``r``
    in [0, 1)), then ``2^(r + p log2 f)`` (in (2^-8, 2)) with ``log2`` and
    ``exp2`` in that precision, scaled by ``2^n`` exactly.  For float32 data
    (the one-pass norm) this replaces a float64 power (a call of about two
    hundred instructions, a hundred of them float64, which made the pass
    compute-bound) by about a third of the instructions (ptxas, sm_90: 127
    a loop trip against 110 plus the call's 187).  The relative error is at
    most about ``(2.4 p + 4.7) 6e-8``: ln 2 times the roundings of ``r``,
    ``p``, ``log2 f``, their product and sum, plus exp2's 2 ulp (4.7e-7 at p
    = 1.3, 1.4e-6 at p = 7.9)."""
    if p == 2.0:
        return d * d
    if p == 1.0:
        return d
    if not (d > 0.0 and d < math.inf):
        return d  # 0, inf and NaN are their own powers for p > 0
    f, k = math.frexp(d)
    kp = k * p
    n = math.floor(kp)
    y = cast_like(kp - n, like) + cast_like(p, like) * math.log2(cast_like(f, like))
    return math.ldexp(float64(math.exp2(y)), int(n))


@cuda.jit(device=True, inline="always")
def load4(x, g, j, nt, j1):
    """Entries ``j``, ``j + nt``, ``j + 2 nt`` and ``j + 3 nt`` of row ``g`` of
    ``x`` (``j < j1``), all loaded before the caller uses any, so that a thread
    of a block-stride loop waits on memory once per four entries: the loads
    an SM keeps in flight are its threads times the entries of a trip, and
    one entry a trip left the standalone reductions latency-bound.  Entries
    at or past ``j1`` repeat entry ``j``; the caller skips them (every
    caller adds its entries in the order of the one-entry loop, so the
    results are unchanged to the bit)."""
    a = x[g, j]
    k = j + nt
    b = x[g, k] if k < j1 else a
    k += nt
    c = x[g, k] if k < j1 else a
    k += nt
    d = x[g, k] if k < j1 else a
    return a, b, c, d


@cuda.jit(device=True)
def maxnan(a, b):
    """max(a, b) that keeps NaN once seen (``a`` is the running value)."""
    if b > a or b != b:
        return b
    return a


@cuda.jit(device=True)
def _tree(sh, u, v, pair, domax):
    """Reduce ``u`` (and with ``pair`` also ``v``, in the same levels, so one
    set of barriers serves both; ``sh`` then holds 2 blockDim.x values) over
    the block in shared memory: a float64 tree halving the active threads each
    level; every thread gets the result."""
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    sh[tid] = u
    if pair:
        sh[nt + tid] = v
    cuda.syncthreads()
    h = nt // 2
    while h > 0:
        if tid < h:
            if domax:
                sh[tid] = maxnan(sh[tid], sh[tid + h])
                if pair:
                    sh[nt + tid] = maxnan(sh[nt + tid], sh[nt + tid + h])
            else:
                sh[tid] += sh[tid + h]
                if pair:
                    sh[nt + tid] += sh[nt + tid + h]
        cuda.syncthreads()
        h //= 2
    r0 = sh[0]
    r1 = sh[nt] if pair else 0.0
    cuda.syncthreads()
    return r0, r1


@cuda.jit(device=True)
def bsum(sh, v):
    """Sum of ``v`` over the block (every thread gets it)."""
    return _tree(sh, v, 0.0, False, False)[0]


@cuda.jit(device=True)
def bmax(sh, v):
    """NaN-propagating max of ``v`` over the block (every thread gets it)."""
    return _tree(sh, v, 0.0, False, True)[0]


@cuda.jit(device=True)
def bsum2(sh, u, v):
    """The sums of ``u`` and of ``v`` over the block in one tree (``sh``: 2
    blockDim.x values)."""
    return _tree(sh, u, v, True, False)


@cuda.jit(device=True)
def bmax2(sh, u, v):
    """The NaN-propagating maxima of ``u`` and of ``v`` over the block in one
    tree (``sh``: 2 blockDim.x values)."""
    return _tree(sh, u, v, True, True)


@cuda.jit(device=True)
def slices_max2(sh, P, b0, nsplit, c0, c1):
    """The NaN-propagating maxima of columns ``c0`` and ``c1`` of a group's
    per-slice partials ``P[b0 : b0 + nsplit]``, over the block (every thread
    gets them; ``sh``: 2 blockDim.x values): the last block's first step in
    combining its slices."""
    m0 = 0.0
    m1 = 0.0
    c = b0 + cuda.threadIdx.x
    while c < b0 + nsplit:
        m0 = maxnan(m0, P[c, c0])
        m1 = maxnan(m1, P[c, c1])
        c += cuda.blockDim.x
    return bmax2(sh, m0, m1)


@cuda.jit(device=True)
def last_block(cnt, i, nsplit, flag):
    """True in every thread of the last block of group ``i`` to arrive (the
    partials of all its slices are then visible); that block resets the
    counter, so the counters stay zero between launches."""
    if nsplit == 1:
        return True
    cuda.threadfence()
    if cuda.threadIdx.x == 0:
        flag[0] = 1 if cuda.atomic.add(cnt, i, 1) == nsplit - 1 else 0
    cuda.syncthreads()
    last = flag[0] == 1
    cuda.syncthreads()
    if last and cuda.threadIdx.x == 0:
        cnt[i] = 0
    return last


@cuda.jit(device=True)
def block_slice(n, nsplit):
    """(group, first, last) of the current block in a (G * nsplit)-block launch."""
    b = cuda.blockIdx.x
    g = b // nsplit
    s = b - g * nsplit
    span = (n + nsplit - 1) // nsplit
    j0 = s * span
    return g, j0, min(n, j0 + span)
