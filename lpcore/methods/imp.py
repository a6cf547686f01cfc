"""IMP: iterative magnitude pruning with weight rewinding (Frankle and Carbin
2019; rewinding to an early iteration, Frankle et al. 2020), the lottery
baseline.

Training runs in rounds of ``frequency`` steps.  At the end of round ``r``
(``r = 1 .. R``, ``R = end // frequency``) the masks are cut, by global
magnitude over all sparse weights, to exactly
``round(s_r * total)`` zeros with ``s_r = 1 - (1 - target)^(r / R)`` (the
same fraction of the remaining weights each round), and every parameter is
rewound to its value at step ``rewind_step`` (the binding keeps that copy)
with the optimizer state cleared; a last round trains the ticket at the
target.  It costs ``R + 1`` trainings of one round each.
"""
from __future__ import annotations

import numbers

from ._base import Method


class IMP(Method):
    """Iterative magnitude pruning with rewinding.

    ``begin`` is the rewind step (the parameters are rewound to their values
    after that step; 0 rewinds to the first step's), ``frequency`` the round
    length in steps and ``end`` the last pruning step (a multiple of
    ``frequency``).
    """

    name = "imp"
    default_finalize = "none"
    device_ready = True

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        fn = "lpcore.methods.imp"
        if self.end % self.frequency:
            raise ValueError(f"{fn}: end={self.end} must be a multiple of the round length "
                             f"frequency={self.frequency}")
        if self.begin >= self.frequency:
            raise ValueError(f"{fn}: the rewind step begin={self.begin} must lie in the first "
                             f"round (< frequency={self.frequency})")
        self.rounds = self.end // self.frequency

    @classmethod
    def trainings(cls, rounds=1):
        return rounds + 1

    @classmethod
    def schedule(cls, steps, frequency=None, rounds=1):
        """Rounds of one training (``steps``) each, ``rounds`` prunes, the
        rewind 2% into the first round (``frequency`` does not apply)."""
        return min(int(0.02 * steps), steps - 1), rounds * steps, steps

    def start_sparsity(self):
        return 0.0

    @property
    def rewind_step(self):
        return self.begin

    def due(self, t):
        return isinstance(t, numbers.Integral) and 0 < t <= self.end and t % self.frequency == 0

    def rewinds(self, t):
        return self.due(t)

    def round_sparsity(self, r):
        """The sparsity after the ``r``-th prune (exactly the target at ``r = R``)."""
        if r >= self.rounds:
            return self.target
        return 1.0 - (1.0 - self.target) ** (r / self.rounds)

    def update(self, t, layers):
        # a global magnitude prune: the sparsity only rises, so nothing regrows
        return self.adjust(layers, self.round_sparsity(t // self.frequency))
