"""The weights a :class:`lpcore_torch.SparseTrainer` sparsifies, and the
torch side of their masks: which weights, writing masked weights, the bias
of channels without connections, gates."""
from __future__ import annotations

from torch import nn

import lpcore

from . import _convert
from .groups import classifier_layer, fan_in_layout, sparse_layers
from .optim import LpSGD


class SparseWeight:
    """One sparse weight: its module, name and fan-in layout, its last dense
    gradient and (learned masks) its trainable weights and gate."""

    def __init__(self, name, module, weight, layout):
        self.name, self.module, self.weight, self.layout = name, module, weight, layout
        self.dense_grad = None
        # learned masks (scl, concave): the trainable weights theta and the gate the
        # network computes with (theta * gate); None outside the learning phase
        self.theta = None
        self.gate = None

    @property
    def mask(self):
        return getattr(self.module, "weight_mask")


def select_weights(model, optimizer, mask_classifier):
    """The sparse weights of ``model`` (:class:`SparseWeight`): the
    constrained weights of an LpSGD ``optimizer``, else the library's rule
    (:func:`lpcore_torch.groups.sparse_layers`); with ``mask_classifier``
    also the final classifier."""
    owners = {id(mod.weight): (name, mod) for name, mod in model.named_modules()
              if isinstance(getattr(mod, "weight", None), nn.Parameter)}
    items = []
    if isinstance(optimizer, LpSGD):
        for w, layout in optimizer.constrained_weights():
            if id(w) in owners:
                name, mod = owners[id(w)]
                items.append(SparseWeight(name, mod, w, layout))
    if not items:
        items = [SparseWeight(name, mod, mod.weight, fan_in_layout(mod))
                 for name, mod in sparse_layers(model)]
    last = classifier_layer(model)
    if mask_classifier and last is not None:
        name, mod = last
        if not any(it.weight is mod.weight for it in items):
            items.append(SparseWeight(name, mod, mod.weight, fan_in_layout(mod)))
    return items


def apply_masks(items, optimizer, p_of):
    """Write every weight as its mask (or learned gate) allows, and put
    LpSGD's constrained ones back on the sphere (``p_of(item)``: the p)."""
    if isinstance(optimizer, LpSGD):
        # masking keeps LpSGD's state (the latent dual values stay)
        with optimizer.keep_state([it.weight for it in items]):
            _mask_weights(items, optimizer, p_of)
    else:
        _mask_weights(items, optimizer, p_of)


def alive(it):
    """Per output channel (the bias's shape): whether it has an active connection."""
    view, axis = it.layout
    return it.mask.reshape(view).sum(dim=axis).reshape(-1) > 0


def zero_dead_biases(items):
    """The bias of a channel without connections back to zero (its
    momentum would move it otherwise)."""
    for it in items:
        bias = getattr(it.module, "bias", None)
        if isinstance(bias, nn.Parameter):
            bias.mul_(alive(it).to(bias.dtype))


def _mask_weights(items, optimizer, p_of):
    for it in items:
        w = it.weight
        if it.gate is not None:
            w.copy_(it.theta * it.gate)  # a learned method's effective weight
        else:
            w.mul_(it.mask.to(w.dtype))
        if isinstance(optimizer, LpSGD) and p_of(it) is not None:
            # the unit sphere holds for the effective weights w * mask
            arr = _convert.core_view(w).reshape(it.layout[0])
            with _convert.stream_of([w]):
                lpcore.normalize(arr, p_of(it), axis=it.layout[1], out=arr, zero="keep")


def gate_tensor(g, w):
    """A learned method's gate (NumPy, or a device array on w's device; the
    weight's view) as a tensor like ``w``."""
    return _convert.from_core(g, w.device).reshape(w.shape).to(device=w.device, dtype=w.dtype)

