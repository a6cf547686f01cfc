"""SET (Mocanu et al. 2018): drop the smallest |w|, regrow at random; the
sparsity stays at the target."""
from __future__ import annotations

from ..masks import drop_smallest, grow_random, inactive_count
from ._base import Method


class SET(Method):
    """Each update drops ``round(h * active)`` of every layer's smallest
    ``|w|`` and regrows as many inactive connections, chosen at random
    (``h`` the drop fraction, cosine-annealed by default)."""

    name = "set"
    device_ready = True

    def update(self, t, layers):
        h = self.h(t)
        out = []
        for ly in layers:
            k = int(round(h * (ly.mask.size - inactive_count(ly.mask))))
            new, _ = drop_smallest(ly.weight, ly.mask, k)
            out.append(self.regrow(ly, new, k))
        return out

    def regrow(self, ly, new, k):
        """``(new_mask, grown)`` after regrowing ``k`` connections of ``new``."""
        return grow_random(new, k, self.rng)
