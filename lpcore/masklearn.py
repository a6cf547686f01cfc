"""Learned masks: the pieces of SCL and of the concave-regularised lottery.

Both methods train a real-valued score ``m`` per connection next to the
weights ``theta``; the network computes with ``theta * gate(m)``:

* SCL (Tang et al. 2022, seed 002): ``gate = u(m)``, the unit step.  With the
  identity straight-through estimator ``du/dm := 1``, the score gradient of the
  loss is ``dL/dm = dL/dw_eff * theta`` (:func:`ste_mask_grad`), normalised per
  output feature because its scale differs wildly between features
  (:func:`normalize_per_feature`).  The count regulariser ``lambda * (active)
  / (all)`` pushes every score down by the same amount; with a target
  sparsity its weight is calibrated step by step (:func:`calibrate_lambda`).
* Concave-regularised lottery tickets (Fracastoro et al. 2025, seed 004):
  ``gate = m`` in ``[0, 1]``; the loss adds ``lambda * R(m)`` with ``R``
  concave (:func:`concave_penalty`, its gradient
  :func:`concave_penalty_grad`): the logarithmic penalty, and ``l1`` as the
  convex reference.

All functions take host NumPy arrays (the methods' state lives on the host)
and never write their inputs.
"""
from __future__ import annotations

import math

import numpy as np

from ._validate import as_array, check_real, check_real_array
from .layout import feature_axes, groups, to_groups

__all__ = ["ste_mask_grad", "normalize_per_feature", "concave_penalty", "concave_penalty_grad",
           "calibrate_lambda"]

_KINDS = ("log", "l1")


def _finite(x, fn, name):
    a = check_real_array(as_array(x, fn, name), fn, name)
    if a.dtype.kind != "f":
        a = a.astype(np.float64)
    if a.size and not np.all(np.isfinite(a)):
        bad = np.flatnonzero(~np.isfinite(a.reshape(-1)))[0]
        raise ValueError(f"{fn}: {name} contains NaN or Inf (first at flat index {bad})")
    return a


def normalize_per_feature(g, axis=None, eps=1e-12):
    """``g`` with every output feature's entries (one group: the fan-in
    ``axis``, default all but the first; a vector is one feature) scaled to unit root-mean-square; a
    feature whose entries are all below ``eps`` in RMS is left as it is.

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> lpcore.normalize_per_feature(np.array([[3.0, 4.0], [0.0, 0.0]]), axis=1) * np.sqrt(12.5)
    array([[3., 4.],
           [0., 0.]])
    """
    return _normalize(g, axis, eps, "lpcore.normalize_per_feature", "g")


def _normalize(g, axis, eps, fn, name):
    eps = check_real(eps, fn, "eps", 0.0, math.inf, hi_open=True)
    a = _finite(g, fn, name)
    if a.ndim < 1:
        raise ValueError(f"{fn}: {name} must have at least 1 dimension, got a scalar")
    if axis is None:
        axis = feature_axes(a.ndim)
    grp = groups(a.shape, axis, fn)  # a bad axis is named with fn
    rows = to_groups(a, axis).astype(np.float64)
    if rows.shape[1] == 0:
        return a.copy()
    with np.errstate(over="ignore", under="ignore"):
        rms = np.sqrt(np.mean(rows * rows, axis=1, keepdims=True))
    top = np.max(np.abs(rows), axis=1, keepdims=True)
    off = ~np.isfinite(rms) | ((rms < 1e-150) & (top > 0))  # the squares over- or underflowed
    if off.any():  # those rows max-scaled: entries near 1e200 or 1e-200 keep their RMS
        r = np.flatnonzero(off[:, 0])
        rms[r] = top[r] * np.sqrt(np.mean((rows[r] / top[r]) ** 2, axis=1, keepdims=True))
    scale = np.where(rms > eps, rms, 1.0)
    out = (rows / scale).astype(a.dtype, copy=False)
    return np.ascontiguousarray(grp.from2d(out))


def ste_mask_grad(grad, latent, axis=None, normalize=True):
    """The identity straight-through score gradient of SCL: ``dL/dm =
    dL/dw_eff * theta`` (``grad`` the dense gradient of the effective weight,
    ``latent`` the trainable weight ``theta``, masked connections included),
    normalised per output feature (:func:`normalize_per_feature`) unless
    ``normalize`` is False.

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> lpcore.ste_mask_grad(np.array([[1.0, -2.0]]), np.array([[0.5, 0.5]]), normalize=False)
    array([[ 0.5, -1. ]])
    """
    fn = "lpcore.ste_mask_grad"
    g = _finite(grad, fn, "grad")
    th = _finite(latent, fn, "latent")
    if g.shape != th.shape:
        raise ValueError(f"{fn}: latent has shape {th.shape}, expected grad's {g.shape}")
    with np.errstate(over="ignore"):
        out = g * th
    if np.all(np.isfinite(out)):
        return _normalize(out, axis, 1e-12, fn, "grad * latent") if normalize else out
    if not normalize:
        raise ValueError(f"{fn}: grad * latent overflows {out.dtype} (normalize=True scales it)")
    # per feature the normalised result is scale-free: both factors scaled to at
    # most 1 first, in float64, so that neither the product nor float16 overflows
    g64, th64 = g.astype(np.float64), th.astype(np.float64)
    ax = groups(g.shape, feature_axes(g.ndim) if axis is None else axis, fn).reduced
    for x in (g64, th64):
        top = np.max(np.abs(x), axis=ax, keepdims=True)
        x /= np.where(top > 0, top, 1.0)
    return _normalize(g64 * th64, axis, 1e-300, fn, "grad * latent").astype(out.dtype)


#: the smallest eps of the log penalty: its gradient at 0, 1 / (eps log(1 + 1/eps)),
#: overflows float64 below about 1e-306
MIN_EPS = 1e-300


def _kind_eps(kind, eps, fn):
    if kind not in _KINDS:
        raise ValueError(f"{fn}: kind must be one of {_KINDS}, got {kind!r}")
    return check_real(eps, fn, "eps", MIN_EPS, math.inf, hi_open=True)


def _unit_interval(m, fn):
    a = _finite(m, fn, "m")
    if a.size and (a.min() < 0.0 or a.max() > 1.0):
        bad = np.flatnonzero((a.reshape(-1) < 0) | (a.reshape(-1) > 1))[0]
        raise ValueError(f"{fn}: m must lie in [0, 1] (a relaxed mask); entry {bad} is "
                         f"{a.reshape(-1)[bad]!r}")
    return a


def concave_penalty(m, kind="log", eps=0.1):
    """The mask penalty ``R(m)`` summed over the entries of ``m`` in ``[0, 1]``:

    * ``"log"``: ``sum log(1 + m / eps) / log(1 + 1 / eps)``, concave, 0 at
      ``m = 0`` and 1 per entry at ``m = 1``; it differs from ``sum log(m +
      eps)`` by a scale and a constant (the same minimisers), and tends to the
      count of non-zeros as ``eps -> 0``.
    * ``"l1"``: ``sum m``, the convex reference (``eps`` unused).

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> lpcore.concave_penalty(np.array([0.0, 1.0, 1.0]))
    2.0
    >>> lpcore.concave_penalty(np.array([0.5]), kind="l1")
    0.5
    """
    fn = "lpcore.concave_penalty"
    eps = _kind_eps(kind, eps, fn)
    a = _unit_interval(m, fn).astype(np.float64, copy=False)
    if kind == "l1":
        return float(a.sum())
    return float(np.log1p(a / eps).sum() / math.log1p(1.0 / eps))


def concave_penalty_grad(m, kind="log", eps=0.1):
    """The gradient of :func:`concave_penalty` with respect to ``m``: ``1 /
    ((eps + m) log(1 + 1/eps))`` for ``"log"`` (largest at 0: small entries are
    pushed hardest), ``1`` for ``"l1"``; float64 of ``m``'s shape.

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> lpcore.concave_penalty_grad(np.array([0.0, 1.0]), kind="l1")
    array([1., 1.])
    """
    fn = "lpcore.concave_penalty_grad"
    eps = _kind_eps(kind, eps, fn)
    a = _unit_interval(m, fn).astype(np.float64, copy=False)
    if kind == "l1":
        return np.ones(a.shape)
    return 1.0 / ((eps + a) * math.log1p(1.0 / eps))


def calibrate_lambda(proposal, step, k):
    """The regulariser weight ``lam`` for which exactly the ``k`` smallest
    entries of ``proposal - step * lam`` are ``<= 0`` (more only where values
    tie): ``proposal`` holds the scores after the loss part of a step, all
    layers in one array, ``step`` the score step size.  It is the multiplier
    of the constraint "``k`` inactive connections": positive when the loss
    alone prunes fewer than ``k``, negative when it would prune more.

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> lpcore.calibrate_lambda(np.array([0.3, -0.1, 0.2, 0.5]), 0.1, 2)
    2.0
    """
    fn = "lpcore.calibrate_lambda"
    a = _finite(proposal, fn, "proposal").reshape(-1)
    step = check_real(step, fn, "step", 0.0, math.inf, lo_open=True, hi_open=True)
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or \
            not 0 <= k <= a.size:
        raise ValueError(f"{fn}: k must be an integer in [0, {a.size}], got {k!r}")
    if a.size == 0:
        return 0.0
    if k == 0:  # everything stays: just below the smallest
        lo = float(a.min())
        return _boundary(lambda lam: lo - step * lam > 0.0, lo / step, -1.0, fn, k, step)
    kth = float(np.partition(a, k - 1)[k - 1])
    # rounding: the k-th entry must reach <= 0 exactly, with the least such lam
    lam = _boundary(lambda lam: kth - step * lam <= 0.0, kth / step, 1.0, fn, k, step)
    want = int(np.count_nonzero(a <= kth))  # k, and the entries tied with the k-th
    if int(np.count_nonzero(a - step * lam <= 0.0)) != want:
        raise ValueError(f"{fn}: no lam leaves exactly k={k} entries <= 0 at step={step!r}: "
                         "the k-th and the next scores are closer than step * lam resolves")
    return lam


def _boundary(ok, start, direction, fn, k, step):
    """The float nearest ``start`` on the ``ok`` side of the boundary where
    ``ok(lam)`` turns true moving in ``direction``: first doubling steps to
    bracket it, then bisection (a bounded number of steps, whatever the
    scale: no one-ulp crawl)."""
    if not math.isfinite(start):
        raise ValueError(f"{fn}: no finite lam reaches k={k} at step={step!r} (the score over "
                         "step overflows)")
    if ok(start):
        return start
    bad, delta = start, max(abs(start) * 2.0 ** -52, 5e-324)
    for _ in range(2200):
        good = bad + direction * delta
        if not math.isfinite(good):
            break
        if ok(good):
            for _ in range(2200):  # bisect between bad (not ok) and good (ok)
                mid = bad + (good - bad) / 2.0
                if mid == bad or mid == good:
                    return good
                if ok(mid):
                    good = mid
                else:
                    bad = mid
            return good
        bad, delta = good, delta * 2.0
    raise ValueError(f"{fn}: no finite lam reaches k={k} at step={step!r}")
