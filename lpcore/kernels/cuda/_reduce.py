"""Device-side building blocks shared by the CUDA kernels: block-level
reductions in shared memory (:func:`bsum`, :func:`bmax`, NaN-propagating
:func:`maxnan`), the last-block-done test of a multi-block group
(:func:`last_block`) and a block's slice of its group (:func:`block_slice`).
The host side (launch geometry, streams, scratch) is ``_launch.py``."""
from numba import cuda


@cuda.jit(device=True)
def maxnan(a, b):
    """max(a, b) that keeps NaN once seen (``a`` is the running value)."""
    if b > a or b != b:
        return b
    return a


@cuda.jit(device=True)
def _tree(sh, v, domax):
    """Reduce ``v`` over the block in shared memory (a float64 tree halving the
    active threads each level); every thread gets the result."""
    tid = cuda.threadIdx.x
    sh[tid] = v
    cuda.syncthreads()
    h = cuda.blockDim.x // 2
    while h > 0:
        if tid < h:
            if domax:
                sh[tid] = maxnan(sh[tid], sh[tid + h])
            else:
                sh[tid] += sh[tid + h]
        cuda.syncthreads()
        h //= 2
    r = sh[0]
    cuda.syncthreads()
    return r


@cuda.jit(device=True)
def bsum(sh, v):
    """Sum of ``v`` over the block (every thread gets it)."""
    return _tree(sh, v, False)


@cuda.jit(device=True)
def bmax(sh, v):
    """NaN-propagating max of ``v`` over the block (every thread gets it)."""
    return _tree(sh, v, True)


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
