"""numba.cuda kernels: the GPU twins of :mod:`lpcore.kernels`.  Internal.

The same kernel contract (module names, function names, arguments and return
conventions; documented once in :mod:`lpcore.kernels`), on C-contiguous
(G, n) float32/float64 device arrays; imported only when a device array
reaches the public API.  Launch geometry: :mod:`._launch`
(:func:`launch_config` changes it).  Besides the shared kernels, the layout
module has ``gather`` and ``scatter``, the strided copies NumPy does on the host.
"""
from ._launch import config, launch_config
from .ball import project_ball_rows
from .dual import signed_pow
from .hoyer import hoyer_sums
from .layout import add, fill, gather, scatter
from .lpsgd import MultiStep
from .masklearn import (concave_step, count_at_most, keep_above, kth_smallest, nonfinite_count,
                        positive, score_step, shift, tiers)
from .norm import group_max, group_norms, norm_kind, scale_rows
from .tangent import tangent_coef, tangent_write
from .topology import (activated, copy_mask, drop_rows, fill_rows, grow_at, grow_keys,
                       inactive_count, live_rows, magnitudes, row_umm, select_keys)

__all__ = ["config", "launch_config", "project_ball_rows", "signed_pow", "hoyer_sums", "add",
           "fill", "gather", "scatter", "MultiStep", "group_max", "group_norms", "norm_kind",
           "scale_rows", "tangent_coef", "tangent_write", "drop_rows",
           "inactive_count", "grow_keys", "select_keys", "magnitudes", "grow_at",
           "copy_mask", "activated", "live_rows", "row_umm", "fill_rows", "score_step", "concave_step", "kth_smallest",
           "count_at_most", "nonfinite_count", "shift", "positive", "tiers", "keep_above"]
