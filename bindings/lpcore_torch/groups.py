"""Which weights to constrain, and how each one splits into fan-in groups."""
from __future__ import annotations

import math

from torch import nn

import lpcore

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVT = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def fan_in_layout(module, weight=None):
    """``(view_shape, axis)``: reshape the weight to ``view_shape`` (a view) and
    reduce ``axis`` to get one group per output unit.

    * Linear ``(out, in)`` and Conv ``(out, in/groups, *k)``: all axes but 0.
    * ConvTranspose ``(in, out/groups, *k)``: the output unit ``(g, o)`` has
      fan-in ``weight[g*in/groups:(g+1)*in/groups, o]``, so the weight is
      viewed as ``(groups, in/groups, out/groups, *k)`` and axes 1 and 3...
      are reduced.  Normalising dim-0 slices here would be wrong.
    """
    w = module.weight if weight is None else weight
    shape = tuple(w.shape)
    if isinstance(module, _CONVT):
        g = module.groups
        view = (g, shape[0] // g) + shape[1:]
        return view, (1,) + tuple(range(3, len(view)))
    return shape, tuple(range(1, len(shape)))


def _fan_in(module):
    view, axis = fan_in_layout(module)
    return math.prod(view[a] for a in axis)


def _layers(model):
    """Every Linear, Conv and ConvT layer with a weight, in module order."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, (nn.Linear,) + _CONV + _CONVT)
            and getattr(m, "weight", None) is not None]


def classifier_layer(model):
    """``(name, module)`` of the final classifier: the last Linear, Conv or
    ConvT layer in module order (None if there is none)."""
    layers = _layers(model)
    return layers[-1] if layers else None


def sparse_layers(model, include_classifier=False):
    """``[(name, module)]``: the layers whose weights the library constrains
    and sparsifies by default, the one rule :func:`lp_param_groups`,
    :class:`lpcore_torch.SparseTrainer` and ``lpcore-train`` share: Linear,
    Conv and ConvT layers in module order, without the final classifier
    (:func:`classifier_layer`; unless ``include_classifier``) and without
    layers whose fan-in is below 2."""
    layers = _layers(model)
    if layers and not include_classifier:
        layers = layers[:-1]
    return [(n, m) for n, m in layers if _fan_in(m) >= 2]


def lp_param_groups(model, p=2.0, exclude=(), include_classifier=False, target_sparsity=None,
                    h0=0.2):
    """Parameter groups for :class:`lpcore_torch.LpSGD`: which weights to constrain.

    The library's selection, by module type: Linear and Conv (and
    ConvTranspose) weights are constrained, except the final classifier (the
    last such layer in module order) and layers whose fan-in is below 2.
    Everything else - biases, norm layers, other 1-D tensors, excluded layers
    - goes to one ``p=None`` (plain SGD) group.

    (The reference implementation selects by parameter *name* instead: names
    containing ``conv`` or ``fc`` and ``weight``, 2-D or 4-D, without the
    classifier, ``downsample`` convolutions and layers with fewer than 2
    input channels.  So there a plain ``Sequential`` MLP gets no constraint,
    a Linear named ``classifier`` stays plain and Conv3d weights are
    excluded.  This rule is by type so that it works on any model; pass
    ``exclude`` to reproduce a name rule.)

    Parameters
    ----------
    model : torch.nn.Module
    p : float, "auto", list of float or callable
        A float (default 2.0, the exponent that measured best with LpSS:
        README table (c)): one exponent for all constrained layers.
        ``"auto"``: each constrained layer gets the p at which the semi-pruning
        drop rule's share of connections below ``h0 * mean|w|`` equals
        ``target_sparsity`` for a group of the layer's fan-in
        (:func:`lpcore.p_for_sparsity` with ``n`` = fan-in; DESIGN section 5;
        a layer whose fan-in is too small for the target is aimed at
        ``(n - 1.5)/n``); it picks small p (1.1-1.2 at 0.9), which cost 1-20
        points of test accuracy against p = 2 in README table (c).
        A list in module order (one per selected layer); or ``p(name,
        module) -> float or None`` (None leaves the layer unconstrained).
    exclude : iterable of str or callable
        Module names to leave unconstrained, or ``exclude(name, module) -> bool``.
    include_classifier : bool
        Also constrain the final classifier.
    target_sparsity, h0 : float
        For ``p="auto"``: the target mask sparsity in (0, 1) and the drop
        threshold of :class:`lpcore_torch.SparseTrainer` (its ``h0``).

    Returns
    -------
    list of dict
        One group per distinct p (keys ``params``, ``p``, ``fan_in`` - the
        per-parameter layouts of :func:`fan_in_layout`, ``names``), then the
        ``p=None`` group.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"lp_param_groups: model must be a torch.nn.Module, got {type(model).__name__}")
    excl = exclude if callable(exclude) else (lambda name, m, s=set(exclude): name in s)
    layers = [(n, m) for n, m in sparse_layers(model, include_classifier) if not excl(n, m)]
    if isinstance(p, str):
        if p != "auto":
            raise ValueError(f"lp_param_groups: p must be 'auto', a number, a list or a callable, "
                             f"got {p!r}")
        if target_sparsity is None:
            raise ValueError("lp_param_groups: p='auto' needs target_sparsity")
        fan = [_fan_in(m) for _, m in layers]
        ps = (lpcore.p_for_sparsity(target_sparsity, h0, n=fan, unreachable="clip").tolist()
              if fan else [])
    elif callable(p):
        ps = [p(n, m) for n, m in layers]
    elif isinstance(p, (list, tuple)):
        if len(p) != len(layers):
            raise ValueError(f"lp_param_groups: got {len(p)} values of p for {len(layers)} "
                             f"constrained layers ({', '.join(n for n, _ in layers)})")
        ps = list(p)
    else:
        ps = [p] * len(layers)
    groups = {}
    constrained = set()
    for (name, m), pv in zip(layers, ps):
        if pv is None:
            continue
        pv = float(pv)
        g = groups.setdefault(pv, {"params": [], "p": pv, "fan_in": [], "names": []})
        g["params"].append(m.weight)
        g["fan_in"].append(fan_in_layout(m))
        g["names"].append(f"{name}.weight" if name else "weight")
        constrained.add(id(m.weight))
    rest = [(n, q) for n, q in model.named_parameters() if id(q) not in constrained]
    out = list(groups.values())
    out.append({"params": [q for _, q in rest], "p": None, "fan_in": [None] * len(rest),
                "names": [n for n, _ in rest]})
    return out


