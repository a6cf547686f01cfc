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

The steps the methods take every iteration, :func:`score_step` (SCL),
:func:`concave_step` (the concave lottery), :func:`calibrate_lambda` and the
ticket's :func:`threshold_scores`, run on the arrays' backend: on GPU arrays
the scores stay on the device and only the integers that decide an error (or
one order statistic) reach the host.  The other functions take host NumPy
arrays.  None writes its inputs.
"""
from __future__ import annotations

import math

import numpy as np

from ._backend import for_arrays
from ._validate import as_array, check_real, check_real_array, compute_dtype
from .kernels.masklearn import ste_rows, unit_rms_rows
from .layout import feature_axes, groups, to_groups
from .masks import _flat, _key_dtype

__all__ = ["ste_mask_grad", "normalize_per_feature", "concave_penalty", "concave_penalty_grad",
           "calibrate_lambda", "score_step", "concave_step", "threshold_scores"]

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
    out = unit_rms_rows(rows, eps).astype(a.dtype, copy=False)
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
    if not normalize:
        with np.errstate(over="ignore"):
            out = g * th
        if not np.all(np.isfinite(out)):
            raise ValueError(f"{fn}: grad * latent overflows {out.dtype} (normalize=True "
                             "scales it)")
        return out
    if g.ndim < 1:
        raise ValueError(f"{fn}: grad * latent must have at least 1 dimension, got a scalar")
    grp = groups(g.shape, feature_axes(g.ndim) if axis is None else axis, fn)
    if grp.n == 0 or grp.G == 0:
        return g * th
    rows = ste_rows(grp.to2d(g, g.dtype), grp.to2d(th, th.dtype))
    return np.ascontiguousarray(grp.from2d(rows))


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

    ``proposal`` may be a GPU array (any real array, read in C order as
    float64): the ``k``-th smallest entry is then found by a radix select on
    the device and the checks are counts; a few integers and that one value
    reach the host.

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> lpcore.calibrate_lambda(np.array([0.3, -0.1, 0.2, 0.5]), 0.1, 2)
    2.0
    """
    fn = "lpcore.calibrate_lambda"
    B = for_arrays(fn, proposal=proposal)
    a = check_real_array(B.as_array(proposal, fn, "proposal"), fn, "proposal")
    a = _flat(B, a, fn, np.float64)  # a view when it is C-contiguous float64
    bad = B.kernels.nonfinite_count(a)
    if bad:
        raise ValueError(f"{fn}: proposal contains NaN or Inf ({bad} entries)")
    step = check_real(step, fn, "step", 0.0, math.inf, lo_open=True, hi_open=True)
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or \
            not 0 <= k <= a.size:
        raise ValueError(f"{fn}: k must be an integer in [0, {a.size}], got {k!r}")
    if a.size == 0:
        return 0.0
    K = B.kernels
    if k == 0:  # everything stays: just below the smallest
        lo = K.kth_smallest(a, 1)
        return _boundary(lambda lam: lo - step * lam > 0.0, lo / step, -1.0, fn, k, step)
    kth = K.kth_smallest(a, k)
    # rounding: the k-th entry must reach <= 0 exactly, with the least such lam
    lam = _boundary(lambda lam: kth - step * lam <= 0.0, kth / step, 1.0, fn, k, step)
    # k and the entries tied with the k-th, against those the lam leaves <= 0
    want, got = K.count_at_most(a, kth, step * lam)
    if got != want:
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


def _step_inputs(B, fn, scores, grad, latent, axis, name):
    """The (G, n) views of a step's float64 scores and of its grad and latent
    (their compute dtype), the groups and the scores' array."""
    s = check_real_array(B.as_array(scores, fn, name), fn, name)
    if s.ndim < 1:
        raise ValueError(f"{fn}: {name} must have at least 1 dimension, got a scalar")
    grp = groups(s.shape, feature_axes(s.ndim) if axis is None else axis, fn)
    s2 = B.to2d(grp, s, np.float64)
    if grad is None:
        return s, grp, s2, None, None
    if latent is None:
        raise ValueError(f"{fn}: grad was given without latent (the trainable weights)")
    g = check_real_array(B.as_array(grad, fn, "grad"), fn, "grad")
    th = check_real_array(B.as_array(latent, fn, "latent"), fn, "latent")
    for a, nm in ((g, "grad"), (th, "latent")):
        if a.shape != s.shape:
            raise ValueError(f"{fn}: {nm} has shape {a.shape}, expected {name}'s {s.shape}")
    comp, _ = compute_dtype(g, th, fn=fn, names=("grad", "latent"))
    return s, grp, s2, B.to2d(grp, g, comp), B.to2d(grp, th, comp)


def _target(B, grp, out, shape, fn, inputs, owned):
    """(out, where the step writes, out's view when that is it).  A kernel that
    meets a bad row may already have written others, so the step writes into
    ``out`` directly only when the caller ``owned`` it (a fresh buffer it drops
    on an error), as :meth:`_Backend.target` allows; else into a new buffer,
    copied to ``out`` on success (:meth:`_Backend.finish`)."""
    if out is not None:
        out = B.check_out(out, shape, np.float64, fn)
    tgt = B.target(grp, out, np.float64, [a for a in inputs if a is not None]) if owned \
        else None
    return out, (tgt if tgt is not None else B.empty((grp.G, grp.n), np.float64)), tgt


def score_step(scores, grad, latent, mask_lr, axis=None, out=None):
    """SCL's score step before its regulariser: ``scores - mask_lr *
    ste_mask_grad(grad, latent, axis)`` (``grad`` None: the scores, copied),
    float64, on the arrays' backend: for GPU arrays one kernel with a block
    per output feature, and the one copy to the host is two integers.

    Raises
    ------
    ValueError
        NaN or Inf in ``grad`` or ``latent`` (naming the group), shapes that
        differ, a ``mask_lr`` that is not positive.  Nothing is written.

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> lpcore.score_step(np.ones((1, 2)), np.array([[1.0, -1.0]]), np.ones((1, 2)), 0.5)
    array([[0.5, 1.5]])
    """
    return _score_step(scores, grad, latent, mask_lr, axis, out, False)


def _score_step(scores, grad, latent, mask_lr, axis, out, owned):
    """:func:`score_step`; ``owned``: ``out`` is the caller's fresh buffer
    (written directly, left partly written on an error)."""
    fn = "lpcore.score_step"
    B = for_arrays(fn, scores=scores, grad=grad, latent=latent, out=out)
    mask_lr = check_real(mask_lr, fn, "mask_lr", 0.0, math.inf, lo_open=True, hi_open=True)
    s, grp, s2, g2, th2 = _step_inputs(B, fn, scores, grad, latent, axis, "scores")
    out, dst, tgt = _target(B, grp, out, s.shape, fn, (s2, g2, th2), owned)
    if s.size:
        bad_g, bad_t = B.kernels.score_step(s2, g2, th2, mask_lr, dst)
        for bad, nm in ((bad_g, "grad"), (bad_t, "latent")):
            if bad < grp.G:
                raise ValueError(f"{fn}: {nm} contains NaN or Inf in group {grp.index(bad)}")
    return B.finish(dst, grp, out, np.float64, tgt)


def concave_step(m, grad, latent, mask_lr, lam, kind="log", eps=0.1, out=None, axis=None):
    """The concave lottery's projected mask step: ``clip(m - mask_lr * (lam
    * concave_penalty_grad(m, kind, eps) + grad * latent), 0, 1)`` (``grad``
    None: the penalty only), float64, on the arrays' backend (GPU arrays: one
    elementwise kernel; the one copy to the host is three integers).

    Raises
    ------
    ValueError
        ``m`` outside [0, 1], NaN or Inf in ``grad`` or ``latent`` (naming the
        group of ``axis``, default all but the first), bad options.  Nothing
        is written.

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> lpcore.concave_step(np.array([[0.5, 1.0]]), np.array([[1.0, -1.0]]),
    ...                     np.ones((1, 2)), 0.1, 0.0)
    array([[0.4, 1. ]])
    """
    return _concave_step(m, grad, latent, mask_lr, lam, kind, eps, out, axis, False)


def _concave_step(m, grad, latent, mask_lr, lam, kind, eps, out, axis, owned):
    """:func:`concave_step`; ``owned`` as for :func:`_score_step`."""
    fn = "lpcore.concave_step"
    B = for_arrays(fn, m=m, grad=grad, latent=latent, out=out)
    eps = _kind_eps(kind, eps, fn)
    mask_lr = check_real(mask_lr, fn, "mask_lr", 0.0, math.inf, lo_open=True, hi_open=True)
    lam = check_real(lam, fn, "lam", 0.0, math.inf, hi_open=True)
    s, grp, s2, g2, th2 = _step_inputs(B, fn, m, grad, latent, axis, "m")
    out, dst, tgt = _target(B, grp, out, s.shape, fn, (s2, g2, th2), owned)
    if s.size:
        bads = B.kernels.concave_step(s2, g2, th2, mask_lr, lam, kind == "log", eps, dst)
        for bad, what in zip(bads, ("m has an entry outside [0, 1] (or NaN)",
                                    "grad contains NaN or Inf", "latent contains NaN or Inf")):
            if bad < grp.G:
                raise ValueError(f"{fn}: {what} in group {grp.index(bad)}")
    return B.finish(dst, grp, out, np.float64, tgt)


def threshold_scores(scores, latents, k):
    """The concave lottery's ticket: cut the ``k`` smallest of all layers'
    ``scores`` (ties: the smaller ``|latent|`` first, then the earlier layer
    and the lower flat index), on the arrays' backend.

    ``scores`` holds every layer's scores in layer order, each C-ordered
    (the methods keep them in one 1-D float64 buffer; any real array is
    read in C order); ``latents`` one real array per layer (the
    trainable weights) whose sizes add up to it.  Returns the 1-D boolean
    mask of the entries kept.  On GPU arrays: one order statistic, two counts
    and a radix selection among the tied scores, all on the device.

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> lpcore.threshold_scores(np.array([0.0, 0.5, 0.0, 1.0]),
    ...                         [np.array([3.0, 1.0]), np.array([-2.0, 1.0])], 2)
    array([False,  True, False,  True])
    >>> lpcore.threshold_scores(np.array([0.0, 0.5, 0.0, 1.0]),
    ...                         [np.array([3.0, 1.0]), np.array([-2.0, 1.0])], 1)
    array([ True,  True, False,  True])
    """
    fn = "lpcore.threshold_scores"
    latents = list(latents)
    B = for_arrays(fn, scores=scores, **{f"latents[{i}]": a for i, a in enumerate(latents)})
    m = _flat(B, check_real_array(B.as_array(scores, fn, "scores"), fn, "scores"), fn,
              np.float64)
    ths = [check_real_array(B.as_array(a, fn, f"latents[{i}]"), fn, f"latents[{i}]")
           for i, a in enumerate(latents)]
    if sum(a.size for a in ths) != m.size:
        raise ValueError(f"{fn}: latents hold {sum(a.size for a in ths)} entries for "
                         f"{m.size} scores")
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or \
            not 0 <= k <= m.size:
        raise ValueError(f"{fn}: k must be an integer in [0, {m.size}], got {k!r}")
    K = B.kernels
    if K.nonfinite_count(m):
        raise ValueError(f"{fn}: scores contain NaN or Inf")
    keep = B.empty((m.size,), np.bool_)
    if k == 0:
        if m.size:
            K.fill(B.shaped(keep, (1, m.size)), True)
        return keep
    v = K.kth_smallest(m, k)
    below, tied = B.empty((m.size,), np.bool_), B.empty((m.size,), np.bool_)
    n_below = K.tiers(m, v, below, tied)
    # among the scores tied with the k-th, the k - n_below smallest |latent|
    keys, start = B.empty((m.size,), np.float64), 0
    for i, a in enumerate(ths):
        part = keys[start:start + a.size]
        if a.size and K.magnitudes(_flat(B, a, fn, _key_dtype(a)), tied[start:start + a.size],
                                   True, part):
            raise ValueError(f"{fn}: latents[{i}] contains NaN or Inf among the tied scores")
        start += a.size
    tied_kept, _ = K.select_keys(keys, tied, k - n_below, active=True)
    return K.keep_above(below, tied, tied_kept, keep)


# the methods' elementwise steps on their flat score buffers (either backend)
def shifted(flat, c):
    """``flat - c``: a new 1-D float64 array on ``flat``'s backend."""
    B = for_arrays("lpcore.masklearn.shifted", flat=flat)
    return B.kernels.shift(flat, float(c), B.empty((flat.size,), np.float64))


def positive(flat):
    """``1.0`` where the 1-D float64 ``flat > 0``, else 0.0 (a new array)."""
    B = for_arrays("lpcore.masklearn.positive", flat=flat)
    return B.kernels.positive(flat, B.empty((flat.size,), np.float64))


def as_float(keep):
    """A 1-D boolean array as a new float64 one (1.0 where True)."""
    B = for_arrays("lpcore.masklearn.as_float", keep=keep)
    return B.flat(B.to2d(groups((1, keep.size), None, "lpcore.masklearn.as_float"),
                         B.shaped(keep, (1, keep.size)), np.float64))
