"""lpcore_torch: a thin PyTorch adapter for lpcore.

It converts tensors to lpcore's arrays without copying (DLPack) and calls the
core; the mathematics lives in ``lpcore``.

* :class:`LpSGD` - a ``torch.optim.Optimizer`` keeping each output unit's
  fan-in on the unit Lp sphere (``p=None`` groups are plain SGD).
* :func:`lp_param_groups` - which weights are constrained (Linear/Conv by module type, the classifier not).
* :func:`hoyer_report` - per-layer Hoyer sparsity and exact-zero fractions.
* :class:`SparseTrainer` - topology evolution (LpSS semi-pruning and baselines).
* :func:`compact` - a smaller copy of a Sequential model without its dead channels.
* :func:`to_numpy` - the zero-copy tensor -> ndarray view used throughout.
"""
from ._convert import to_numpy
from .compact import compact
from .groups import fan_in_layout, lp_param_groups
from .optim import LpSGD
from .report import HoyerReport, hoyer_report
from .sparse import SparseTrainer

__all__ = ["LpSGD", "SparseTrainer", "lp_param_groups", "fan_in_layout", "hoyer_report", "HoyerReport",
           "to_numpy", "compact"]
