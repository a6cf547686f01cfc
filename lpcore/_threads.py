"""Numba's threading layer: thread-safe, fork-safe, and never another library's pool.

lpcore's parallel kernels run on Numba's threading layer.  Numba prefers
Intel TBB, then OpenMP, then its own workqueue.  With GNU OpenMP (the layer
PyTorch's CPU build also uses) a process that forks after a parallel kernel
ran kills the child the first time the child enters OpenMP ("fork() called
from a process already using GNU OpenMP"), and the two libraries share one
OpenMP runtime.  TBB is thread-safe and fork-safe, so lpcore depends on the
``tbb`` wheel where one exists.  That wheel puts ``libtbb.so.12`` in
``<prefix>/lib``, which the dynamic loader of a virtual environment does not
search, so Numba cannot find it by itself: :func:`preload_tbb` loads it first.
Nothing is set: Numba's own default order then picks TBB.  An explicit
``NUMBA_THREADING_LAYER`` is respected.

On a machine that other processes keep busy, a parallel kernel waits for
threads the scheduler gives to others: the kernels then run serially
(:func:`machine_busy`, measured from ``/proc/stat`` over 0.25 s windows).

Where the layer is GNU OpenMP anyway (no TBB wheel, or chosen by the user), a
forked child runs lpcore's kernels serially (:func:`parallel_ok`), so forking
stays safe (e.g. ``DataLoader(num_workers=...)`` workers that call lpcore).
"""
from __future__ import annotations

import ctypes
import os
import sys

_forked_from_omp = False


def preload_tbb():
    """Load pip's libtbb so that Numba's default layer order finds TBB.

    Returns the path loaded, or None (already initialised, a layer chosen by
    the user, or no TBB wheel installed).
    """
    from numba.np.ufunc import parallel
    if parallel._is_initialized or os.environ.get("NUMBA_THREADING_LAYER"):
        return None
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix, sys.exec_prefix)):
        path = os.path.join(prefix, "lib", "libtbb.so.12")
        if os.path.exists(path):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                continue
            return path
    return None


def layer():
    """The threading layer in use, or None before the first parallel kernel."""
    from numba.np.ufunc import parallel
    if not parallel._is_initialized:
        return None
    import numba
    return numba.threading_layer()


def _after_fork_in_child():
    global _forked_from_omp
    _forked_from_omp = _forked_from_omp or layer() == "omp"


def parallel_ok():
    """False in a child forked from a process whose OpenMP pool is running, or
    while other processes keep the machine busy (:func:`machine_busy`)."""
    return not _forked_from_omp and not machine_busy()


# ---------------------------------------------------------------- a busy machine
#: Measured over windows of at least this many seconds.
BUSY_WINDOW = 0.25


def env_number(name, default, cast=float):
    """``cast(os.environ[name])`` if set and non-empty, else ``default``;
    ValueError naming the variable for a value ``cast`` refuses or below 0."""
    v = os.environ.get(name, "").strip()
    if not v:
        return default
    try:
        x = cast(v)
    except ValueError:
        x = -1
    if not x >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {v!r}")
    return x


#: Parallel kernels need at least this many cores left free by other processes.
BUSY_MIN_FREE = env_number("LPCORE_PARALLEL_MIN_FREE_CORES", 1.5)
_busy = {"t": None, "stat": None, "own": None, "free": None}


def _read_stat():
    """(busy, total) jiffies summed over the CPUs this process may run on
    (``/proc/stat``'s per-CPU lines; other CPUs' load does not slow our
    threads), or None."""
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        allowed = None
    busy = total = 0
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if not line.startswith(b"cpu"):
                    break
                head, *vals = line.split()
                if head == b"cpu" or (allowed is not None and int(head[3:]) not in allowed):
                    continue
                v = [int(x) for x in vals[:8]]
                idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
                total += sum(v)  # guest time is already inside user and nice
                busy += sum(v) - idle
    except (OSError, ValueError):
        return None
    return (busy, total) if total else None


def _ncores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def free_cores(now=None):
    """Cores that other processes left free over the last window (Linux), or
    None when unknown.  This process's own CPU time is not counted against it
    (its threads are the ones that would run the kernel)."""
    import time
    t = time.monotonic() if now is None else now
    st = _busy
    if st["t"] is not None and t - st["t"] < BUSY_WINDOW:
        return st.get("free")
    stat, own = _read_stat(), time.process_time()
    if stat is None:
        return None
    free = None
    if st["t"] is not None and st["stat"] is not None:
        d_busy, d_total = stat[0] - st["stat"][0], stat[1] - st["stat"][1]
        if d_total > 0:
            n = _ncores()
            # busy share of our CPUs, in cores, minus this process's own use
            others = max(0.0, d_busy / d_total * n - (own - st["own"]) / (t - st["t"]))
            free = max(0.0, n - others)
    _busy.update(t=t, stat=stat, own=own, free=free)
    return free


def machine_busy():
    """True when other processes leave fewer than ``BUSY_MIN_FREE`` cores
    (``LPCORE_PARALLEL_MIN_FREE_CORES``, default 1.5) free: a parallel kernel
    would then wait for threads the scheduler has given to others (measured
    on 2 cores beside two busy processes: a default ``lpcore-train`` run
    trained in 31-45 s with parallel kernels, 11-26 s with this rule; README,
    "Threads, forking and resuming").  Unknown means not busy."""
    free = free_cores()
    return free is not None and free < BUSY_MIN_FREE


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


free_cores()  # the first window starts at import
