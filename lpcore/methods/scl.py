"""SCL, sparse connectivity learning (Tang et al. 2022, seed 002).

The effective weight is ``theta * u(m)``, ``u`` the unit step and ``m`` a
trainable real score per connection (the mask is ``m > 0``).  Every step of
the learning phase (steps ``0 .. end``) the scores move by

    m <- m - mask_lr * (N(dL/dw_eff * theta) + lam)

the identity straight-through estimator (``du/dm := 1``) with the score
gradient normalised per output feature to unit RMS (``N``:
:func:`lpcore.normalize_per_feature`), plus the count regulariser ``lam *
(active)/(all)``, whose straight-through gradient is the same for every score
(``lam`` is expressed in the normalised gradient's units).  Inactive
connections keep their ``theta`` and their score gradient, so they can come
back.  After ``end`` the masks are fixed.

``lam="auto"`` (the default): each step ``lam`` is the value that leaves
exactly ``round(s_t N)`` scores non-positive (:func:`lpcore.calibrate_lambda`),
``s_t`` the cubic sparsity schedule from 0 at ``begin`` to the target at
``end``: the regulariser's weight is the multiplier of the constraint "the
mask is on the schedule" (positive while the loss prunes too little,
negative where it would prune more), so the mask ends on the target and the
loss decides *which* connections go.  A number for ``lam`` fixes it: the
sparsity is then learned, not steered.  (A first version took the smallest
``lam >= 0``; a test on a synthetic loss caught it overshooting the target,
0.46 for 0.40, as the first large ``lam`` put every score near 0.)

Where this departs from the paper: its full text was not readable here, so
the normalisation (unit RMS per output feature), the score step (plain SGD
with ``mask_lr``), the initial scores (``1 +- 5%``, random) and the
calibration of ``lam`` are this library's choices.
"""
from __future__ import annotations

import numbers

from .._validate import check_real
from ..masklearn import calibrate_lambda, _score_step, positive, shifted
from ..schedules import sparsity_schedule
from ._base import LearnedMask


class SCL(LearnedMask):
    """Sparse connectivity learning; state: the scores and the last ``lam``."""

    name = "scl"
    default_mask_lr = 0.02

    def __init__(self, *args, lam=None, **kw):
        super().__init__(*args, **kw)
        fn = "lpcore.methods.scl"
        if lam is None or (isinstance(lam, str) and lam == "auto"):
            self.lam = "auto"
        elif isinstance(lam, numbers.Real) and not isinstance(lam, bool):
            self.lam = check_real(lam, fn, "lam", 0.0, float("inf"), hi_open=True)
        else:
            raise ValueError(f"{fn}: lam must be 'auto' or a number >= 0, got {lam!r}")
        self.lam_t = 0.0

    def start_sparsity(self):
        return 0.0

    def learning(self, t):
        return t <= self.end

    def due(self, t):
        return False

    def init_scores(self, shapes):
        return [1.0 + 0.05 * self.rng.uniform(-1.0, 1.0, size=s) for s in shapes]

    def gates(self):
        return self._views_of(positive(self._flat))

    def learn(self, t, layers):
        """One score step on the layers' backend (GPU layers: the scores stay
        on the device; the copies to the host are counts and the ``k``-th
        proposal)."""
        props = self._step_layers(layers, lambda s, o, ly: _score_step(
            s, ly.grad, ly.latent, self.mask_lr, ly.axis, o, True))  # o: a fresh buffer
        if self.lam == "auto":
            s_t = sparsity_schedule(t, 0.0, self.target, self.begin, self.end)
            k = int(round(s_t * props.size))
            self.lam_t = calibrate_lambda(props, self.mask_lr, k)
        else:
            self.lam_t = self.lam
        self._set_scores(shifted(props, self.mask_lr * self.lam_t), [s.shape for s in self.scores])
        return self.gates()

    def state_dict(self):
        return {**super().state_dict(), "lam_t": self.lam_t}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.lam_t = float(state.get("lam_t", 0.0))
