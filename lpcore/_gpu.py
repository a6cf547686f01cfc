"""The public functions on GPU arrays: validation as on the host, CUDA kernels.

Each function here is reached from its public twin (``lpcore.norm`` and so
on) when the arguments are device arrays (see :mod:`lpcore._device`); the
argument checks, dtype rules, grouping and error messages are the host
ones.  Results are numba device arrays on the same GPU (views where the
host versions return views); data never goes to the host.  Only two integers
per reduction come back (the first offending group, found on the device), so
that errors are raised, with nothing written, before any writing kernel runs.
"""
from __future__ import annotations

import numpy as np

from . import _device as D
from ._validate import Groups, check_p, compute_dtype
from .kernels import cuda as K
from .kernels.reduce import norm_kind


# --------------------------------------------------------------------------
# layout helpers: the (G, n) view of a device array and back
def _permuted(grp, a):
    return (tuple(a.shape[i] for i in grp.perm), tuple(a.strides[i] for i in grp.perm))


def to2d(grp, a, dtype):
    """C-contiguous (G, n) device array of ``dtype`` with a's data (a view when possible)."""
    dtype = np.dtype(dtype)
    if a.size == 0:
        return D.empty((grp.G, grp.n), dtype)
    ps, pst = _permuted(grp, a)
    it = a.dtype.itemsize
    if a.dtype == dtype and D.is_c_layout(ps, pst, it):
        return D.view(a, (grp.G, grp.n), (grp.n * it, it))
    dst = D.empty((grp.G, grp.n), dtype)
    K.gather(D.flat(a), ps, tuple(s // it for s in pst), dst)
    return dst


def view2d(grp, out, dtype):
    """out's own (G, n) view if it is C-contiguous in ``dtype``, else None."""
    if out.dtype != dtype or out.size == 0:
        return None
    ps, pst = _permuted(grp, out)
    it = out.dtype.itemsize
    if not D.is_c_layout(ps, pst, it):
        return None
    return D.view(out, (grp.G, grp.n), (grp.n * it, it))


def write(grp, src2d, out):
    """Copy a (G, n) result into ``out`` (any strides; same_kind cast)."""
    if out.size:
        ps, pst = _permuted(grp, out)
        K.scatter(src2d, D.flat(out), ps, tuple(s // out.dtype.itemsize for s in pst))
    return out


def from2d(grp, r, dtype):
    """A (G, n) result as an array of the original shape: a view of ``r`` in the
    permuted layout (as on the host), or a fresh array when a cast is needed."""
    dtype = np.dtype(dtype)
    if r.dtype != dtype or r.size == 0:
        return write(grp, r, D.empty(grp.shape, dtype))
    st = D.c_strides(tuple(grp.shape[i] for i in grp.perm), r.dtype.itemsize)
    strides = [0] * len(grp.shape)
    for k, ax in enumerate(grp.perm):
        strides[ax] = st[k]
    return D.view(r, grp.shape, strides)


def target(grp, out, dtype, inputs2d):
    """Where a writing kernel may write directly: out's (G, n) view, unless it
    overlaps an input other than as the very same view."""
    if out is None:
        return None
    v = view2d(grp, out, dtype)
    if v is None:
        return None
    for a in inputs2d:
        if a.size and D.overlaps(v, a) and not D.same_view(v, a):
            return None
    return v


def finish(dst, grp, out, res, tgt):
    if out is not None:
        if tgt is None:
            write(grp, dst, out)
        return out
    return from2d(grp, dst, res)


def check_out(out, shape, res_dtype, fn):
    out = D.as_device(out, fn, "out")
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{fn}: out has shape {tuple(out.shape)}, expected {tuple(shape)}")
    if not np.can_cast(res_dtype, out.dtype, casting="same_kind"):
        raise TypeError(f"{fn}: cannot write a {res_dtype} result into out of dtype {out.dtype}")
    return out


def reduced(grp, r, keepdims):
    shape = grp.kept_shape
    if keepdims:
        shape = tuple(1 if i in grp.reduced else s for i, s in enumerate(grp.shape))
    return r.reshape(shape)


def _raise_bad(fn, name, grp, i):
    raise ValueError(f"{fn}: {name} contains NaN or Inf in group {grp.index(i)}")


# --------------------------------------------------------------------------
def norm(x, p, axis=None, keepdims=False):
    fn = "lpcore.norm"
    p = check_p(p, fn, lo=0.0)
    x = D.as_device(x, fn, "x")
    comp, res = compute_dtype(x, fn=fn, names=("x",))
    grp = Groups(x.shape, axis, fn)
    r, bad, _ = K.group_norms(to2d(grp, x, comp), p, out_dtype=res)
    if bad < grp.G:
        if _overflowed(r, bad):
            raise ValueError(f"{fn}: the L{p:g} norm of x overflows {np.dtype(res).name} in "
                             f"group {grp.index(bad)} (the data are finite)")
        _raise_bad(fn, "x", grp, bad)
    return reduced(grp, r, keepdims)


def _overflowed(nrm, i):
    """Whether flagged group i's norm is Inf (an overflow) rather than NaN (bad
    data): one value copied to the host, on the error path only."""
    return bool(np.isinf(nrm[i:i + 1].copy_to_host()[0]))


def normalize(x, p, axis=None, out=None, zero="raise"):
    fn = "lpcore.normalize"
    p = check_p(p, fn, lo=1.0, lo_open=False)
    if zero not in ("raise", "keep"):
        raise ValueError(f"{fn}: zero must be 'raise' or 'keep', got {zero!r}")
    x = D.as_device(x, fn, "x")
    comp, res = compute_dtype(x, fn=fn, names=("x",))
    if out is not None:
        out = check_out(out, x.shape, res, fn)
    grp = Groups(x.shape, axis, fn)
    return normalize2d(to2d(grp, x, comp), grp, p, out, res, zero, fn, "x")


def normalize2d(x2, grp, p, out, res, zero, fn, name):
    nrm, bad, zi = K.group_norms(x2, p, internal=True)
    if bad < grp.G and _overflowed(nrm, bad):
        # finite data whose norm overflows: the direction is still defined;
        # normalise the max-scaled rows instead (rare; bad data stays bad)
        x2 = K.scale_rows(x2, K.group_max(x2)[0], D.empty(x2.shape, x2.dtype))
        nrm, bad, zi = K.group_norms(x2, p, internal=True)
    if bad < grp.G:
        _raise_bad(fn, name, grp, bad)
    if zi < grp.G and zero == "raise" and grp.n > 0:
        raise ValueError(f"{fn}: {name} is all zero in group {grp.index(zi)}; "
                         "it has no direction (pass zero='keep' to leave such groups zero)")
    tgt = target(grp, out, x2.dtype, (x2,))
    dst = tgt if tgt is not None else D.empty(x2.shape, x2.dtype)
    K.scale_rows(x2, nrm, dst)
    return finish(dst, grp, out, res, tgt)


def all_finite(x):
    x = D.as_device(x, "lpcore.all_finite", "x")
    comp, _ = compute_dtype(x, fn="lpcore.all_finite", names=("x",))
    if x.size == 0:
        return True
    grp = Groups(x.shape, None, "lpcore.all_finite")
    _, bad, _ = K.group_max(to2d(grp, x, comp))
    return bad >= 1


def project_tangent(w, g, p, axis=None, out=None):
    fn = "lpcore.project_tangent"
    p = check_p(p, fn, lo=1.0, allow_inf=False)
    w = D.as_device(w, fn, "w")
    g = D.as_device(g, fn, "g")
    if g.shape != w.shape:
        raise ValueError(f"{fn}: g has shape {g.shape}, expected w's shape {w.shape}")
    comp, res = compute_dtype(w, g, fn=fn, names=("w", "g"))
    if out is not None:
        out = check_out(out, w.shape, res, fn)
    grp = Groups(w.shape, axis, fn)
    w2 = to2d(grp, w, comp)
    g2 = to2d(grp, g, comp)
    if grp.n == 0 or grp.G == 0:
        return finish(g2, grp, out, res, None)
    mw, bad, zi = K.group_max(w2)
    if bad < grp.G:
        _raise_bad(fn, "w", grp, bad)
    if zi < grp.G:
        raise ValueError(f"{fn}: w is all zero in group {grp.index(zi)}; "
                         "the normal direction is undefined there")
    coef, bad = K.tangent_coef(w2, g2, mw, p)
    if bad < grp.G:
        _raise_bad(fn, "g", grp, bad)
    tgt = target(grp, out, comp, (w2, g2))
    dst = tgt if tgt is not None else D.empty(g2.shape, comp)
    K.tangent_write(w2, g2, mw, coef, p, dst)
    return finish(dst, grp, out, res, tgt)


def retract(w, xi, p, axis=None, out=None):
    fn = "lpcore.retract"
    p = check_p(p, fn, lo=1.0, lo_open=False)
    w = D.as_device(w, fn, "w")
    xi = D.as_device(xi, fn, "xi")
    if xi.shape != w.shape:
        raise ValueError(f"{fn}: xi has shape {xi.shape}, expected w's shape {w.shape}")
    comp, res = compute_dtype(w, xi, fn=fn, names=("w", "xi"))
    if out is not None:
        out = check_out(out, w.shape, res, fn)
    grp = Groups(w.shape, axis, fn)
    y = K.add(to2d(grp, w, comp), to2d(grp, xi, comp), D.empty((grp.G, grp.n), comp))
    return normalize2d(y, grp, p, out, res, "raise", fn, "w + xi")


def signed_power(x, e, out, fn, name):
    x = D.as_device(x, fn, name)
    comp, res = compute_dtype(x, fn=fn, names=(name,))
    if out is not None:
        out = check_out(out, x.shape, res, fn)
    grp = Groups(x.shape, None, fn)
    x2 = to2d(grp, x, comp)
    r2 = D.empty(x2.shape, comp)
    it = np.dtype(comp).itemsize
    if x.size:
        bad = K.signed_pow(D.view(x2, (x.size,), (it,)), e, D.view(r2, (x.size,), (it,)))
        if bad >= 0:
            idx = tuple(int(v) for v in np.unravel_index(bad, x.shape)) if x.ndim else ()
            raise ValueError(f"{fn}: {name} contains NaN or Inf (first at index {idx})")
    return finish(r2, grp, out, res, None)


def to_dual(w, p, out=None):
    fn = "lpcore.to_dual"
    p = check_p(p, fn, lo=1.0, allow_inf=False)
    return signed_power(w, p - 1.0, out, fn, "w")


def from_dual(v, p, out=None):
    fn = "lpcore.from_dual"
    p = check_p(p, fn, lo=1.0, allow_inf=False)
    return signed_power(v, 1.0 / (p - 1.0), out, fn, "v")


def hoyer(x, axis=None, keepdims=False):
    fn = "lpcore.hoyer"
    x = D.as_device(x, fn, "x")
    comp, res = compute_dtype(x, fn=fn, names=("x",))
    grp = Groups(x.shape, axis, fn)
    if grp.n < 2:
        raise ValueError(f"{fn}: groups have length {grp.n}; Hoyer sparsity needs at least "
                         "2 entries per group")
    h, bad = K.hoyer_sums(to2d(grp, x, comp), res)
    if bad < grp.G:
        _raise_bad(fn, "x", grp, bad)
    return reduced(grp, h, keepdims)


def project_ball(y, p, radius=1.0, axis=None, out=None):
    fn = "lpcore.project_ball"
    p = check_p(p, fn, lo=1.0, lo_open=False)
    radius = check_p(radius, fn, lo=0.0, lo_open=False, allow_inf=False, name="radius")
    y = D.as_device(y, fn, "y")
    comp, res = compute_dtype(y, fn=fn, names=("y",))
    if out is not None:
        out = check_out(out, y.shape, res, fn)
    grp = Groups(y.shape, axis, fn)
    y2 = to2d(grp, y, comp)
    m, bad, _ = K.group_max(y2)
    if bad < grp.G:
        _raise_bad(fn, "y", grp, bad)
    tgt = target(grp, out, comp, (y2,))
    dst = tgt if tgt is not None else D.empty(y2.shape, comp)
    if radius == 0.0:
        K.fill(dst, 0.0)
    else:
        K.project_ball_rows(y2, m, norm_kind(p), p, radius, dst)
    return finish(dst, grp, out, res, tgt)
