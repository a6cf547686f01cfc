"""Schedules and controllers of sparse training (DESIGN section 5).

* :func:`drop_threshold_schedule` - ``h(t)``: constant, cosine or exponential.
* :func:`sparsity_schedule` - the target path from ``s0`` to ``s*`` (cubic,
  as gradual magnitude pruning uses, or linear).
* :func:`grow_ratio` - the threshold-adaptation controller for ``phi``
  (the reference's rule); :func:`regrow_ratio` - the library's, which tracks
  the sparsity schedule; :func:`threshold_gain` - the drop threshold's
  adaptation when a drop round falls short.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ._validate import check_real

__all__ = ["drop_threshold_schedule", "sparsity_schedule", "grow_ratio", "regrow_ratio", "threshold_gain"]


def _progress(step, begin, end, fn):
    begin, end = check_real(begin, fn, "begin"), check_real(end, fn, "end")
    if end <= begin:
        raise ValueError(f"{fn}: need begin < end, got begin={begin!r}, end={end!r}")
    return min(1.0, max(0.0, (step - begin) / (end - begin)))


def drop_threshold_schedule(step, h0, begin, end, kind="cosine", final_ratio=0.01):
    """The relative drop threshold ``h`` at ``step``.

    ``h0`` before ``begin``; between ``begin`` and ``end``: ``"constant"``
    keeps ``h0``, ``"cosine"`` anneals ``h0 (1 + cos(pi x)) / 2`` to 0,
    ``"exponential"`` anneals ``h0 * final_ratio ** x`` (x in [0, 1] the
    progress); after ``end``, 0 (the topology is frozen).

    Examples
    --------
    >>> import lpcore
    >>> [round(lpcore.drop_threshold_schedule(t, 0.2, 0, 10), 3) for t in (0, 5, 10, 11)]
    [0.2, 0.1, 0.0, 0.0]
    """
    fn = "lpcore.drop_threshold_schedule"
    if kind not in ("constant", "cosine", "exponential"):
        raise ValueError(f"{fn}: kind must be 'constant', 'cosine' or 'exponential', got {kind!r}")
    step = check_real(step, fn, "step")
    h0 = check_real(h0, fn, "h0", lo=0.0)
    final_ratio = check_real(final_ratio, fn, "final_ratio", 0.0, 1.0, lo_open=True)
    x = _progress(step, begin, end, fn)
    if step > end:
        return 0.0
    if kind == "constant":
        return float(h0)
    if kind == "cosine":
        return float(h0) * 0.5 * (1.0 + math.cos(math.pi * x))
    return float(h0) * float(final_ratio) ** x


def sparsity_schedule(step, s0, s_target, begin, end, kind="cubic"):
    """Target mask sparsity at ``step``: ``s0`` before ``begin``, ``s_target`` from
    ``end`` on, in between ``s* + (s0 - s*) (1 - x)^3`` (cubic, Zhu & Gupta's
    gradual pruning) or linear in the progress ``x``.

    Examples
    --------
    >>> import lpcore
    >>> lpcore.sparsity_schedule(5, 0.2, 0.9, 0, 10, kind="linear")
    0.55
    """
    fn = "lpcore.sparsity_schedule"
    if kind not in ("cubic", "linear"):
        raise ValueError(f"{fn}: kind must be 'cubic' or 'linear', got {kind!r}")
    step = check_real(step, fn, "step")
    s0 = check_real(s0, fn, "s0", 0.0, 1.0)
    s_target = check_real(s_target, fn, "s_target", 0.0, 1.0)
    x = _progress(step, begin, end, fn)
    r = (1.0 - x) ** 3 if kind == "cubic" else 1.0 - x
    return float(s_target) + (float(s0) - float(s_target)) * r


def grow_ratio(sparsity, target, h, delta=0.1):
    """Threshold adaptation: the ratio ``phi`` of regrown to dropped connections.

    ``phi = (1 - delta) s / s*`` while the mask is not yet sparse enough
    (``s < s* (1 - h / 2)``): fewer connections regrow than were dropped, so
    sparsity rises; otherwise ``phi = (1 + delta) s / s*``, letting sparsity
    fall back towards the target.

    Examples
    --------
    >>> import lpcore
    >>> round(lpcore.grow_ratio(0.45, 0.9, 0.2), 3), round(lpcore.grow_ratio(0.95, 0.9, 0.2), 3)
    (0.45, 1.161)
    """
    fn = "lpcore.grow_ratio"
    s = check_real(sparsity, fn, "sparsity", 0.0, 1.0)
    t = check_real(target, fn, "target", 0.0, 1.0, lo_open=True)
    h = check_real(h, fn, "h", lo=0.0)
    delta = check_real(delta, fn, "delta", 0.0, 1.0, hi_open=True)
    if s < t * (1.0 - float(h) / 2.0):
        return (1.0 - float(delta)) * s / t
    return (1.0 + float(delta)) * s / t


def regrow_ratio(zeros_after_drop, n_dropped, target_zeros):
    """The schedule-tracking grow ratio ``phi`` (this library's LpSS controller).

    After a drop round has removed ``n_dropped`` connections, leaving
    ``zeros_after_drop`` inactive ones, regrowing ``phi * n_dropped`` puts the
    mask exactly at ``target_zeros`` (the sparsity schedule's value now):
    ``phi = (zeros_after_drop - target_zeros) / n_dropped``, at least 0.  A
    ratio above 1 means the mask is sparser than scheduled and regrows more
    than was dropped; 0 means the drop round fell short of the schedule
    (nothing regrows).  0 when nothing was dropped.

    The reference's rule, :func:`grow_ratio`, steers by ``(1 -+ delta) s / s*``
    and has its fixed point at ``s*/(1 + delta)`` whenever the drop threshold
    is large; DESIGN section 5 and the README give the measurements.

    Examples
    --------
    >>> import lpcore
    >>> lpcore.regrow_ratio(zeros_after_drop=600, n_dropped=200, target_zeros=500)
    0.5
    >>> lpcore.regrow_ratio(450, 100, 500)   # the drop fell short: regrow nothing
    0.0
    """
    fn = "lpcore.regrow_ratio"
    vals = {"zeros_after_drop": zeros_after_drop, "n_dropped": n_dropped,
            "target_zeros": target_zeros}
    for name, v in vals.items():
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) or v < 0:
            raise ValueError(f"{fn}: {name} must be an integer >= 0, got {v!r}")
    if n_dropped == 0:
        return 0.0
    return max(0.0, (int(zeros_after_drop) - int(target_zeros)) / int(n_dropped))


def threshold_gain(gain, zeros_after_drop, target_zeros, delta=0.1):
    """Threshold adaptation of this library's LpSS controller: the next factor on ``h``.

    A drop round that left fewer inactive connections than the schedule asks
    for (``zeros_after_drop < target_zeros``) raises the factor by
    ``1 + delta``; otherwise it relaxes by ``1 - delta``, never below 1 (the
    threshold p was chosen for).  This absorbs the gamma model's error in the
    share of weights below ``h * mean|w|``.

    Examples
    --------
    >>> import lpcore
    >>> lpcore.threshold_gain(1.0, 400, 500), lpcore.threshold_gain(1.21, 600, 500)
    (1.1, 1.089)
    >>> lpcore.threshold_gain(1.05, 600, 500)
    1.0
    """
    g, d = float(gain), float(delta)
    if not (0.0 < g < math.inf and math.isfinite(d)):
        raise ValueError(f"lpcore.threshold_gain: need a finite gain > 0 and a finite delta, "
                         f"got gain={gain!r}, delta={delta!r}")
    return g * (1.0 + d) if zeros_after_drop < target_zeros else max(1.0, g * (1.0 - d))
