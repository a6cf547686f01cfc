"""The sparse-training methods: one module each, one entry in :data:`METHODS`.

A method decides the masks (host NumPy; see :class:`Method`): its initial
masks, its topology update from weights, latent magnitudes, masks and dense
gradients, its schedules and RNG, its state.  A framework binding
(``lpcore_torch.SparseTrainer``) owns the tensors and calls it.

To add a method: a module here with a :class:`Method` subclass, and its
entry below.

:data:`TRAININGS` is the table of whole training methods (what
``lpcore-train --method`` offers): the topology method each one runs, if
any, and whether its constrained weights take LpSGD steps;
:func:`training_schedule` says how long a run of one is and when its
topology updates fall (``Method.schedule``).
"""
from __future__ import annotations

from typing import NamedTuple

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



class Training(NamedTuple):
    """One training method: ``topology`` the name in :data:`METHODS` of the
    method that decides its masks (None: dense, no pruning); ``lpsgd``
    whether its constrained weights take LpSGD steps (else plain SGD)."""

    topology: str | None
    lpsgd: bool


#: every training method, by its name in ``lpcore-train --method``
TRAININGS = {"lpss": Training("lpss", True), "set": Training("set", False),
             "rigl": Training("rigl", False), "static": Training("static", False),
             "magnitude": Training("magnitude", False),
             "magnitude-lp": Training("magnitude", True), "imp": Training("imp", False),
             "scl": Training("scl", False), "scl-lp": Training("scl", True),
             "concave": Training("concave", False), "chase": Training("chase", False),
             "dense": Training(None, False), "dense-lp": Training(None, True)}

__all__ = ["METHODS", "TRAININGS", "LearnedMask", "Layer", "Method", "Training", "make_method",
           "training_count", "training_schedule"]


def training_count(name, rounds=1):
    """How many trainings a run of the training method ``name`` takes (IMP:
    ``rounds`` + 1, the concave lottery: 2, the others: 1)."""
    entry = TRAININGS.get(name)
    if entry is None:
        raise ValueError(f"lpcore.methods.training_count: name must be one of "
                         f"{tuple(TRAININGS)}, got {name!r}")
    return 1 if entry.topology is None else METHODS[entry.topology].trainings(rounds)


def training_schedule(name, steps, frequency=None, rounds=1):
    """``(trainings, (begin, end, frequency))`` of the training method
    ``name`` of :data:`TRAININGS` whose one training has ``steps`` steps:
    how many trainings the run takes and its topology schedule
    (:meth:`Method.schedule`; None for a dense method).

    >>> from lpcore.methods import training_schedule
    >>> training_schedule("imp", 100, rounds=3)
    (4, (2, 300, 100))
    >>> training_schedule("dense-lp", 100)
    (1, None)
    """
    entry = TRAININGS.get(name)
    if entry is None:
        raise ValueError(f"lpcore.methods.training_schedule: name must be one of "
                         f"{tuple(TRAININGS)}, got {name!r}")
    if entry.topology is None:
        return 1, None
    cls = METHODS[entry.topology]
    return cls.trainings(rounds), cls.schedule(steps, frequency, rounds)


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
