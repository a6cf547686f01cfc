"""Per-layer Hoyer sparsity and exact-zero fractions of a model."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

import lpcore

from ._convert import _HALF, host
from .groups import _CONV, _CONVT, fan_in_layout


class HoyerReport(list):
    """Rows (dicts) with ``name``, ``shape``, ``params``, ``hoyer`` (mean over
    output units), ``zero_fraction``; the last row, ``name="network"``, has the
    parameter-weighted Hoyer and the overall exact-zero fraction.  ``str()`` is
    a table."""

    def __str__(self):
        spec = any("ramanujan_gap" in r for r in self)
        head = f"{'layer':<28}{'shape':>20}{'params':>10}{'hoyer':>8}{'zeros':>8}" + \
            (f"{'ram.gap':>9}{'w.gap':>9}" if spec else "")
        lines = [head, "-" * len(head)]
        for r in self:
            shape = "x".join(map(str, r["shape"])) if r["shape"] else ""
            line = (f"{r['name']:<28}{shape:>20}{r['params']:>10}{r['hoyer']:>8.4f}"
                    f"{r['zero_fraction']:>8.4f}")
            if spec and "ramanujan_gap" in r:
                line += f"{r['ramanujan_gap']:>9.3f}{r['weighted_spectral_gap']:>9.3f}"
            lines.append(line)
        return "\n".join(lines)


@torch.no_grad()
def hoyer_report(model, exclude=(), spectral=False):
    """Hoyer sparsity per Linear/Conv layer of ``model`` (fan-in groups per
    output unit, ConvTranspose layouts handled) and the network aggregate.
    With ``spectral=True`` each layer row also has ``ramanujan_gap`` and
    ``weighted_spectral_gap`` of its nonzero pattern
    (:func:`lpcore.ramanujan_gap`, :func:`lpcore.weighted_spectral_gap`).

    Examples
    --------
    >>> import torch, lpcore_torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    >>> rows = lpcore_torch.hoyer_report(net)
    >>> [r["name"] for r in rows]
    ['0.weight', '1.weight', 'network']
    """
    rows = HoyerReport()
    arrays, axes = [], []
    for name, m in model.named_modules():
        if not isinstance(m, (nn.Linear,) + _CONV + _CONVT) or name in set(exclude):
            continue
        w = m.weight
        view, axis = fan_in_layout(m)
        if math.prod(view[a] for a in axis) < 2:
            continue
        arr = host(w.detach().float() if w.dtype in _HALF else w).reshape(view)
        row = {"name": f"{name}.weight", "shape": tuple(w.shape), "params": w.numel(),
               "hoyer": lpcore.hoyer_layer(arr, axis),
               "zero_fraction": float(np.mean(arr == 0))}
        if spectral:
            row.update(spectral_gaps(arr, axis))
        rows.append(row)
        arrays.append(arr)
        axes.append(axis)
    if rows:
        total = sum(r["params"] for r in rows)
        rows.append({"name": "network", "shape": (), "params": total,
                     "hoyer": lpcore.hoyer_network(arrays, axes),
                     "zero_fraction": sum(r["params"] * r["zero_fraction"] for r in rows) / total})
    return rows


def spectral_gaps(arr, axis):
    """The layer's Ramanujan and weighted spectral gaps (nonzeros = the mask)."""
    return {"ramanujan_gap": lpcore.ramanujan_gap(arr != 0, axis=axis),
            "weighted_spectral_gap": lpcore.weighted_spectral_gap(arr, axis=axis)}
