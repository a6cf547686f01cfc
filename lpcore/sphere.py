"""Geometry of the unit Lp sphere: tangent projection, retraction, duality map."""
from __future__ import annotations

import numpy as np

from . import kernels as K
from ._device import backend
from ._validate import (Groups, as_array, check_out, check_p, compute_dtype, finish,
                        first_bad, index_of, writable_target)
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
    if backend(fn, w=w, g=g, out=out) == "cuda":
        from . import _gpu
        return _gpu.project_tangent(w, g, p, axis, out)
    p = check_p(p, fn, lo=1.0, allow_inf=False)
    w = as_array(w, fn, "w")
    g = as_array(g, fn, "g")
    if g.shape != w.shape:
        raise ValueError(f"{fn}: g has shape {g.shape}, expected w's shape {w.shape}")
    comp, res = compute_dtype(w, g, fn=fn, names=("w", "g"))
    if out is not None:
        check_out(out, w.shape, res, fn)
    grp = Groups(w.shape, axis, fn)
    w2 = grp.to2d(w, comp)
    g2 = grp.to2d(g, comp)
    if grp.n == 0 or grp.G == 0:
        return finish(g2.copy(), grp, out, res, None)
    mw = K.group_max(w2)
    bad = ~np.isfinite(mw)
    if bad.any():
        raise ValueError(f"{fn}: w contains NaN or Inf in group {grp.index(first_bad(bad))}")
    if (mw == 0).any():
        raise ValueError(f"{fn}: w is all zero in group {grp.index(first_bad(mw == 0))}; "
                         "the normal direction is undefined there")
    a, b = K.tangent_sums(w2, g2, mw, p)
    bad = ~np.isfinite(a)
    if bad.any():
        raise ValueError(f"{fn}: g contains NaN or Inf in group {grp.index(first_bad(bad))}")
    coef = a / b
    target = writable_target(out, grp, comp, (w2, g2))
    dst = target if target is not None else np.empty_like(g2)
    K.tangent_write(w2, g2, mw, coef, p, dst)
    return finish(dst, grp, out, res, target)


def retract(w, xi, p, axis=None, out=None):
    """Radial retraction ``R_w(xi) = (w + xi) / ||w + xi||_p`` per group.

    ``R_w(0) = w`` for ``w`` on the sphere.  ``p >= 1`` or ``inf``.

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
    if backend(fn, w=w, xi=xi, out=out) == "cuda":
        from . import _gpu
        return _gpu.retract(w, xi, p, axis, out)
    p = check_p(p, fn, lo=1.0, lo_open=False)
    w = as_array(w, fn, "w")
    xi = as_array(xi, fn, "xi")
    if xi.shape != w.shape:
        raise ValueError(f"{fn}: xi has shape {xi.shape}, expected w's shape {w.shape}")
    comp, res = compute_dtype(w, xi, fn=fn, names=("w", "xi"))
    if out is not None:
        check_out(out, w.shape, res, fn)
    grp = Groups(w.shape, axis, fn)
    with np.errstate(over="ignore", invalid="ignore"):  # reported below as Inf in w + xi
        y = grp.to2d(w, comp) + grp.to2d(xi, comp)
    return _normalize2d(y, grp, p, out, res, "raise", fn, "w + xi")


def _signed_power(x, e, out, fn, name):
    x = as_array(x, fn, name)
    comp, res = compute_dtype(x, fn=fn, names=(name,))
    if out is not None:
        check_out(out, x.shape, res, fn)
    flat = np.ascontiguousarray(x, dtype=comp).reshape(-1)
    r = np.empty_like(flat)
    if not K.signed_pow(flat, e, r):
        i = int(np.flatnonzero(~np.isfinite(flat))[0])
        raise ValueError(f"{fn}: {name} contains NaN or Inf (first at index {index_of(x, i)})")
    r = r.reshape(x.shape)
    if out is not None:
        np.copyto(out, r, casting="same_kind")
        return out
    return r if r.dtype == res else r.astype(res)


def to_dual(w, p, out=None):
    """Duality map ``D_p(w) = sign(w) |w|^(p-1)`` (elementwise), ``1 < p < inf``.

    Maps the unit Lp sphere onto the unit Lq sphere, ``q = p/(p-1)``;
    :func:`from_dual` is its inverse.

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
    if backend(fn, w=w, out=out) == "cuda":
        from . import _gpu
        return _gpu.to_dual(w, p, out)
    p = check_p(p, fn, lo=1.0, allow_inf=False)
    return _signed_power(w, p - 1.0, out, fn, "w")


def from_dual(v, p, out=None):
    """Inverse duality map ``D_q(v) = sign(v) |v|^(1/(p-1))``, ``1 < p < inf``.

    Note that ``p`` is the *primal* exponent: ``from_dual(to_dual(w, p), p) == w``.

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
    if backend(fn, v=v, out=out) == "cuda":
        from . import _gpu
        return _gpu.from_dual(v, p, out)
    p = check_p(p, fn, lo=1.0, allow_inf=False)
    return _signed_power(v, 1.0 / (p - 1.0), out, fn, "v")
