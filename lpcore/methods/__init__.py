"""The sparse-training methods: one module each, one entry in :data:`METHODS`.

A method decides the masks (host NumPy; see :class:`Method`): its initial
masks, its topology update from weights, latent magnitudes, masks and dense
gradients, its schedules and RNG, its state.  A framework binding
(``lpcore_torch.SparseTrainer``) owns the tensors and calls it.

To add a method: a module here with a :class:`Method` subclass, and its
entry below.
"""
from __future__ import annotations

from ._base import LearnedMask, Layer, Method
from .chase import Chase
from .concave import Concave
from .imp import IMP
from .lpss import LpSS
from .magnitude import Magnitude
from .rigl import RigL
from .scl import SCL
from .set import SET
from .static import Static

#: name -> Method subclass
METHODS = {"lpss": LpSS, "set": SET, "rigl": RigL, "static": Static, "magnitude": Magnitude,
           "imp": IMP, "scl": SCL, "concave": Concave,
           "chase": Chase}

__all__ = ["METHODS", "LearnedMask", "Layer", "Method", "make_method"]


def make_method(name, **options):
    """The method ``name`` of :data:`METHODS` with ``options`` (see
    :class:`Method`); ``ValueError`` naming the known methods otherwise.

    Examples
    --------
    >>> import lpcore
    >>> m = lpcore.make_method("set", target_sparsity=0.8, end=100)
    >>> [float((~x).mean()) for x in m.init_masks([(4, 5)])]
    [0.8]
    """
    cls = METHODS.get(name)
    if cls is None:
        raise ValueError(f"lpcore.make_method: method must be one of {tuple(METHODS)}, "
                         f"got {name!r}")
    return cls(**options)
