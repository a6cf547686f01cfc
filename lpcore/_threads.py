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
    """False in a child forked from a process whose OpenMP pool is running."""
    return not _forked_from_omp


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
