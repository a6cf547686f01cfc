"""Lp norms and the radial projection onto the unit Lp sphere."""
from __future__ import annotations

import numpy as np

from ._backend import for_arrays
from ._validate import check_p, compute_dtype
from .layout import groups, to_groups

__all__ = ["norm", "normalize", "all_finite", "to_groups"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: all_finite's size up to which numpy.isfinite beats the kernel's call on the
#: host (measured on 2 cores, float32: 0.8 us vs 14 us at 64 elements, 24 us vs
#: 41 us at 2**18, 196 us vs 119 us at 2**20)
_SMALL_FINITE = 1 << 18


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
    B = for_arrays(fn, x=x)
    p = check_p(p, fn, lo=0.0)
    x = B.as_array(x, fn, "x")
    comp, res = compute_dtype(x, fn=fn, names=("x",))
    grp = groups(x.shape, axis, fn)
    r, bad, _ = B.kernels.group_norms(B.to2d(grp, x, comp), p, res)
    if bad < grp.G:
        raise ValueError(_bad_norm_message(fn, "x", grp, bad, B.value(r, bad), p, res))
    return B.reduced(grp, r, keepdims)


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
    B = for_arrays(fn, x=x, out=out)
    p = check_p(p, fn, lo=1.0, lo_open=False)
    if zero not in ("raise", "keep"):
        raise ValueError(f"{fn}: zero must be 'raise' or 'keep', got {zero!r}")
    x = B.as_array(x, fn, "x")
    comp, res = compute_dtype(x, fn=fn, names=("x",))
    if out is not None:
        out = B.check_out(out, x.shape, res, fn)
    grp = groups(x.shape, axis, fn)
    return _normalize2d(B, B.to2d(grp, x, comp), grp, p, out, res, zero, fn, "x")


def _bad_norm_message(fn, name, grp, i, value, p, dtype):
    """The message for a non-finite norm: NaN from bad data, Inf from overflow."""
    if np.isnan(value):
        return f"{fn}: {name} contains NaN or Inf in group {grp.index(i)}"
    return (f"{fn}: the L{p:g} norm of {name} overflows {np.dtype(dtype).name} in group "
            f"{grp.index(i)} (the data are finite)")


def _normalize2d(B, x2, grp, p, out, res, zero, fn, name):
    K = B.kernels
    nrm, bad, zi = K.group_norms(x2, p)
    if bad < grp.G and np.isinf(B.value(nrm, bad)):
        # finite data whose norm overflows float64: the direction is still
        # defined; normalise the max-scaled rows instead (rare; bad data stays bad)
        x2 = K.scale_rows(x2, K.group_max(x2)[0], B.empty(x2.shape, x2.dtype))
        nrm, bad, zi = K.group_norms(x2, p)
    if bad < grp.G:
        raise ValueError(f"{fn}: {name} contains NaN or Inf in group {grp.index(bad)}")
    if zi < grp.G and zero == "raise" and grp.n > 0:
        raise ValueError(f"{fn}: {name} is all zero in group {grp.index(zi)}; "
                         "it has no direction (pass zero='keep' to leave such groups zero)")
    tgt = B.target(grp, out, x2.dtype, (x2,))
    dst = tgt if tgt is not None else B.empty(x2.shape, x2.dtype)
    K.scale_rows(x2, nrm, dst)
    return B.finish(dst, grp, out, res, tgt)


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
    fn = "lpcore.all_finite"
    if type(x) is np.ndarray and x.dtype in _FLOAT_DTYPES and x.size <= _SMALL_FINITE:
        # a small host array: NumPy's two passes cost less than the kernel's call
        return bool(np.isfinite(x).all())
    B = for_arrays(fn, x=x)
    x = B.as_array(x, fn, "x")
    comp, _ = compute_dtype(x, fn=fn, names=("x",))
    if x.size == 0:
        return True
    _, bad, _ = B.kernels.group_max(B.to2d(groups(x.shape, None, fn), x, comp))
    return bad >= 1
