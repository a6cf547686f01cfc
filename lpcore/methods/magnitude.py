"""Gradual magnitude pruning (Zhu and Gupta 2017): from dense to the target
on the cubic schedule, dropping the smallest |w|, nothing regrows."""
from __future__ import annotations

import numpy as np

from ..masks import drop_smallest, inactive_count
from ..schedules import sparsity_schedule
from ._base import Method


class Magnitude(Method):
    """Each update drops, per layer, the smallest ``|w|`` until the layer
    has ``round(s_t * size)`` zeros, ``s_t`` the cubic schedule from 0."""

    name = "magnitude"
    device_ready = True

    def start_sparsity(self):
        return 0.0

    def update(self, t, layers):
        s_t = sparsity_schedule(t, 0.0, self.target, self.begin, self.end)
        out = []
        for ly in layers:
            k = max(0, int(round(s_t * ly.mask.size)) - inactive_count(ly.mask))
            new, _ = drop_smallest(ly.weight, ly.mask, k)
            out.append((new, np.zeros(0, np.intp)))  # nothing grows
        return out
