"""numba.cuda kernels: the GPU twins of ``lpcore.kernels``.  Internal.

Same contracts as the CPU kernels (C-contiguous (G, n) float32/float64
device arrays; they compute and never validate), imported only when a device
array reaches the public API.  Launch geometry: :mod:`._launch`
(:func:`launch_config` changes it).  Reductions: :mod:`.reduce`; writing
passes and layout copies: :mod:`.elementwise`; the ball projection:
:mod:`.ball`; the fused LpSGD step: :mod:`.lpsgd`.
"""
from ._launch import config, launch_config
from .ball import project_ball_rows
from .elementwise import add, fill, gather, scale_rows, scatter, signed_pow, tangent_write
from .reduce import group_max, group_norms, hoyer_sums, tangent_coef

__all__ = ["config", "launch_config", "project_ball_rows", "add", "fill", "gather", "scale_rows",
           "scatter", "signed_pow", "tangent_write", "group_max", "group_norms", "hoyer_sums",
           "tangent_coef"]
