"""Host layout helpers with the names of the CUDA ones (``kernels/cuda/layout.py``).

On the host NumPy does the layout work itself (transposes, strided copies), so
only the two kernels the public functions call by name are needed here.
"""
from __future__ import annotations

import numpy as np


def add(a, b, out):
    """``out = a + b`` (NaN/Inf pass through; the caller reports them)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.add(a, b, out=out)


def fill(out, v):
    """Fill ``out`` with ``v``; returns it."""
    out[...] = v
    return out
