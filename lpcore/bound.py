"""The norm-based generalization bound of Galanti, Xu, Galanti and Poggio
(NeurIPS 2023, seed 003) as their code computes it (``lianegalanti/gen``,
``our_total_bound``; restated in ``shared/papers/003``):

    B = (rho + 1) / n * 2^1.5 * (1 + sqrt(2 (L ln(2 d_max) + ln k))) * X * prod_j deg_j
        + 3 sqrt(ln(2 (rho + 2)^2 / delta) / (2 n))

``n`` training samples, ``k`` classes, ``L`` weight layers (the last, linear
one included), ``rho`` the product of every layer's Frobenius norm (a conv
layer's kernel tensor), ``deg_j`` per layer but the last the square root of
one output unit's receptive-field size, ``d_max = max_j deg_j^2``, ``X`` the
input statistic (:func:`input_statistic`), ``delta`` 0.001.

Their networks are ReLU CNNs with a final linear layer; the mapping to
masked layers is this library's choice (the paper states none):

* a Linear layer (hidden): its receptive field is its fan-in, so
  ``deg = sqrt(max over units of the active incoming connections)``;
* a Conv layer: ``deg = sqrt(max over output channels of the active kernel
  entries / in_channels)``, the spatial receptive field of the densest
  channel (a dense k x k kernel gives ``deg = k``, the authors' value);
* masked weights count as zeros in ``rho`` (the weights times their masks).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ._validate import as_array, check_real, check_real_array

__all__ = ["generalization_bound", "input_statistic"]


def input_statistic(x):
    """``X`` of the bound: the square root of the largest, over input
    coordinates, of the sum over the samples of that coordinate's square
    (``x``: the training inputs, one sample per row of its first axis)."""
    fn = "lpcore.input_statistic"
    a = check_real_array(as_array(x, fn, "x"), fn, "x").astype(np.float64)
    if a.ndim < 2 or a.shape[0] == 0:
        raise ValueError(f"{fn}: x must hold samples along its first axis, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{fn}: x contains NaN or Inf")
    return float(math.sqrt(np.max(np.sum(a.reshape(a.shape[0], -1) ** 2, axis=0))))


def _degree(w, active, fn, i):
    """deg of one hidden layer (see the module docstring)."""
    if w.ndim == 2:  # Linear (out, in)
        return math.sqrt(float(active.reshape(w.shape[0], -1).sum(axis=1).max()))
    if w.ndim >= 3:  # Conv (out, in, *kernel)
        per_channel = active.reshape(w.shape[0], -1).sum(axis=1).max()
        return math.sqrt(float(per_channel) / w.shape[1])
    raise ValueError(f"{fn}: weights[{i}] must be a Linear (out, in) or Conv (out, in, *kernel) "
                     f"weight, got shape {w.shape}")


def generalization_bound(weights, n, k, x, masks=None, delta=0.001):
    """The bound ``B`` and its parts (see the module docstring).

    Parameters
    ----------
    weights : sequence of arrays
        The weight layers in order, the last one the classifier (Linear
        ``(out, in)`` or Conv ``(out, in, *kernel)``).
    n, k : int
        Training samples and classes.
    x : float
        The input statistic ``X`` (:func:`input_statistic` of the training
        inputs, scaled as the network sees them).
    masks : sequence of arrays or None
        Per layer a mask (True = active) or None; None everywhere: the
        weights' nonzeros are the active connections.
    delta : float
        The confidence, in (0, 1).

    Returns
    -------
    dict
        ``bound``, ``rho``, ``degrees`` (per hidden layer), ``d_max``,
        ``depth``, and the two terms ``complexity`` and ``confidence``.

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> w = [np.full((2, 4), 0.5), np.full((3, 2), 1.0)]   # ||.||_F = sqrt(2), sqrt(6)
    >>> b = lpcore.generalization_bound(w, n=100, k=3, x=10.0)
    >>> round(b["rho"], 6), b["degrees"], b["d_max"]
    (3.464102, [2.0], 4.0)
    """
    fn = "lpcore.generalization_bound"
    ws = [check_real_array(as_array(w, fn, f"weights[{i}]"), fn, f"weights[{i}]")
          .astype(np.float64) for i, w in enumerate(weights)]
    if not ws:
        raise ValueError(f"{fn}: weights is empty")
    for name, v in (("n", n), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{fn}: {name} must be an integer >= 1, got {v!r}")
    x = check_real(x, fn, "x", 0.0, math.inf, hi_open=True)
    delta = check_real(delta, fn, "delta", 0.0, 1.0, lo_open=True, hi_open=True)
    ms = [None] * len(ws) if masks is None else list(masks)
    if len(ms) != len(ws):
        raise ValueError(f"{fn}: masks has {len(ms)} entries for {len(ws)} weights")
    rho, degrees = 1.0, []
    for i, (w, m) in enumerate(zip(ws, ms)):
        if not np.all(np.isfinite(w)):
            raise ValueError(f"{fn}: weights[{i}] contains NaN or Inf")
        if m is not None:
            m = np.asarray(m) != 0
            if m.shape != w.shape:
                raise ValueError(f"{fn}: masks[{i}] has shape {m.shape}, expected {w.shape}")
            w = w * m
        active = (w != 0) if m is None else m
        rho *= float(np.linalg.norm(w.reshape(-1)))
        if i < len(ws) - 1:
            degrees.append(_degree(w, active, fn, i))
    d_max = max([d * d for d in degrees], default=1.0)
    depth = len(ws)
    if d_max == 0.0:  # a hidden layer without any active connection: the network is constant
        d_max = 1.0
    complexity = ((rho + 1.0) / n * 2.0 ** 1.5
                  * (1.0 + math.sqrt(2.0 * (depth * math.log(2.0 * d_max) + math.log(k))))
                  * x * math.prod(degrees))
    confidence = 3.0 * math.sqrt(math.log(2.0 * (rho + 2.0) ** 2 / delta) / (2.0 * n))
    return {"bound": complexity + confidence, "rho": rho, "degrees": degrees, "d_max": d_max,
            "depth": depth, "complexity": complexity, "confidence": confidence}
