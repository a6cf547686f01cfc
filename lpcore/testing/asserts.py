"""Assertion helpers with per-dtype tolerances."""
from __future__ import annotations

import numpy as np

#: Relative tolerances per compute dtype for results of a few passes of
#: arithmetic (float32 kernels use a polynomial power with ~1e-7 * p error).
TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def tol_for(dtype):
    """The relative tolerance for ``dtype`` (float16 is computed in float32)."""
    dt = np.dtype(dtype)
    return TOL[np.dtype(np.float64)] if dt == np.float64 else TOL[np.dtype(np.float32)]


def assert_allclose_dtype(actual, desired, dtype=None, scale=1.0, factor=1.0, err_msg=""):
    """``|actual - desired| <= factor * tol(dtype) * (|desired| + scale)`` elementwise,
    with an absolute floor of a few subnormal spacings of ``dtype`` (a subnormal
    result cannot be more accurate than that)."""
    dt = np.dtype(dtype if dtype is not None else np.asarray(actual).dtype)
    actual = np.asarray(actual, dtype=np.float64)
    desired = np.asarray(desired, dtype=np.float64)
    tol = factor * tol_for(dt)
    floor = 4 * float(np.finfo(dt if dt.kind == "f" else np.float64).smallest_subnormal)
    np.testing.assert_allclose(actual, desired, rtol=tol, atol=max(tol * scale, floor),
                               err_msg=err_msg)


def assert_on_sphere(x, p, axis=None, factor=1.0):
    """Every group of ``x`` has Lp norm 1 (computed in float64 by NumPy)."""
    x = np.asarray(x)
    x64 = np.abs(x.astype(np.float64))
    if np.isinf(p):
        n = x64.max(axis=axis)
    else:
        m = x64.max(axis=axis, keepdims=True)
        n = np.squeeze(m, axis=axis) * (np.sum((x64 / m) ** p, axis=axis)) ** (1.0 / p)
    assert_allclose_dtype(n, np.ones_like(n), dtype=x.dtype, factor=factor,
                          err_msg=f"not on the unit L{p} sphere")


def assert_unchanged(before, after):
    """Bitwise equality (NaNs compare equal), for 'the call left my array alone'."""
    np.testing.assert_array_equal(np.asarray(after), np.asarray(before), strict=True)
