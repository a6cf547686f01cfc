"""Concave-regularised lottery tickets (Fracastoro et al. 2025, seed 004).

A relaxed mask ``m`` in ``[0, 1]`` per connection is trained jointly with the
weights ``theta`` on ``L(m * theta) + lam * R(m)``, ``R`` the concave
logarithmic penalty (``penalty="l1"``: the convex reference; see
:func:`lpcore.concave_penalty`): every step of the search (steps ``0 ..
end - 1``) a projected gradient step

    m <- clip(m - mask_lr * (dL/dw_eff * theta + lam * R'(m)), 0, 1).

At ``end`` the mask is thresholded to exactly the target: the
``round(target N)`` smallest ``m`` over all layers are cut (ties: the
smaller ``|theta|`` first), every parameter is rewound to its value after
step ``begin`` (the rewind step; the binding keeps that copy) with the
optimizer state cleared, and the ticket trains from there.  The run costs two
trainings: the search and the ticket.

Where this departs from the paper: its full text was not readable here; the
penalty's scaling (``log(1 + m/eps) / log(1 + 1/eps)``), the plain projected
SGD on ``m`` with its own step ``mask_lr`` and the defaults are this
library's choices.  The defaults (``mask_lr=30``, ``lam=3e-5``) were picked on
seed 3 of digits, mnist5k and mnist1d (``lpcore-train``'s MLP) from a sweep of
six (mask_lr, lam) pairs: the loss part of the mask gradient is tiny
(median ``|dL/dw_eff * theta|`` a few 1e-6 on digits), so a small step
leaves the penalty in charge -- with the first defaults (1.0, 2e-3) every
``m`` reached 0 before the end of a digits search and the threshold fell
back to ``|theta|`` -- and a much larger one (300 and more) made the search
diverge.
"""
from __future__ import annotations

import numbers

import numpy as np

from .._validate import check_real
from ..masklearn import MIN_EPS, _concave_step, as_float, shifted, threshold_scores
from ..masks import activated
from ._base import LearnedMask


class Concave(LearnedMask):
    """The concave lottery; state: the relaxed masks ``m``."""

    name = "concave"
    default_mask_lr = 30.0

    def __init__(self, *args, lam=None, penalty="log", eps=0.1, **kw):
        super().__init__(*args, **kw)
        fn = "lpcore.methods.concave"
        if lam is None:
            lam = 3e-5
        if isinstance(lam, bool) or not isinstance(lam, numbers.Real):
            raise ValueError(f"{fn}: lam must be a number >= 0, got {lam!r}")
        self.lam = check_real(lam, fn, "lam", 0.0, float("inf"), hi_open=True)
        if penalty not in ("log", "l1"):
            raise ValueError(f"{fn}: penalty must be 'log' or 'l1', got {penalty!r}")
        self.penalty = penalty
        self.eps = check_real(eps, fn, "eps", MIN_EPS, float("inf"), hi_open=True)

    @classmethod
    def trainings(cls, rounds=1):
        return 2

    @classmethod
    def schedule(cls, steps, frequency=None, rounds=1):
        """The mask search for one training (``steps``), the rewind 2% into
        it, then the ticket (``frequency`` does not apply)."""
        return min(int(0.02 * steps), steps - 1), steps, steps

    def start_sparsity(self):
        return 0.0

    @property
    def rewind_step(self):
        return self.begin

    def learning(self, t):
        return t < self.end

    def due(self, t):
        return t == self.end

    def rewinds(self, t):
        return t == self.end

    def finalizes(self, t):
        return False

    def init_scores(self, shapes):
        return [np.ones(s) for s in shapes]

    def gates(self):
        return self._views_of(shifted(self._flat, 0.0))  # a copy

    def learn(self, t, layers):
        """One projected mask step on the layers' backend (GPU layers: the
        masks stay on the device; the copy to the host is three integers per
        layer)."""
        new = self._step_layers(layers, lambda s, o, ly: _concave_step(
            s, ly.grad, ly.latent, self.mask_lr, self.lam, self.penalty, self.eps, o, ly.axis,
            True))  # o: a fresh buffer
        self._set_scores(new, [s.shape for s in self.scores])
        return self.gates()

    def update(self, t, layers):
        """The threshold to exactly the target (the ticket's masks), on the
        layers' backend."""
        self._check_scores(layers)
        self._scores_on(layers)
        k = int(round(self.target * self._flat.size))
        keep = threshold_scores(self._flat, [ly.latent if ly.latent is not None else ly.weight
                                             for ly in layers], k)
        out = []
        for new, ly in zip(self._views(keep, layers), layers):
            out.append((new, activated(new, ly.mask)))
        self._set_scores(as_float(keep), [s.shape for s in self.scores])
        return out
