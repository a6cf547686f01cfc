"""Geometry of the unit Lp sphere: tangent projection, retraction, duality map."""
from __future__ import annotations

from ._backend import for_arrays
from ._validate import check_p, compute_dtype
from .layout import groups, index_of
from .norms import _normalize2d

__all__ = ["project_tangent", "retract", "to_dual", "from_dual"]


def project_tangent(w, g, p, axis=None, out=None):
    """Project ``g`` onto the tangent space of the Lp sphere at ``w``, per group.

    ``P_w(g) = g - (<nu, g> / <nu, nu>) nu`` with the normal direction
    ``nu = sign(w) |w|^(p-1)``.  The result is orthogonal to ``nu``,
    ``P_w(P_w g) = P_w g`` and ``||P_w g||_2 <= ||g||_2``.

    Parameters
    ----------
    w, g : array_like
        Same shape.  ``w`` need not lie exactly on the sphere (only its
        direction matters).
    p : float
        ``1 < p < inf``.
    axis : None, int or tuple of ints
        The axes of one group.
    out : ndarray, optional
        Result buffer; may be ``g`` (or ``w``).

    Raises
    ------
    ValueError
        p out of range, shape mismatch, NaN/Inf in ``w`` or ``g``, or a group
        of ``w`` that is all zero (no normal direction).  Nothing is written.

    Notes
    -----
    ``nu`` is computed relative to the group maximum of ``|w|`` (the ratio is
    scale-free), so it does not underflow for large p.  Three passes over
    ``w`` and two over ``g``.

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> w = np.array([1.0, 0.0]); g = np.array([3.0, 4.0])
    >>> lpcore.project_tangent(w, g, 2)
    array([0., 4.])
    """
    fn = "lpcore.project_tangent"
    B = for_arrays(fn, w=w, g=g, out=out)
    p = check_p(p, fn, lo=1.0, allow_inf=False)
    w, g, comp, res, out, grp = _pair(B, w, g, ("w", "g"), axis, out, fn)
    w2 = B.to2d(grp, w, comp)
    g2 = B.to2d(grp, g, comp)
    if grp.n == 0 or grp.G == 0:
        return B.finish(B.empty(g2.shape, comp), grp, out, res, None)
    K = B.kernels
    mw, bad, zi = K.group_max(w2)
    if bad < grp.G:
        raise ValueError(f"{fn}: w contains NaN or Inf in group {grp.index(bad)}")
    if zi < grp.G:
        raise ValueError(f"{fn}: w is all zero in group {grp.index(zi)}; "
                         "the normal direction is undefined there")
    coef, bad = K.tangent_coef(w2, g2, mw, p)
    if bad < grp.G:
        raise ValueError(f"{fn}: g contains NaN or Inf in group {grp.index(bad)}")
    tgt = B.target(grp, out, comp, (w2, g2))
    dst = tgt if tgt is not None else B.empty(g2.shape, comp)
    K.tangent_write(w2, g2, mw, coef, p, dst)
    return B.finish(dst, grp, out, res, tgt)


def retract(w, xi, p, axis=None, out=None):
    """Radial retraction ``R_w(xi) = (w + xi) / ||w + xi||_p`` per group.

    ``R_w(0) = w`` for ``w`` on the sphere.

    Parameters
    ----------
    w, xi : array_like
        Same shape: a point and a step (normally a tangent vector at ``w``).
    p : float
        ``p >= 1`` or ``numpy.inf``.
    axis : None, int or tuple of ints
        The axes of one group.
    out : ndarray, optional
        Result buffer; may be ``w`` or ``xi``.

    Raises
    ------
    ValueError
        p out of range, shape mismatch, NaN/Inf in ``w + xi`` or a group where
        ``w + xi`` is zero.  Nothing is written.

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> lpcore.retract(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 1)
    array([0.5, 0.5])
    """
    fn = "lpcore.retract"
    B = for_arrays(fn, w=w, xi=xi, out=out)
    p = check_p(p, fn, lo=1.0, lo_open=False)
    w, xi, comp, res, out, grp = _pair(B, w, xi, ("w", "xi"), axis, out, fn)
    y = B.kernels.add(B.to2d(grp, w, comp), B.to2d(grp, xi, comp), B.empty((grp.G, grp.n), comp))
    return _normalize2d(B, y, grp, p, out, res, "raise", fn, "w + xi")


def _pair(B, a, b, names, axis, out, fn):
    """The checks of a function of two same-shape arrays: both as arrays of
    the backend, shapes, dtypes, ``out``, the grouping."""
    a = B.as_array(a, fn, names[0])
    b = B.as_array(b, fn, names[1])
    if b.shape != a.shape:
        raise ValueError(f"{fn}: {names[1]} has shape {b.shape}, expected {names[0]}'s shape "
                         f"{a.shape}")
    comp, res = compute_dtype(a, b, fn=fn, names=names)
    if out is not None:
        out = B.check_out(out, a.shape, res, fn)
    return a, b, comp, res, out, groups(a.shape, axis, fn)


def _signed_power(B, x, e, out, fn, name):
    x = B.as_array(x, fn, name)
    comp, res = compute_dtype(x, fn=fn, names=(name,))
    if out is not None:
        out = B.check_out(out, x.shape, res, fn)
    grp = groups(x.shape, None, fn)
    x2 = B.to2d(grp, x, comp)
    r2 = B.empty(x2.shape, comp)
    if x.size:
        bad = B.kernels.signed_pow(B.flat(x2), e, B.flat(r2))
        if bad >= 0:
            raise ValueError(f"{fn}: {name} contains NaN or Inf (first at index "
                             f"{index_of(x.shape, bad)})")
    return B.finish(r2, grp, out, res, None)


def to_dual(w, p, out=None):
    """Duality map ``D_p(w) = sign(w) |w|^(p-1)`` (elementwise), ``1 < p < inf``.

    Maps the unit Lp sphere onto the unit Lq sphere, ``q = p/(p-1)``;
    :func:`from_dual` is its inverse.

    Parameters
    ----------
    w : array_like
        Real data (any shape; the map is elementwise).
    p : float
        ``1 < p < inf``.
    out : ndarray, optional
        Result buffer (w's shape); may be ``w``.

    Raises
    ------
    ValueError
        p out of range or NaN/Inf in ``w`` (the first offending index is named).

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> lpcore.to_dual(np.array([-0.25, 1.0]), 3)
    array([-0.0625,  1.    ])
    """
    fn = "lpcore.to_dual"
    B = for_arrays(fn, w=w, out=out)
    p = check_p(p, fn, lo=1.0, allow_inf=False)
    return _signed_power(B, w, p - 1.0, out, fn, "w")


def from_dual(v, p, out=None):
    """Inverse duality map ``D_q(v) = sign(v) |v|^(1/(p-1))``, ``1 < p < inf``.

    Note that ``p`` is the *primal* exponent: ``from_dual(to_dual(w, p), p) == w``.

    Parameters
    ----------
    v : array_like
        Real data (elementwise).
    p : float
        The primal exponent, ``1 < p < inf``.
    out : ndarray, optional
        Result buffer (v's shape); may be ``v``.

    Raises
    ------
    ValueError
        p out of range or NaN/Inf in ``v``.

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> lpcore.from_dual(np.array([-0.0625, 1.0]), 3)
    array([-0.25,  1.  ])
    """
    fn = "lpcore.from_dual"
    B = for_arrays(fn, v=v, out=out)
    p = check_p(p, fn, lo=1.0, allow_inf=False)
    return _signed_power(B, v, 1.0 / (p - 1.0), out, fn, "v")
