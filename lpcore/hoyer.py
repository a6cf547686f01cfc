"""Hoyer's sparsity measure per group, per layer and per network."""
from __future__ import annotations

import math

import numpy as np

from ._backend import for_arrays
from ._device import is_device
from ._validate import compute_dtype
from .layout import groups, fan_in_axes

__all__ = ["hoyer", "hoyer_layer", "hoyer_network", "fan_in_axes", "participation_ratio"]


def hoyer(x, axis=None, keepdims=False):
    """Hoyer's sparsity ``(sqrt(n) - ||x||_1/||x||_2) / (sqrt(n) - 1)`` per group.

    Parameters
    ----------
    x : array_like
        Real data.
    axis : None, int or tuple of ints
        The axes of one group (reduced); ``None``: the whole array.
    keepdims : bool
        Keep reduced axes with length 1.

    Returns
    -------
    ndarray or scalar
        Values in [0, 1] (clamped against rounding), x's floating dtype.  1 iff
        exactly one entry is non-zero; 0 iff all magnitudes are equal and
        non-zero.  An all-zero group (a dead neuron) has sparsity 1.0.

    Raises
    ------
    ValueError
        Groups of length < 2 (undefined), NaN/Inf data (names the group).

    Notes
    -----
    One pass over float32 data (both sums accumulated in float64, where the
    squares of float32 values can neither overflow nor underflow); float64
    data are max-scaled (a max pass and a sums pass per cached chunk).

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> float(lpcore.hoyer(np.array([0.0, 0.0, 5.0])))
    1.0
    >>> lpcore.hoyer(np.array([[1.0, -1.0], [1.0, 0.0]]), axis=1)
    array([0., 1.])
    """
    fn = "lpcore.hoyer"
    B = for_arrays(fn, x=x)
    x = B.as_array(x, fn, "x")
    comp, res = compute_dtype(x, fn=fn, names=("x",))
    grp = groups(x.shape, axis, fn)
    if grp.n < 2:
        raise ValueError(f"{fn}: groups have length {grp.n}; Hoyer sparsity needs at least "
                         "2 entries per group")
    h, bad = B.kernels.hoyer_sums(B.to2d(grp, x, comp), res)
    if bad < grp.G:
        raise ValueError(f"{fn}: x contains NaN or Inf in group {grp.index(bad)}")
    return B.reduced(grp, h, keepdims)


def hoyer_layer(w, axis="fan_in"):
    """Mean Hoyer sparsity over the groups of one layer weight (a float).

    ``axis="fan_in"`` (default) groups by output unit for Linear and Conv
    layouts (all axes but the first); pass explicit axes for other layouts
    (e.g. ``axis=(0, 2, 3)`` for a ConvTranspose2d weight with one group).

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> round(lpcore.hoyer_layer(np.array([[1.0, 0.0], [1.0, 1.0]])), 12)
    0.5
    """
    fn = "lpcore.hoyer_layer"
    B = for_arrays(fn, w=w)
    w = B.as_array(w, fn, "w")
    ax = fan_in_axes(w) if isinstance(axis, str) and axis == "fan_in" else axis
    # G values, not the weights, come to the host
    return float(np.mean(B.to_numpy(hoyer(w, axis=ax))))


def hoyer_network(weights, axes="fan_in"):
    """Parameter-count-weighted average of :func:`hoyer_layer` over layers.

    Parameters
    ----------
    weights : sequence of array_like
        The constrained layer weights.
    axes : "fan_in" or sequence
        One ``axis`` per weight (see :func:`hoyer_layer`).

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> a = np.array([[1.0, 0.0]]); b = np.ones((1, 4))
    >>> lpcore.hoyer_network([a, b])   # (2 * 1.0 + 4 * 0.0) / 6
    0.3333333333333333
    """
    weights = list(weights)
    if not weights:
        raise ValueError("lpcore.hoyer_network: weights is empty")
    if isinstance(axes, str):
        axes = [axes] * len(weights)
    axes = list(axes)
    if len(axes) != len(weights):
        raise ValueError(f"lpcore.hoyer_network: got {len(axes)} axes for {len(weights)} weights")
    sizes = np.array([math.prod(w.shape) if is_device(w) else np.size(w) for w in weights],
                     dtype=np.float64)
    vals = np.array([hoyer_layer(w, a) for w, a in zip(weights, axes)])
    return float(np.dot(sizes, vals) / sizes.sum())


def participation_ratio(x, axis=None):
    """How many entries really carry weight: ``(sum |x|)^2 / sum x^2`` per group.

    For a group with ``k`` equal non-zero magnitudes it is exactly ``k``;
    in general ``1 <= PR <= count of non-zero entries`` (the inverse
    participation ratio's reciprocal; Hoyer's sparsity of the same group is
    ``(sqrt(n) - sqrt(PR)) / (sqrt(n) - 1)``).  Zero entries (masked
    connections) do not count, so over a masked weight it measures the
    active connections.  An all-zero group has 0.

    Parameters
    ----------
    x : array_like
        Real data (host arrays).
    axis : None, int or tuple of ints
        The axes of one group (reduced); None: the whole array (a layer's
        value).

    Returns
    -------
    float64 ndarray or float

    Raises
    ------
    ValueError
        NaN/Inf data (names the group).

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> round(lpcore.participation_ratio(np.array([0.0, 2.0, -2.0, 0.0])), 12)
    2.0
    >>> lpcore.participation_ratio(np.array([[1.0, 1.0, 1.0], [3.0, 0.0, 1e-9]]), axis=1).round(6)
    array([3., 1.])
    """
    from .norms import norm
    fn = "lpcore.participation_ratio"
    x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise TypeError(f"{fn}: x must be real, got dtype {x.dtype}")
    x = x.astype(np.float64, copy=False)
    try:
        l1 = np.asarray(norm(x, 1, axis=axis), dtype=np.float64)
        l2 = np.asarray(norm(x, 2, axis=axis), dtype=np.float64)
    except ValueError as e:  # the norms name the offending group
        raise ValueError(str(e).replace("lpcore.norm", fn)) from None
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(l2 > 0, (l1 / np.where(l2 > 0, l2, 1.0)) ** 2, 0.0)
    return float(r) if r.ndim == 0 else r
