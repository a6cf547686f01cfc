"""LpSS (seeds 000/001): semi-pruning with threshold adaptation on LpSGD.

Each update, per output unit: connections whose magnitude falls below ``h *
mean(active magnitudes)`` are dropped, then ``round(n_dropped * phi)``
connections regrow by normalised dense-gradient magnitude.  The magnitudes
are the latent ones (``D_q`` of LpSGD's dual state, which masked
connections keep: semi-pruning).

The reference implementation (read again on 2026-12-04, DESIGN section 5)
writes every mask into its weights (``prune.remove``) before each update, so
a pruned connection is exactly 0 when the threshold is applied: nothing comes
back by the threshold, and connections return only through the regrowth,
from 0.  ``revive=True`` (a mask over *all* connections from their latent
magnitudes, so a latent value that rose above the threshold comes back) is
this library's own option, not the reference's; :data:`REFERENCE` lists the
reference's settings and :func:`reference_p` its hand-picked exponents.

Where the library's default controller departs from the reference (each
measured; README table (d)):

* ``controller="schedule"``: ``phi`` is :func:`lpcore.regrow_ratio`, the
  ratio that puts the mask on the sparsity schedule, instead of the
  reference's ``(1 -+ delta) s/s*`` aimed at the final ``s*``
  (:func:`lpcore.grow_ratio`, ``controller="reference"``).
* ``h_schedule="auto"`` keeps ``h0`` constant; the reference anneals it
  (cosine), which dries the drops up before the target.
* ``adapt_h=True``: when a drop round falls short of the schedule, the
  threshold grows by ``1 + delta`` (and relaxes back towards ``h0`` by
  ``1 - delta`` once the drops suffice).
* ``finalize="auto"`` means no exact adjustment at ``end`` (the controller
  lands within 0.01 by itself; ``finalize="exact"`` forces the exact count).
* Sparsity is counted over the masked weights; the reference counts mask
  zeros over *all* model parameters (``dense_params``: the parameters outside
  the masks that enter that count).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .._validate import check_real
from ..masks import activated, drop_by_threshold, grow_by_score, inactive_count
from ..schedules import grow_ratio, regrow_ratio, sparsity_schedule, threshold_gain
from ._base import Method


#: The reference implementation's LpSS settings (DESIGN section 5), as the
#: options of this library: no revival by threshold, masked values zeroed
#: (``pruning="hard"``: a regrown connection starts from 0), the grow ratio
#: aimed at the final target, cosine-annealed threshold without adaptation,
#: an update every 40 steps between 20% and 80% of training, no exact
#: adjustment; the classifier masked (but not constrained), sparsity over all
#: parameters, Nesterov momentum 0.9 and the learning-rate schedule of
#: :func:`reference_lr_factor`, with the exponents of :func:`reference_p`.
REFERENCE = dict(revive=False, pruning="hard", controller="reference", h_schedule="cosine",
                 adapt_h=False, finalize="none", frequency=40, init_sparsity=0.2, h0=0.2,
                 delta=0.1, mask_classifier=True, count_all_parameters=True, nesterov=True,
                 momentum=0.9)

#: the reference's hand-picked exponents per target: (first four weight layers, the rest)
_REFERENCE_P = ((0.5, 1.4, 1.3), (0.8, 1.3, 1.15), (0.9, 1.2, 1.07))


def reference_p(target_sparsity, n_layers):
    """The reference's exponent for each of ``n_layers`` constrained layers
    (in depth order) at ``target_sparsity``.

    The reference picked p by hand per depth: the first four weight layers
    and the rest get 1.4 / 1.3 at s* = 0.5, 1.3 / 1.15 at 0.8 and 1.2 / 1.07
    at 0.9.  Between those targets this interpolates linearly; outside
    [0.5, 0.9] it takes the nearest one.

    Examples
    --------
    >>> from lpcore.methods.lpss import reference_p
    >>> reference_p(0.9, 6)
    [1.2, 1.2, 1.2, 1.2, 1.07, 1.07]
    >>> [round(p, 3) for p in reference_p(0.85, 2)]
    [1.25, 1.25]
    """
    s = check_real(target_sparsity, "lpcore.methods.lpss.reference_p", "target_sparsity",
                   0.0, 1.0, lo_open=True, hi_open=True)
    if isinstance(n_layers, bool) or not isinstance(n_layers, numbers.Integral) or n_layers < 0:
        raise ValueError("lpcore.methods.lpss.reference_p: n_layers must be an integer >= 0, "
                         f"got {n_layers!r}")
    ts = [t for t, _, _ in _REFERENCE_P]
    first = float(np.interp(s, ts, [a for _, a, _ in _REFERENCE_P]))
    rest = float(np.interp(s, ts, [b for _, _, b in _REFERENCE_P]))
    return [first if i < 4 else rest for i in range(int(n_layers))]


def reference_lr_factor(step, total):
    """The reference's learning-rate schedule as a factor of the peak rate at
    ``step`` (counted from 0) of ``total``: a linear warm-up over the first
    sixth of training, then a linear decay towards 0 at the end (piecewise
    linear; the factor stays > 0, so that it is a valid LpSGD step).

    Examples
    --------
    >>> from lpcore.methods.lpss import reference_lr_factor
    >>> [round(reference_lr_factor(t, 60), 3) for t in (0, 9, 10, 35, 59)]
    [0.1, 1.0, 0.98, 0.49, 0.02]
    """
    fn = "lpcore.methods.lpss.reference_lr_factor"
    for name, v in (("step", step), ("total", total)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
            raise ValueError(f"{fn}: {name} must be an integer >= 0, got {v!r}")
    if total < 1 or step >= total:
        raise ValueError(f"{fn}: need 0 <= step < total, got step={step}, total={total}")
    warm = max(1, total // 6)
    if step < warm:
        return (step + 1) / warm
    return (total - step) / (total - warm + 1)


class LpSS(Method):
    """Semi-pruning with threshold adaptation; its state: the grow ratio
    ``phi`` and the threshold gain ``h_gain``.

    ``dense_params``: parameters outside the masks (biases, norm layers,
    unmasked weights) that count in the sparsity the ``"reference"``
    controller measures, as the reference counts mask zeros over all model
    parameters; 0 (the default) counts over the masked weights only.
    """

    name = "lpss"
    default_h_schedule = "constant"
    default_finalize = "none"
    uses_latent = True
    device_ready = True

    def __init__(self, *args, dense_params=0, **kw):
        super().__init__(*args, **kw)
        if isinstance(dense_params, bool) or not isinstance(dense_params, numbers.Integral) \
                or dense_params < 0:
            raise ValueError(f"lpcore.methods.lpss: dense_params must be an integer >= 0, "
                             f"got {dense_params!r}")
        self.dense_params = int(dense_params)
        self.phi = 1.0
        self.h_gain = 1.0

    def sparsity_all(self, layers):
        """Mask zeros over the masked weights and the ``dense_params`` others."""
        zeros = sum(inactive_count(ly.mask) for ly in layers)
        return zeros / (sum(ly.mask.size for ly in layers) + self.dense_params)

    def start_sparsity(self):
        return self.s0

    def update(self, t, layers):
        """The topology update at step ``t`` (see :meth:`Method.update`), on
        the layers' own backend: on GPU arrays every mask, latent value and
        index stays on the device and only counts reach the host."""
        h = self.h(t)
        if h == 0.0:  # a zero threshold drops nothing (and would revive every latent value)
            return [None for _ in layers]
        s_t = sparsity_schedule(t, self.s0, self.target, self.begin, self.end)
        h = h * self.h_gain
        drops = [drop_by_threshold(ly.weight if ly.latent is None else ly.latent, ly.mask, h,
                                   axis=ly.axis, revive=self.revive) for ly in layers]
        zeros_old = [inactive_count(ly.mask) for ly in layers]
        zeros_new = [inactive_count(new) for new, _ in drops]
        if self.controller == "reference":
            # the reference aims at the final target, counts every changed entry as
            # "dropped" and floors; changed = dropped + revived, and the revived are
            # the zeros lost beyond the drops
            self.phi = grow_ratio(self.sparsity_all(layers), self.target, h, self.delta)
            ks = [math.floor((2 * nd + zo - zn) * self.phi)
                  for (_, nd), zo, zn in zip(drops, zeros_old, zeros_new)]
        else:
            zeros = sum(zeros_new)
            want = int(round(s_t * sum(ly.mask.size for ly in layers)))
            self.phi = regrow_ratio(zeros, sum(nd for _, nd in drops), want)
            ks = [math.floor(nd * self.phi + 0.5) for _, nd in drops]
            if self.adapt_h:
                self.h_gain = threshold_gain(self.h_gain, zeros, want, self.delta)
        out = []
        for ly, (kept, _), k, zn in zip(layers, drops, ks, zeros_new):
            k = min(int(k), zn)
            new = kept
            if k and ly.grad is not None:
                new, _ = grow_by_score(ly.grad, kept, k, axis=ly.axis)
            # momentum is reset for the regrown (including those dropped and regrown in
            # this round, active before and after) and for the revived: active now,
            # inactive before the update or after the drop
            out.append((new, activated(new, ly.mask, kept)))
        return out

    def state_dict(self):
        return {**super().state_dict(), "phi": self.phi, "h_gain": self.h_gain}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.phi = float(state["phi"])
        self.h_gain = float(state.get("h_gain", 1.0))
