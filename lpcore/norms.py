"""Lp norms and the radial projection onto the unit Lp sphere."""
from __future__ import annotations


import numpy as np

from . import kernels as K
from ._device import backend
from ._validate import (Groups, as_array, check_out, check_p, compute_dtype, finish,
                        first_bad, writable_target)


__all__ = ["norm", "normalize", "all_finite", "to_groups"]


def norm(x, p, axis=None, keepdims=False):
    """Lp norm of the groups of ``x``.

    Parameters
    ----------
    x : array_like
        Real data; integers and bools are promoted to float64.
    p : float
        ``p > 0`` or ``numpy.inf``.  ``0 < p < 1`` gives the quasi-norm
        ``(sum |x_i|^p)^(1/p)``.
    axis : None, int or tuple of ints
        The axes reduced (NumPy convention); ``None`` reduces everything.
    keepdims : bool
        Keep the reduced axes with length 1.

    Returns
    -------
    ndarray or scalar
        The norms, in x's floating dtype (float32 stays float32; the sums are
        accumulated in float64).

    Raises
    ------
    ValueError
        If ``p`` is out of range or NaN, or a group holds NaN or Inf (the
        message names the group).
    TypeError
        For complex, object or string data.

    Notes
    -----
    Every norm is max-scaled, ``||x||_p = M (sum (|x_i|/M)^p)^(1/p)`` with
    ``M = max |x_i|``, so it neither underflows (p = 15 with 1e-4 entries in
    float32) nor overflows (p = 40 with 1e30 entries).  Each group takes a max
    pass and a power-sum pass over data that is still in cache.

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> float(lpcore.norm(np.array([3.0, -4.0]), 2))
    5.0
    >>> lpcore.norm(np.array([[1.0, 1.0], [2.0, 0.0]]), 1, axis=1)
    array([2., 2.])
    """
    fn = "lpcore.norm"
    if backend(fn, x=x) == "cuda":
        from . import _gpu
        return _gpu.norm(x, p, axis, keepdims)
    p = check_p(p, fn, lo=0.0)
    x = as_array(x, fn, "x")
    comp, res = compute_dtype(x, fn=fn, names=("x",))
    grp = Groups(x.shape, axis, fn)
    x2 = grp.to2d(x, comp)
    r = K.group_norms(x2, p)
    bad = ~np.isfinite(r)
    if bad.any():
        i = first_bad(bad)
        raise ValueError(_bad_norm_message(fn, "x", grp, i, r[i], p, comp))
    with np.errstate(over="ignore"):
        rr = r.astype(res)
    if res != r.dtype and np.isinf(rr).any():
        i = first_bad(np.isinf(rr))
        raise ValueError(_bad_norm_message(fn, "x", grp, i, np.inf, p, res))
    r = grp.reduced_result(rr, keepdims)
    return r[()] if r.ndim == 0 else r


def normalize(x, p, axis=None, out=None, zero="raise"):
    """Radial projection onto the unit Lp sphere: ``x / ||x||_p`` per group.

    Parameters
    ----------
    x : array_like
        Real data.
    p : float
        ``p >= 1`` or ``numpy.inf``.
    axis : None, int or tuple of ints
        The axes of one group (reduced by the norm); ``None``: the whole array.
    out : ndarray, optional
        Where to write the result (x's shape); may be ``x`` itself.
    zero : {"raise", "keep"}
        An all-zero group has no direction: ``"raise"`` (default) raises
        ``ValueError`` naming the group, ``"keep"`` leaves it zero.

    Returns
    -------
    ndarray
        ``out`` if given, else a new array of x's floating dtype.

    Raises
    ------
    ValueError
        p out of range, NaN/Inf data, or a zero group with ``zero="raise"``.
        Nothing is written when it raises.

    Notes
    -----
    Two passes over the data: the (max-scaled) norms, checked, then the scaling.

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> lpcore.normalize(np.array([[3.0, 4.0], [0.0, 2.0]]), 2, axis=1)
    array([[0.6, 0.8],
           [0. , 1. ]])
    """
    fn = "lpcore.normalize"
    if backend(fn, x=x, out=out) == "cuda":
        from . import _gpu
        return _gpu.normalize(x, p, axis, out, zero)
    p = check_p(p, fn, lo=1.0, lo_open=False)
    if zero not in ("raise", "keep"):
        raise ValueError(f"{fn}: zero must be 'raise' or 'keep', got {zero!r}")
    x = as_array(x, fn, "x")
    comp, res = compute_dtype(x, fn=fn, names=("x",))
    if out is not None:
        check_out(out, x.shape, res, fn)
    grp = Groups(x.shape, axis, fn)
    return _normalize2d(grp.to2d(x, comp), grp, p, out, res, zero, fn, "x")


def _bad_norm_message(fn, name, grp, i, value, p, dtype):
    """The message for a non-finite norm: NaN from bad data, Inf from overflow."""
    if np.isnan(value):
        return f"{fn}: {name} contains NaN or Inf in group {grp.index(i)}"
    return (f"{fn}: the L{p:g} norm of {name} overflows {np.dtype(dtype).name} in group "
            f"{grp.index(i)} (the data are finite)")


def _normalize2d(x2, grp, p, out, res, zero, fn, name):
    nrm = K.group_norms(x2, p)
    bad = np.isnan(nrm)
    if bad.any():
        raise ValueError(f"{fn}: {name} contains NaN or Inf in group {grp.index(first_bad(bad))}")
    huge = np.isinf(nrm)
    if huge.any():
        # finite data whose norm overflows: the direction is still defined;
        # normalise the max-scaled rows instead (rare, NumPy)
        xs = np.ascontiguousarray(x2[huge])
        K.scale_rows(xs, K.group_max(xs), xs)
        x2 = x2.copy()
        x2[huge] = xs
        nrm[huge] = K.group_norms(xs, p)
    isz = nrm == 0.0
    if isz.any() and zero == "raise" and grp.n > 0:
        raise ValueError(f"{fn}: {name} is all zero in group {grp.index(first_bad(isz))}; "
                         "it has no direction (pass zero='keep' to leave such groups zero)")
    target = writable_target(out, grp, x2.dtype, (x2,))
    dst = target if target is not None else np.empty_like(x2)
    K.scale_rows(x2, nrm, dst)
    return finish(dst, grp, out, res, target)




def all_finite(x):
    """True iff ``x`` holds no NaN or Inf: one parallel integer-max pass.

    The check the optimizers use to validate a whole tensor before writing
    anything (about a memory-bandwidth read; ``numpy.isfinite(x).all()``
    allocates a boolean array and makes two passes).

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> lpcore.all_finite(np.array([1.0, -2.0])), lpcore.all_finite(np.array([1.0, np.nan]))
    (True, False)
    """
    if backend("lpcore.all_finite", x=x) == "cuda":
        from . import _gpu
        return _gpu.all_finite(x)
    x = as_array(x, "lpcore.all_finite", "x")
    comp, _ = compute_dtype(x, fn="lpcore.all_finite", names=("x",))
    if x.size == 0:
        return True
    flat = np.ascontiguousarray(x, dtype=comp).reshape(1, -1)
    return bool(np.isfinite(K.group_max(flat)[0]))


def to_groups(x, axis=None):
    """The C-contiguous ``(groups, n)`` layout lpcore's kernels and
    :class:`LpSGDState` arrays use: one row per index over the kept axes, the
    reduced axes flattened in order.  A view when ``axis`` is trailing and ``x``
    is C-contiguous, else a copy.

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> lpcore.to_groups(np.arange(6).reshape(2, 3), axis=0)
    array([[0, 3],
           [1, 4],
           [2, 5]])
    """
    x = np.asarray(x)
    grp = Groups(x.shape, axis, "lpcore.to_groups")
    return grp.to2d(x, x.dtype)
