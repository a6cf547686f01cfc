"""Hypothesis strategies for lpcore's inputs.

Examples
--------
>>> from hypothesis import given
>>> from lpcore.testing import strategies as lst
>>> @given(lst.grouped_arrays())
... def test_something(xa):
...     x, axis = xa
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

FLOAT_DTYPES = (np.float32, np.float64)

#: Overall magnitudes that stress scaling: q = 15 underflow, p = 40 overflow.
AWKWARD_SCALES = (1e-30, 1e-4, 1.0, 1e4, 1e30)


def p_values(min_p=1.05, max_p=40.0, include_two=True, include_one=False, include_inf=False):
    """Exponents biased to the interesting places: near 1, moderate, large."""
    opts = [st.floats(min_value=max(min_p, 1.0 + 1e-9), max_value=min(max_p, 1.3)),
            st.floats(min_value=max(min_p, 1.3), max_value=min(max_p, 3.0)),
            st.floats(min_value=max(min_p, 3.0), max_value=max_p)]
    fixed = []
    if include_two and min_p <= 2 <= max_p:
        fixed.append(2.0)
    if include_one:
        fixed.append(1.0)
    if include_inf:
        fixed.append(np.inf)
    valid = [o for o, lo, hi in zip(opts, (min_p, 1.3, 3.0), (1.3, 3.0, max_p))
             if max(min_p, lo) < min(max_p, hi)]
    if fixed:
        valid.append(st.sampled_from(fixed))
    return st.one_of(*valid)


def dtypes():
    return st.sampled_from(FLOAT_DTYPES)


@st.composite
def float_arrays(draw, dtype=None, shape=None, min_dims=1, max_dims=3, min_side=1, max_side=7,
                 scales=AWKWARD_SCALES, nonzero=False):
    """Finite real arrays of float32/float64 with an awkward overall magnitude.

    Entries are drawn in [-1, 1] (with exact zeros and repeated values
    likely), then multiplied by one of ``scales``.
    """
    dt = np.dtype(draw(dtypes()) if dtype is None else dtype)
    if shape is None:
        shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims,
                                      min_side=min_side, max_side=max_side))
    elems = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False, width=32)
    base = draw(hnp.arrays(np.float64, shape, elements=elems))
    if nonzero:
        flat = base.reshape(-1)
        if flat.size:
            flat[np.abs(flat) < 1e-3] = 0.5
    scale = draw(st.sampled_from(scales))
    return (base * scale).astype(dt)


@st.composite
def axes_for(draw, ndim):
    """None, an int, or a tuple of distinct (possibly negative) axes of ``ndim`` dims."""
    if ndim == 0:
        return None
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return None
    if kind == "int":
        a = draw(st.integers(0, ndim - 1))
        return a - ndim if draw(st.booleans()) else a
    sub = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(sub)


@st.composite
def grouped_arrays(draw, dtype=None, nonzero=False, min_group=1, **kw):
    """``(x, axis)`` with awkward layouts: sometimes a transposed or strided view."""
    x = draw(float_arrays(dtype=dtype, nonzero=nonzero, **kw))
    layout = draw(st.sampled_from(["C", "F", "strided"]))
    if layout == "F":
        x = np.asfortranarray(x)
    elif layout == "strided" and x.ndim:
        x = np.repeat(x, 2, axis=-1)[..., ::2]
    axis = draw(axes_for(x.ndim))
    red = range(x.ndim) if axis is None else ((axis,) if isinstance(axis, int) else axis)
    n = int(np.prod([x.shape[a] for a in red])) if x.ndim else 1
    if n < min_group:
        axis = None
    return x, axis


@st.composite
def sphere_points(draw, p, dtype=None, groups=(1, 5), n=(2, 9)):
    """A (G, n) array whose rows lie on the unit Lp sphere (computed in float64)."""
    dt = np.dtype(draw(dtypes()) if dtype is None else dtype)
    G = draw(st.integers(*groups))
    m = draw(st.integers(*n))
    x = draw(float_arrays(dtype=np.float64, shape=(G, m), scales=(1.0,), nonzero=True))
    a = np.abs(x)
    nrm = a.max(axis=1, keepdims=True) * (np.sum((a / a.max(axis=1, keepdims=True)) ** p,
                                                 axis=1, keepdims=True)) ** (1 / p)
    return (x / nrm).astype(dt)
