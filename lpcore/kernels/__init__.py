"""Numba kernels.  Internal: they compute and never validate.

Every kernel works on C-contiguous 2-D arrays of shape ``(groups, n)`` (one
group = one neuron's fan-in) in float32 or float64, so each compiles exactly
one signature per dtype.  Long groups are cut into ``CHUNK``-element tasks so
that ``axis=None`` on a big tensor still uses every core; each task writes its
own partial results (no atomics, no races) and a serial pass merges them.

Each kernel exists as a ``parallel=True`` dispatcher and a serial one built
from the same task function; :func:`pick` chooses by problem size.
"""
from .reduce import (KIND_ONE, KIND_TWO, KIND_INF, KIND_GEN,
                     group_norms, group_max, hoyer_sums, tangent_sums,
                     powsum_chunks, norm_kind)
from ._dispatch import CHUNK, PAR_MIN_SIZE
from .elementwise import scale_rows, tangent_write, signed_pow
from .ball import project_ball_rows

__all__ = [
    "KIND_ONE", "KIND_TWO", "KIND_INF", "KIND_GEN", "PAR_MIN_SIZE", "CHUNK", "norm_kind",
    "group_norms", "group_max", "hoyer_sums", "tangent_sums", "powsum_chunks",
    "scale_rows", "tangent_write", "signed_pow", "project_ball_rows",
]
