"""The ``(groups, n)`` layout: one row per output unit, the reduced axes flattened.

Kernels see C-contiguous 2-D arrays of shape ``(groups, n)`` in float32 or
float64.  :class:`Groups` maps an array's shape and a NumPy-style ``axis``
(the axes *reduced*) to that view and back: when the reduced axes are trailing
and the array is C-contiguous in the compute dtype, the view costs no copy.
:func:`to_groups` is that view for users (the layout of :class:`LpSGDState`
arrays), :func:`fan_in_axes` the axes of one unit's fan-in of a layer weight.
"""
from __future__ import annotations

import math

import numpy as np

from ._device import is_device

try:  # numpy >= 2
    from numpy.lib.array_utils import normalize_axis_tuple
except ImportError:  # pragma: no cover - numpy 1.26
    from numpy.core.numeric import normalize_axis_tuple

__all__ = ["to_groups", "group_positions", "fan_in_axes"]


_GROUPS = {}


def groups(shape, axis, fn):
    """``Groups(shape, axis, fn)``, shared between calls with the same
    arguments (a Groups is never modified; the optimizer's step builds one
    per tensor per step).  The key holds the type of ``axis`` and of its
    items, so ``True`` or ``1.0`` never reuse the grouping of ``1``; only
    plain ints and tuples of them are cached, and errors are raised afresh
    every time."""
    if not (axis is None or type(axis) is int
            or (type(axis) is tuple and all(type(a) is int for a in axis))):
        return Groups(shape, axis, fn)
    key = (tuple(shape), axis, fn)
    grp = _GROUPS.get(key)
    if grp is None:
        grp = Groups(shape, axis, fn)
        if len(_GROUPS) >= 1024:
            _GROUPS.clear()
        _GROUPS[key] = grp
    return grp


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
    grp = groups(x.shape, axis, "lpcore.to_groups")
    return grp.to2d(x, x.dtype)


def group_positions(shape, axis=None):
    """For each flat index of an array of ``shape``, its flat position in the
    ``(groups, n)`` layout of :func:`to_groups` (the map between a weight and
    its :class:`LpSGDState` arrays).

    Examples
    --------
    >>> import lpcore
    >>> lpcore.group_positions((2, 3), axis=0).tolist()
    [0, 2, 4, 1, 3, 5]
    """
    shape = tuple(int(s) for s in shape)
    idx = to_groups(np.arange(math.prod(shape)).reshape(shape), axis).reshape(-1)
    pos = np.empty_like(idx)
    pos[idx] = np.arange(idx.size)
    return pos


def feature_axes(ndim):
    """The reduced axes of "one group per output feature" when the caller
    gives none: all but the first, or the whole of a vector (one feature)."""
    return tuple(range(1, ndim)) if ndim > 1 else (0,)


def fan_in_axes(w):
    """The axes of one output unit's fan-in for a Linear/Conv weight: all but dim 0.

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> lpcore.fan_in_axes(np.zeros((8, 3, 5, 5)))
    (1, 2, 3)
    """
    return tuple(range(1, w.ndim if is_device(w) else np.ndim(w)))


def index_of(shape, flat):
    """The N-d index of flat (C-order) position ``flat`` in ``shape``, for messages."""
    return tuple(int(v) for v in np.unravel_index(flat, shape)) if len(shape) else ()
