"""Launch geometry, streams and per-thread scratch buffers shared by the CUDA
kernels (host side; the block-level reductions are ``_reduce.py``).

Every per-group kernel runs one thread block per *slice* of a group: a group
of ``n`` elements is cut into ``nsplit = ceil(n / (threads * items))``
slices (one for ordinary fan-ins, many for ``axis=None`` on a big tensor),
each block loops over its slice with a block-stride loop and reduces its
threads' float64 partials in shared memory; a second kernel combines the
slices, one block per group with its threads striding over the group's
slices (a one-thread-per-group combine was measured on an H100 to cost
0.4 us per slice: 10 ms of a 1e8-element norm).  Elementwise kernels use a
grid-stride loop.

Every launch, memset and copy goes to :func:`stream`: the stream of the
caller's ``lpcore.cuda_stream`` block (torch's current stream in the torch
binding), else numba's default stream.

Intermediate buffers (per-slice partials, the error flags) come from
:func:`scratch`: per thread, device and stream, grown as needed and reused
by later calls, so a call in steady state allocates device memory only for
the arrays it returns.  Reuse is safe because the kernels of one thread on
one stream run in the order they were enqueued, whatever the host does
meanwhile.

The reductions use shared memory only (no warp shuffles), so every line of
them also runs under the CUDA simulator, which has no warp primitives.
Threads per block must be a power of two (the tree reduction halves).
"""
from __future__ import annotations

import contextlib
import math
import os
import threading

import numpy as np
from numba import cuda

from ..._device import simulated, stream_handle

#: shared-memory slots per reduction: the largest block size supported
MAXT = 1024


class _Config:
    def __init__(self):
        sim = simulated()
        # the simulator runs each thread as a Python thread (~5 ms each per
        # block): small blocks keep it usable
        self.threads = int(os.environ.get("LPCORE_CUDA_THREADS", 4 if sim else 256))
        self.min_threads = min(self.threads, 4 if sim else 32)
        # 16 items per thread.  On an H100 a sweep (benchmarks/gpu.py --sweep)
        # put 32 items 8-14% ahead on 1e8-element reductions, but a second
        # run of the whole table moved by more than that between runs (the
        # calls are bound by host-side launch cost), so the default stayed
        self.items = int(os.environ.get("LPCORE_CUDA_ITEMS", 4 if sim else 16))
        self.max_blocks = int(os.environ.get("LPCORE_CUDA_MAX_BLOCKS", 8 if sim else 1 << 16))
        _check(self.threads, self.items, self.max_blocks)


def _check(threads, items, max_blocks):
    if threads < 1 or threads > MAXT or threads & (threads - 1):
        raise ValueError(f"lpcore CUDA launch: threads must be a power of two <= {MAXT}, "
                         f"got {threads}")
    if items < 1 or max_blocks < 1:
        raise ValueError("lpcore CUDA launch: items and max_blocks must be >= 1")


config = _Config()


@contextlib.contextmanager
def launch_config(threads=None, items=None, max_blocks=None):
    """Temporarily change the launch geometry (tests use tiny blocks so that
    small inputs span several blocks and slices)::

        with launch_config(threads=4, items=2):
            lpcore.norm(d_x, 1.5, axis=1)
    """
    old = (config.threads, config.min_threads, config.items, config.max_blocks)
    t = config.threads if threads is None else int(threads)
    i = config.items if items is None else int(items)
    b = config.max_blocks if max_blocks is None else int(max_blocks)
    _check(t, i, b)
    config.threads, config.items, config.max_blocks = t, i, b
    config.min_threads = min(config.min_threads, t)
    try:
        yield config
    finally:
        config.threads, config.min_threads, config.items, config.max_blocks = old


def threads_for(n):
    """Threads per block for groups of ``n``: a power of two, no more than needed."""
    want = 1 << max(0, math.ceil(math.log2(max(1, -(-n // config.items)))))
    return max(config.min_threads, min(config.threads, want))


def split(n):
    """(threads per block, slices per group) for groups of ``n`` elements."""
    nt = threads_for(n)
    return nt, max(1, -(-n // (nt * config.items)))


def grid1d(size):
    """(blocks, threads) of a grid-stride elementwise launch over ``size`` items."""
    nt = config.threads
    return max(1, min(config.max_blocks, -(-size // nt))), nt


def launch1d(kernel, size, *args):
    """``kernel(*args)`` as a grid-stride launch over ``size`` items on
    :func:`stream` (nothing for ``size`` 0)."""
    if size:
        bl, nt = grid1d(size)
        kernel[bl, nt, stream()](*args)


def combine_grid(G, nsplit):
    """(blocks, threads) of a combine launch: one block per group (a grid-stride
    loop over groups), its threads striding over the group's ``nsplit`` slices."""
    want = 1 << max(0, math.ceil(math.log2(max(1, nsplit))))
    return max(1, min(config.max_blocks, G)), max(config.min_threads, min(config.threads, want))


_tls = threading.local()
_external = {}  # (device, handle) -> numba's wrapper of a foreign stream


def stream():
    """The stream lpcore's GPU work goes to now: 0 (numba's default stream)
    or a numba stream (see ``lpcore.cuda_stream``)."""
    h = stream_handle()
    if h is None or h == 0:
        return 0
    if not isinstance(h, int):
        return h  # a numba stream
    if h == 1:
        return cuda.legacy_default_stream()
    if h == 2:
        return cuda.per_thread_default_stream()
    if simulated():
        raise RuntimeError("lpcore.cuda_stream: the CUDA simulator cannot run on a foreign "
                           f"stream handle ({h}); pass a numba stream")
    key = (cuda.get_current_device().id, h)
    s = _external.get(key)
    if s is None:
        s = _external[key] = cuda.external_stream(h)
    return s


def _stream_key(s):
    return 0 if s == 0 else id(s) if simulated() else int(s)


def to_host(a):
    """A host copy of device array ``a`` through the current stream, waited
    for (error paths, and the flags)."""
    s = stream()
    h = a.copy_to_host(stream=s)
    if s != 0:
        s.synchronize()
    return h


def scratch(name, shape, dtype=np.float64):
    """A device buffer of at least ``shape`` (first axis may be longer) for
    intermediate results, private to this thread, device and stream and
    reused by later calls.  Kernels index it by block or group, never by its
    size."""
    bufs = getattr(_tls, "bufs", None)
    if bufs is None:
        bufs = _tls.bufs = {}
    dev = 0 if simulated() else cuda.get_current_device().id
    key = (name, dev, _stream_key(stream()), np.dtype(dtype).str, tuple(shape[1:]))
    need = max(1, int(shape[0]))
    buf = bufs.get(key)
    if buf is None or buf.shape[0] < need:
        if buf is not None:
            need = max(need, 2 * buf.shape[0])  # grow geometrically
        buf = bufs[key] = cuda.device_array((need,) + tuple(shape[1:]), dtype=dtype)
    return buf


def counters(name, n):
    """A device int64[n] of this thread, device and stream that is zero
    between launches (the kernels' last-block-done counters reset themselves):
    zeroed when it is made, never after."""
    key = ("counters", name)
    bufs = getattr(_tls, "zeroed", None)
    if bufs is None:
        bufs = _tls.zeroed = {}
    dev = 0 if simulated() else cuda.get_current_device().id
    k = (key, dev, _stream_key(stream()))
    buf = bufs.get(k)
    if buf is None or buf.shape[0] < n:
        buf = bufs[k] = cuda.to_device(np.zeros(max(n, 2 * (0 if buf is None else buf.shape[0])),
                                                np.int64), stream=stream())
    return buf


def _signature_key(args):
    """What decides a launch's compiled signature: per argument its type, and
    for arrays their dtype, dimensions and contiguity (cheap attributes, not
    numba's typeof)."""
    key = []
    for a in args:
        dt = getattr(a, "dtype", None)
        if dt is not None and hasattr(a, "shape"):
            key.append((dt.char, len(a.shape), a.is_c_contiguous() if hasattr(
                a, "is_c_contiguous") else True))
        else:
            key.append(type(a))
    return tuple(key)


def launcher(kernel):
    """``launch(grid, block, stream, *args)`` for ``kernel``: through numba's
    dispatcher the first time for each signature (it compiles), then
    straight to that compiled kernel's ``launch`` (the dispatcher's per-call
    type checks cost more host time than the launch itself: DESIGN section 9)."""
    if simulated():
        return lambda grid, block, s, *args: kernel[grid, block, s](*args)
    cache = {}
    streams = {}  # the launch API's own stream object per stream (made once)
    from numba.cuda.cudadrv.driver import _to_core_stream

    def launch(grid, block, s, *args):
        key = _signature_key(args)
        k = cache.get(key)
        if k is not None:
            cs = streams.get(id(s))
            if cs is None or cs[0] is not s:
                cs = streams[id(s)] = (s, _to_core_stream(s))
            k.launch(args, grid, block, cs[1], 0)
            return
        before = set(kernel.overloads)
        kernel[grid, block, s](*args)
        new = [v for sig, v in kernel.overloads.items() if sig not in before]
        if len(new) == 1:
            cache[key] = new[0]
    return launch


def flags(n=2):
    """The device int64 flags of this thread, zeroed (at least ``n``; the
    default two: 'first bad group' / 'first zero group').  Kernels record
    group ``i`` of ``G`` as ``cuda.atomic.max(flag, k, G - i)``
    (:func:`read_flags` decodes), or count into them."""
    fl = scratch("flags", (n,), np.int64)
    if simulated():
        fl.copy_to_device(np.zeros(fl.shape[0], np.int64))
    else:
        from numba.cuda.cudadrv import driver
        driver.device_memset(fl, 0, fl.shape[0] * 8, stream=stream())
    return fl


def read_flags(fl, G):
    """(first bad group, first zero group), ``G`` where there is none: the one
    copy to the host of a call, which waits for the stream's work so far."""
    f = to_host(fl)
    return G - int(f[0]), G - int(f[1])


def rows_grid(G, n):
    """(blocks, threads, nsplit) of a launch with one block per slice of a group."""
    nt, nsplit = split(n)
    return G * nsplit, nt, nsplit
