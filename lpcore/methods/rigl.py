"""RigL (Evci et al. 2020): drop the smallest |w|, regrow where the dense
gradient is largest; the sparsity stays at the target."""
from __future__ import annotations

from ..masks import grow_by_score, inactive_magnitudes
from .set import SET


class RigL(SET):
    """SET's drop; regrowth by the largest ``|dense gradient|`` among the
    connections that were inactive before the drop (random while no
    gradient has been seen)."""

    name = "rigl"

    def regrow(self, ly, new, k):
        if ly.grad is None:
            return super().regrow(ly, new, k)
        return grow_by_score(inactive_magnitudes(ly.grad, ly.mask), new, k)
