"""Argument checking shared by the public functions: numbers, dtypes, RNGs.

The array side (layouts, ``out=``, host or GPU) is :mod:`lpcore._backend`;
the (groups, n) view is :class:`lpcore.layout.Groups`.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ._device import is_device


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
