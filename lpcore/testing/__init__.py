"""Testing helpers shipped with lpcore: hypothesis strategies and assertions.

``lpcore.testing.strategies`` needs the ``hypothesis`` package (the ``test``
extra); the assertion helpers need only NumPy.
"""
from .asserts import (TOL, assert_allclose_dtype, assert_on_sphere, assert_unchanged,
                      tol_for)

__all__ = ["TOL", "tol_for", "assert_allclose_dtype", "assert_on_sphere", "assert_unchanged"]
