"""``as_ptr`` for CUDA kernels: the LLVM intrinsic of
:mod:`lpcore.kernels._pointers` on a GPU; under the CUDA simulator, whose
kernels are Python, a twin that returns the registered array at that
address (flat), so that the same kernel source indexes it the same way.
Chosen at import.  The simulator twin knows only arrays passed to
:func:`register` (the tables register every array they describe)."""
from __future__ import annotations

import numpy as np

from ..._device import simulated

_registry = {}


def register(a):
    """Make device array ``a`` (C-contiguous) reachable through its address
    (simulator only; a no-op on a GPU)."""
    if simulated() and a is not None:
        host = a._ary if hasattr(a, "_ary") else np.asarray(a)
        _registry[host.__array_interface__["data"][0]] = host.reshape(-1)


if simulated():
    def cast_like(value, like):
        return type(like)(value)

    def as_ptr(addr, like):
        if addr == 0:
            return None  # no array (never indexed)
        flat = _registry[int(addr)]
        return flat.view(np.uint8) if isinstance(like, np.uint8) else flat
else:
    from .._pointers import as_ptr, cast_like  # noqa: F401 (the kernels' import)
