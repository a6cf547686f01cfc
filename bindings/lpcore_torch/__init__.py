"""lpcore_torch: a thin PyTorch adapter for lpcore.

It hands tensors to lpcore's kernels without copying (``Tensor.numpy()`` on
the CPU, ``__cuda_array_interface__`` on the GPU, on torch's current stream)
and calls the core; the mathematics and the policy live in ``lpcore``.

* :class:`LpSGD` - a ``torch.optim.Optimizer`` keeping each output unit's
  fan-in on the unit Lp sphere (``p=None`` groups are plain SGD).
* :func:`lp_param_groups`, :func:`sparse_layers` - which weights are
  constrained and sparsified (Linear/Conv by module type, the classifier not).
* :func:`hoyer_report` - per-layer Hoyer sparsity and exact-zero fractions.
* :func:`generalization_bound` - the norm-based bound of Galanti et al.
  (``lpcore.generalization_bound``) of a model on its training inputs.
* :class:`SparseTrainer` - topology evolution (LpSS semi-pruning and the
  other methods of ``lpcore.methods``).
* :func:`compact` - a smaller copy of a Sequential model without its dead channels.
* :func:`build_model`, :func:`split_masks` - ``lpcore-train``'s models and
  its model file; :mod:`lpcore_torch.data` its data sets;
  :mod:`lpcore_torch.cli` the command itself.
* :func:`to_numpy` - a tensor's zero-copy ndarray view (CPU tensors).
"""
from ._convert import to_numpy
from .bound import generalization_bound
from .compact import compact
from .groups import classifier_layer, fan_in_layout, lp_param_groups, sparse_layers
from .models import build_model, split_masks
from .optim import LpSGD
from .report import HoyerReport, hoyer_report
from .sparse import SparseTrainer

__all__ = ["LpSGD", "SparseTrainer", "lp_param_groups", "sparse_layers", "classifier_layer",
           "fan_in_layout", "hoyer_report", "HoyerReport", "to_numpy", "compact", "build_model",
           "split_masks", "generalization_bound"]
