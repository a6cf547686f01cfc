"""``generalization_bound(model, x, n_classes)``: the norm-based bound of
:func:`lpcore.generalization_bound` for a torch model (its Linear and Conv
layers in module order, the last one the classifier; a
:class:`~lpcore_torch.SparseTrainer`'s ``weight_mask`` buffers as the
masks)."""
from __future__ import annotations

import torch

import lpcore

from .groups import _layers


@torch.no_grad()
def generalization_bound(model, x, n_classes, delta=0.001):
    """The bound and its parts (``lpcore.generalization_bound``'s dict), with
    ``n`` the number of samples in ``x`` (the training inputs, as the model
    takes them) and ``X`` their :func:`lpcore.input_statistic`."""
    layers = _layers(model)
    if not layers:
        raise ValueError("lpcore_torch.generalization_bound: the model has no Linear or Conv "
                         "layer")
    ws, ms = [], []
    for _, mod in layers:
        ws.append(mod.weight.detach().cpu().double().numpy())
        mask = getattr(mod, "weight_mask", None)
        ms.append(None if mask is None else mask.detach().cpu().numpy())
    xs = x.detach().cpu().double().numpy()
    return lpcore.generalization_bound(ws, n=int(xs.shape[0]), k=int(n_classes),
                                       x=lpcore.input_statistic(xs), masks=ms, delta=delta)
