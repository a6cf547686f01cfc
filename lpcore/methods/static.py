"""A fixed random mask at the target sparsity (the sparse baseline that
learns no topology)."""
from __future__ import annotations

from ._base import Method


class Static(Method):
    """Random masks at the target, never changed."""

    name = "static"
    evolves = False
    #: no update; the exact adjustment (finalize="exact") is the base's, on any backend
    device_ready = True

    def update(self, t, layers):
        return [None for _ in layers]
