"""LpSS (seeds 000/001): semi-pruning with threshold adaptation on LpSGD.

Each update, per output unit: the new mask over *all* connections from
their latent magnitudes, ``|latent| >= h * mean(active |latent|)`` (so latent
connections can come back, the reference's semantics), then
``round(n_dropped * phi)`` connections regrow by normalised dense-gradient
magnitude.  Where the controller departs from the reference (each measured;
README table (d)):

* ``controller="schedule"``: ``phi`` is :func:`lpcore.regrow_ratio`, the
  ratio that puts the mask on the sparsity schedule, instead of the
  reference's ``(1 -+ delta) s/s*`` (:func:`lpcore.grow_ratio`,
  ``controller="reference"``), whose fixed point lies below the target.
* ``h_schedule="auto"`` keeps ``h0`` constant: p is chosen for ``h0``; the
  reference's cosine annealing dries the drops up before the target, and at
  small ``h`` revival undoes the pruning.
* ``adapt_h=True``: when a drop round falls short of the schedule, the
  threshold grows by ``1 + delta`` (and relaxes back towards ``h0`` by
  ``1 - delta`` once the drops suffice), which absorbs the gamma model's
  error.
* ``finalize="auto"`` means no exact adjustment at ``end`` (the controller
  lands within 0.02 by itself; ``finalize="exact"`` forces the exact count).
"""
from __future__ import annotations

import math

import numpy as np

from ..topology import (drop_by_threshold, grow_by_score, grow_ratio, regrow_ratio,
                        sparsity_schedule, threshold_gain)
from ._base import Method


class LpSS(Method):
    """Semi-pruning with threshold adaptation; its state: the grow ratio
    ``phi`` and the threshold gain ``h_gain``."""

    name = "lpss"
    default_h_schedule = "constant"
    default_finalize = "none"
    uses_latent = True

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.phi = 1.0
        self.h_gain = 1.0

    def start_sparsity(self):
        return self.s0

    def update(self, t, layers):
        h = self.h(t)
        if h == 0.0:  # a zero threshold drops nothing (and would revive every latent value)
            return [None for _ in layers]
        s_t = sparsity_schedule(t, self.s0, self.target, self.begin, self.end)
        h = h * self.h_gain
        drops = [drop_by_threshold(ly.weight if ly.latent is None else ly.latent, ly.mask, h,
                                   axis=ly.axis, revive=self.revive) for ly in layers]
        if self.controller == "reference":
            # the reference counts every changed entry as "dropped" and floors
            self.phi = grow_ratio(self.sparsity(layers), s_t, h, self.delta)
            ks = [math.floor(np.count_nonzero(new != ly.mask) * self.phi)
                  for (new, _), ly in zip(drops, layers)]
        else:
            zeros = sum(int(np.count_nonzero(~new)) for new, _ in drops)
            want = int(round(s_t * sum(ly.mask.size for ly in layers)))
            self.phi = regrow_ratio(zeros, sum(nd for _, nd in drops), want)
            ks = [math.floor(nd * self.phi + 0.5) for _, nd in drops]
            if self.adapt_h:
                self.h_gain = threshold_gain(self.h_gain, zeros, want, self.delta)
        out = []
        for ly, (new, _), k in zip(layers, drops, ks):
            k = min(int(k), int(np.count_nonzero(~new)))
            grown = np.zeros(0, np.intp)
            if k and ly.grad is not None:
                new, grown = grow_by_score(ly.grad, new, k, axis=ly.axis)
            # momentum is reset for the regrown (including those dropped and regrown in
            # this round, active before and after) and for the revived
            revived = np.flatnonzero((new & ~ly.mask).reshape(-1))
            out.append((new, np.union1d(grown, revived)))
        return out

    def state_dict(self):
        return {**super().state_dict(), "phi": self.phi, "h_gain": self.h_gain}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.phi = float(state["phi"])
        self.h_gain = float(state.get("h_gain", 1.0))
