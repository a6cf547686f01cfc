"""Argument checking and the (groups, n) view shared by the public functions.

Kernels see C-contiguous 2-D arrays of shape ``(groups, n)`` in float32 or
float64.  :class:`Groups` maps an array and a NumPy-style ``axis`` (the axes
*reduced*) to that view and back: when the reduced axes are trailing and the
array is C-contiguous in the compute dtype, the view costs no copy.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ._device import is_device

try:  # numpy >= 2
    from numpy.lib.array_utils import normalize_axis_tuple
except ImportError:  # pragma: no cover - numpy 1.26
    from numpy.core.numeric import normalize_axis_tuple


def check_p(p, fn, *, lo, lo_open=True, allow_inf=True, name="p"):
    """Return ``p`` as a float after checking ``lo < p`` (or ``lo <= p``) and inf."""
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
        raise TypeError(f"{fn}: {name} must be a real number, got {type(p).__name__}")
    p = float(p)
    if math.isnan(p):
        raise ValueError(f"{fn}: {name} is NaN")
    if math.isinf(p):
        if p > 0 and allow_inf:
            return p
        raise ValueError(f"{fn}: {name}={p} is out of range ({_range_text(lo, lo_open, allow_inf, name)})")
    if p <= lo if lo_open else p < lo:
        raise ValueError(f"{fn}: {name}={p} is out of range ({_range_text(lo, lo_open, allow_inf, name)})")
    return p


def _range_text(lo, lo_open, allow_inf, name):
    lo = int(lo) if float(lo).is_integer() else lo
    if allow_inf:
        return f"{name} {'>' if lo_open else '>='} {lo} or {name} = inf"
    return f"{lo} {'<' if lo_open else '<='} {name} < inf"


def compute_dtype(*arrays, fn, names):
    """(compute dtype, result dtype) following DESIGN section 3."""
    for a, nm in zip(arrays, names):
        k = a.dtype.kind
        if k not in "fiub" or a.dtype.itemsize > 8:
            raise TypeError(f"{fn}: {nm} must be a real floating-point or integer array, "
                            f"got dtype {a.dtype}")
    res = np.result_type(*[a.dtype for a in arrays])
    if res.kind != "f":
        res = np.dtype(np.float64)
    comp = np.dtype(np.float64) if res == np.float64 else np.dtype(np.float32)
    return comp, res


class Groups:
    """The grouping of an array of ``shape`` induced by reducing ``axis``."""

    def __init__(self, shape, axis, fn):
        nd = len(shape)
        if axis is None:
            red = tuple(range(nd))
        elif isinstance(axis, (bool, np.bool_)) or (
                isinstance(axis, (tuple, list)) and any(isinstance(a, (bool, np.bool_))
                                                        for a in axis)):
            # True is an int to Python (axis 1): refused, as NumPy's reductions do
            raise TypeError(f"{fn}: axis must be None, an int or a tuple of ints, got {axis!r}")
        else:
            try:
                red = normalize_axis_tuple(axis, nd, argname="axis")
            except np.exceptions.AxisError as e:
                raise np.exceptions.AxisError(f"{fn}: {e}") from None
            except TypeError:
                raise TypeError(f"{fn}: axis must be None, an int or a tuple of ints, "
                                f"got {axis!r}") from None
        kept = tuple(i for i in range(nd) if i not in red)
        self.shape = tuple(shape)
        self.reduced = red
        self.kept = kept
        self.perm = kept + tuple(sorted(red))
        self.inv = tuple(np.argsort(self.perm))
        self.kept_shape = tuple(shape[i] for i in kept)
        self.G = math.prod(self.kept_shape)
        self.n = math.prod(shape[i] for i in red)

    def to2d(self, x, dtype):
        """C-contiguous (G, n) array of ``dtype`` with x's data (a view when possible)."""
        with np.errstate(over="ignore"):  # a cast that overflows is reported by the caller
            return np.ascontiguousarray(x.transpose(self.perm).reshape(self.G, self.n),
                                        dtype=dtype)

    def from2d(self, r):
        """Inverse of :meth:`to2d` (a view)."""
        t = r.reshape(tuple(self.shape[i] for i in self.perm))
        return t.transpose(self.inv)

    def view2d(self, out):
        """A (G, n) view of ``out`` the kernels can write into, or None."""
        t = out.transpose(self.perm)
        if not t.flags.c_contiguous:
            return None
        return t.reshape(self.G, self.n)

    def reduced_result(self, r, keepdims):
        """Shape a per-group result like NumPy's reductions."""
        r = r.reshape(self.kept_shape)
        if keepdims:
            r = r.reshape(tuple(1 if i in self.reduced else s for i, s in enumerate(self.shape)))
        return r

    def index(self, i):
        """The index over the kept axes of group ``i``, for messages."""
        if not self.kept:
            return "() (the whole array)"
        idx = np.unravel_index(int(i), self.kept_shape)
        return str(tuple(int(v) for v in idx))


def as_array(x, fn, name):
    """``x`` as a host ndarray; GPU arrays are refused (no silent host copies)."""
    if is_device(x):
        raise TypeError(f"{fn}: {name} is a GPU array; this function works on host (NumPy) "
                        "arrays only (copy it with .copy_to_host() or numpy.asarray on the "
                        "host side)")
    try:
        return np.asarray(x)
    except Exception as e:  # pragma: no cover - exotic inputs
        raise TypeError(f"{fn}: {name} could not be converted to an array: {e}") from None


def check_real(x, fn, name, lo=None, hi=None, lo_open=False, hi_open=False):
    """``x`` as a float after checking it is a finite real number (not a bool,
    not a string) within the given bounds; ``ValueError``/``TypeError`` name
    ``name`` otherwise."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise TypeError(f"{fn}: {name} must be a real number, got {type(x).__name__}")
    v = float(x)
    bad = not math.isfinite(v) or (lo is not None and (v <= lo if lo_open else v < lo)) or \
        (hi is not None and (v >= hi if hi_open else v > hi))
    if bad:
        rng = f"{'(' if lo_open else '['}{'-inf' if lo is None else lo}, " \
              f"{'inf' if hi is None else hi}{')' if hi_open or hi is None else ']'}"
        raise ValueError(f"{fn}: {name} must be a finite number in {rng}, got {x!r}")
    return v


def check_rng(rng, fn):
    """A ``numpy.random.Generator``: ``rng`` itself, or ``default_rng(rng)`` for
    None (fresh OS entropy) and integer seeds, as NumPy's own functions do."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (numbers.Integral, np.random.SeedSequence))
                       and not isinstance(rng, (bool, np.bool_))):
        try:
            return np.random.default_rng(rng)
        except ValueError as e:
            raise ValueError(f"{fn}: rng: {e}") from None
    raise TypeError(f"{fn}: rng must be a numpy.random.Generator, an integer seed or None, "
                    f"got {type(rng).__name__}")


def check_real_array(a, fn, name):
    """Refuse complex, object and string arrays (whose magnitude order is not a
    weight's)."""
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{fn}: {name} must be a real array, got dtype {a.dtype}")
    return a


def check_out(out, shape, res_dtype, fn):
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{fn}: out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"{fn}: out has shape {out.shape}, expected {tuple(shape)}")
    if not out.flags.writeable:
        raise ValueError(f"{fn}: out is read-only")
    if not np.can_cast(res_dtype, out.dtype, casting="same_kind"):
        raise TypeError(f"{fn}: cannot write a {res_dtype} result into out of dtype {out.dtype}")


def first_bad(flags):
    """Index of the first True in a boolean array."""
    return int(np.flatnonzero(flags)[0])


def same_memory(a, b):
    """True if a and b are the very same view (pointer, shape and strides)."""
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.shape == b.shape and a.strides == b.strides)


def writable_target(out, grp, comp, inputs2d):
    """Where the writing kernel should write: out's own (G, n) view when that is
    safe, else None (the caller writes into a fresh buffer and copies)."""
    if out is None or out.dtype != comp:
        return None
    v = grp.view2d(out)
    if v is None:
        return None
    for a in inputs2d:
        if np.may_share_memory(v, a) and not same_memory(v, a):
            return None
    return v


def finish(res2d, grp, out, res_dtype, target):
    """Deliver a (G, n) result: into ``out`` if given, else as a new array."""
    if out is not None:
        if target is None:
            np.copyto(out, grp.from2d(res2d), casting="same_kind")
        return out
    r = grp.from2d(res2d)
    return r if r.dtype == res_dtype else r.astype(res_dtype)


def index_of(x, flat):
    return tuple(int(v) for v in np.unravel_index(flat, x.shape)) if x.ndim else ()


