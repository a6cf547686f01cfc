"""``compact(model)``: a smaller model without the channels that output nothing."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# between a layer and the next: maps a constant channel to a constant channel
_PASS = (nn.ReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.Dropout, nn.Identity)


def _zero_out(module, v):
    """The constant a channel holding ``v`` (per channel) has after ``module``."""
    if isinstance(module, _BN):
        mean = module.running_mean if module.track_running_stats else torch.zeros_like(v)
        var = module.running_var if module.track_running_stats else torch.ones_like(v)
        out = (v - mean) / torch.sqrt(var + module.eps)
        if module.affine:
            out = out * module.weight + module.bias
        return out
    if isinstance(module, nn.ReLU):
        return torch.relu(v)
    return v


def _exact(m, types):
    """``m`` is one of ``types`` itself, not a subclass (which may compute
    something else: compact copies it as it is and leaves its neighbours)."""
    return type(m) in types


def _plain_flatten(m):
    return type(m) is nn.Flatten and m.start_dim == 1 and m.end_dim == -1


def _slice_bn(bn, keep):
    like = bn.running_mean if bn.running_mean is not None else bn.weight
    kw = {} if like is None else {"device": like.device, "dtype": like.dtype}
    new = type(bn)(int(keep.sum()), eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                   track_running_stats=bn.track_running_stats, **kw)
    with torch.no_grad():
        if bn.affine:
            new.weight.copy_(bn.weight[keep])
            new.bias.copy_(bn.bias[keep])
        if bn.track_running_stats:
            new.running_mean.copy_(bn.running_mean[keep])
            new.running_var.copy_(bn.running_var[keep])
            new.num_batches_tracked.copy_(bn.num_batches_tracked)
    new.train(bn.training)
    return new


def _rebuild(layer, w, b):
    # skip_init: the parameters are copied below, so nothing draws from torch's RNG
    kw = dict(bias=b is not None, device=w.device, dtype=w.dtype)
    if isinstance(layer, nn.Linear):
        new = nn.utils.skip_init(nn.Linear, w.shape[1], w.shape[0], **kw)
    else:
        new = nn.utils.skip_init(type(layer), w.shape[1] * layer.groups, w.shape[0],
                                 layer.kernel_size, stride=layer.stride, padding=layer.padding,
                                 dilation=layer.dilation, groups=layer.groups,
                                 padding_mode=layer.padding_mode, **kw)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    new.train(layer.training)
    return new


@torch.no_grad()
def compact(model):
    """A copy of an ``nn.Sequential`` model with its dead channels removed.

    A channel of a Linear/Conv layer is dead when all its weights and its
    bias are zero and the modules up to the next Linear/Conv layer (ReLU,
    max pooling, dropout, BatchNorm in eval statistics, Flatten) map its
    zero output to exactly zero (a BatchNorm channel whose shift survives a
    ReLU keeps the channel).  The dead channel is removed from its layer, from
    the BatchNorm between, and the next layer's inputs it fed are removed
    too, so the copy computes the same outputs with fewer parameters
    (up to float rounding of sums that lose exact-zero terms).  Mask buffers
    (``weight_mask``, left by :class:`SparseTrainer`) are dropped: the copy
    is for inference.  The last Linear/Conv layer keeps all its outputs.

    What compact cannot copy exactly it copies as it is and leaves alone:
    subclasses of the known modules (they may compute something else), a
    ``Flatten`` over other axes than ``(1, -1)``, a Linear applied to a
    convolution's length axis, a module used twice (it stays one shared
    module).  The copy keeps the model's dtype and device and draws nothing
    from torch's random generator.

    Examples
    --------
    >>> import torch, lpcore_torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> with torch.no_grad():
    ...     net[0].weight[1] = 0; net[0].bias[1] = 0
    >>> small = lpcore_torch.compact(net)
    >>> small[0].out_features, small[2].in_features
    (3, 3)
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"lpcore_torch.compact: model must be an nn.Sequential, got "
                        f"{type(model).__name__}")
    # fresh modules: no mask buffers, no gradient hooks of a trainer; a module used
    # twice stays one module (and is not compacted: both uses would change)
    mods, made, uses = [], {}, {}
    for m in model:
        uses[id(m)] = uses.get(id(m), 0) + 1
    for m in model:
        if id(m) not in made:
            if _exact(m, _LAYERS):
                made[id(m)] = _rebuild(m, m.weight.detach(),
                                       None if m.bias is None else m.bias.detach())
            elif _exact(m, _BN):
                made[id(m)] = _slice_bn(m, torch.ones(m.num_features, dtype=torch.bool))
            else:
                made[id(m)] = copy.deepcopy(m)
        mods.append(made[id(m)])
    shared = {i for i, m in enumerate(model) if uses[id(m)] > 1}
    idx = [i for i, m in enumerate(model) if _exact(m, _LAYERS)]
    for a, b in zip(idx, idx[1:]):
        layer, nxt = mods[a], mods[b]
        if getattr(layer, "groups", 1) != 1 or getattr(nxt, "groups", 1) != 1:
            continue
        between = list(model)[a + 1:b]
        if shared & set(range(a, b + 1)):
            continue
        if not all(_exact(m, _PASS + _BN) or _plain_flatten(m) for m in between):
            continue  # an op compact does not know (or a subclass): leave this pair alone
        between = mods[a + 1:b]
        flat = any(isinstance(m, nn.Flatten) for m in between)
        if isinstance(nxt, nn.Linear) and not isinstance(layer, nn.Linear) and not flat:
            continue  # a Linear over a convolution's length axis, not its channels
        if isinstance(nxt, nn.Linear) and isinstance(layer, nn.Linear) \
                and nxt.weight.shape[1] != layer.weight.shape[0]:
            continue
        w = layer.weight
        C = w.shape[0]
        zero_w = (w.reshape(C, -1) == 0).all(dim=1)
        bias = layer.bias
        v = torch.zeros(C, dtype=w.dtype, device=w.device) if bias is None else bias.detach().clone()
        for m in between:
            if isinstance(m, _BN + (nn.ReLU,)):
                v = _zero_out(m, v)
        dead = zero_w & (v == 0)
        if bias is not None:
            dead &= bias == 0
        if not dead.any() or dead.all():
            continue
        keep = ~dead
        mods[a] = _rebuild(layer, w[keep], None if bias is None else bias[keep])
        for j in range(a + 1, b):
            if isinstance(mods[j], _BN):
                mods[j] = _slice_bn(mods[j], keep)
        nw = nxt.weight
        if isinstance(nxt, nn.Linear) and nw.shape[1] != C:
            per = nw.shape[1] // C  # after a Flatten: C blocks of the spatial size
            if per * C != nw.shape[1]:
                raise ValueError(f"lpcore_torch.compact: layer {b} takes {nw.shape[1]} inputs, "
                                 f"not a multiple of the {C} channels of layer {a}")
            cols = keep.repeat_interleave(per)
        else:
            cols = keep
        mods[b] = _rebuild(nxt, nw[:, cols], nxt.bias)
    return nn.Sequential(*mods)


def parameter_count(model):
    """The number of parameters of ``model``; its nonzero count second."""
    ps = list(model.parameters())
    return sum(p.numel() for p in ps), sum(int((p != 0).sum()) for p in ps)


def inference_seconds(model, x, repeat=20):
    """The best of ``repeat`` timed forward passes of ``x`` (no grad, eval)."""
    import time
    was = model.training
    model.eval()
    best = math.inf
    with torch.no_grad():
        model(x)
        for _ in range(repeat):
            t0 = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - t0)
    model.train(was)
    return best
