"""Mask operations for sparse training (DESIGN section 5): which connections
to drop and grow, random masks, exact sparsity.  Masks are boolean arrays of
the weight's shape (True = active).

* :func:`drop_by_threshold` - per group, drop active connections with
  ``|w| < h * mean(active |w|)`` (semi-pruning, the paper's LpSS).
* :func:`grow_by_score` - activate the ``k`` inactive connections with the
  largest per-group-normalised score magnitude (the reference ranked by the
  *signed* gradient, a bug this library does not copy).
* :func:`drop_smallest` - drop the ``k`` active connections with the smallest
  ``|w|`` (SET, gradual magnitude pruning).
* :func:`grow_random` - activate ``k`` random inactive connections (SET).
* :func:`random_mask` - a mask with an exact number of zeros.
* :func:`mask_sparsity` - the exact zero fraction over several masks.
* :func:`adjust_to_sparsity` - one global drop or grow over several masks
  to an exact zero count.

Helpers for the methods, on the masks' own backend (a GPU mask never
leaves the device; a count does): :func:`inactive_count`,
:func:`activated` and :func:`inactive_magnitudes`.
"""
from __future__ import annotations

import math

import numpy as np

from ._backend import HOST, for_arrays
from ._validate import (check_p, check_real, check_real_array, check_rng,
                        compute_dtype)
from .layout import groups
from .norms import all_finite

__all__ = ["drop_by_threshold", "grow_by_score", "drop_smallest", "grow_random", "random_mask", "mask_sparsity", "adjust_to_sparsity"]


def _mask_like(mask, shape, fn, name="mask", B=HOST):
    m = B.as_array(mask, fn, name)
    if m.dtype != np.bool_:
        raise TypeError(f"{fn}: {name} must be a boolean array, got dtype {m.dtype}")
    if m.shape != tuple(shape):
        raise ValueError(f"{fn}: {name} has shape {m.shape}, expected {tuple(shape)}")
    return m


def _flat(B, m, fn, dtype=np.bool_):
    """Array ``m`` of backend ``B`` as its C-ordered 1-D array of ``dtype`` (a
    view when it is contiguous in it)."""
    return B.flat(B.to2d(groups(m.shape, None, fn), m, dtype))


def _key_dtype(a):
    """The float dtype a real array is ranked in (its own, or float64)."""
    return a.dtype if a.dtype in (np.float32, np.float64) else np.dtype(np.float64)


def inactive_count(mask):
    """The number of inactive (False) entries of a boolean mask, counted on
    the mask's backend (a GPU mask copies one integer to the host).

    >>> import numpy as np
    >>> from lpcore.masks import inactive_count
    >>> inactive_count(np.array([[True, False], [False, False]]))
    3
    """
    fn = "lpcore.masks.inactive_count"
    B = for_arrays(fn, mask=mask)
    m = B.as_array(mask, fn, "mask")
    _mask_like(m, m.shape, fn, B=B)
    return B.kernels.inactive_count(_flat(B, m, fn))


def activated(new, *before):
    """The flat positions (C order, increasing) of the connections active in
    the boolean mask ``new`` and inactive in at least one of the one or two
    ``before`` masks (of ``new``'s shape and backend): e.g. the connections
    whose optimizer state a topology update resets.  On GPU masks the result
    is an int64 device array, and the one copy to the host is its length.

    >>> import numpy as np
    >>> from lpcore.masks import activated
    >>> old = np.array([True, True, False, False])
    >>> activated(np.array([True, False, True, False]), old).tolist()
    [2]
    """
    fn = "lpcore.masks.activated"
    if len(before) not in (1, 2):
        raise TypeError(f"{fn}: takes one or two earlier masks, got {len(before)}")
    B = for_arrays(fn, new=new, **{f"before[{i}]": b for i, b in enumerate(before)})
    m = B.as_array(new, fn, "new")
    _mask_like(m, m.shape, fn, B=B)
    flats = [_flat(B, _mask_like(b, m.shape, fn, f"before[{i}]", B=B), fn)
             for i, b in enumerate(before)]
    return B.kernels.activated(_flat(B, m, fn), flats[0], flats[-1])


def _count(k, fn):
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"{fn}: k must be an integer >= 0, got {k!r}")
    return int(k)


def drop_by_threshold(w, mask, h, axis=None, revive=False):
    """Semi-pruning's drop rule, per group.

    ``tau_i = h * mean_{j active} |w_ij|``; active connections with
    ``|w_ij| < tau_i`` are dropped.  With ``revive=True`` (the reference's
    semantics, DESIGN section 5) the new mask is computed over *all*
    connections from their latent magnitudes, ``m_ij <- |w_ij| >= tau_i``:
    inactive connections whose latent value rose to ``tau_i`` come back.
    Groups with no active connection are left alone.

    Parameters
    ----------
    w : array_like
        The weights: latent values for every connection with ``revive``
        (e.g. ``from_dual`` of LpSGD's dual state), otherwise latent or
        effective (only active entries are read).
    mask : ndarray of bool
        Current mask, w's shape.
    h : float
        Relative threshold, ``h >= 0`` (0 drops nothing).
    axis : None, int or tuple of ints
        The axes of one group (one output unit's fan-in).
    revive : bool
        Let inactive connections above the threshold come back.

    Returns
    -------
    new_mask : ndarray of bool
        On GPU arrays (``w`` and ``mask`` numba device arrays, CUDA tensors
        through DLPack or ``__cuda_array_interface__``) a device array: the
        decision runs on the device and copies two integers to the host (the
        count and the first bad group), never a mask.  Its threshold sums
        the group in another order than the CPU, so an entry within rounding
        of ``tau_i`` may fall the other way.
    n_dropped : int
        Connections switched off (those revived are ``new_mask.sum() -
        mask.sum() + n_dropped``).

    Raises
    ------
    ValueError
        Bad ``h``, shape mismatch, NaN/Inf among the weights that take part
        (names the group).

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> w = np.array([[1.0, 0.1, 2.0, 0.5]]); m = np.ones((1, 4), bool)
    >>> lpcore.drop_by_threshold(w, m, 0.5, axis=1)   # tau = 0.5 * 0.9 = 0.45
    (array([[ True, False,  True,  True]]), 1)
    >>> m2 = np.array([[True, True, True, False]])  # the 0.5 is latent
    >>> lpcore.drop_by_threshold(w, m2, 0.4, axis=1, revive=True)   # tau = 0.4 * 3.1 / 3
    (array([[ True, False,  True,  True]]), 1)
    """
    fn = "lpcore.drop_by_threshold"
    B = for_arrays(fn, w=w, mask=mask)
    w = B.as_array(w, fn, "w")
    comp, _ = compute_dtype(w, fn=fn, names=("w",))
    m = _mask_like(mask, w.shape, fn, B=B)
    h = check_p(h, fn, lo=0.0, lo_open=False, allow_inf=False, name="h")
    grp = groups(w.shape, axis, fn)
    w2 = B.to2d(grp, w, comp)
    m2 = B.to2d(grp, m, np.bool_)
    out = B.empty(m2.shape, np.bool_)
    _, bad, dropped = B.kernels.drop_rows(w2, m2, h, out, revive=bool(revive))
    if bad < grp.G:
        which = "weights" if revive else "active weights"
        raise ValueError(f"{fn}: w contains NaN or Inf among the {which} of group "
                         f"{grp.index(bad)}")
    new = B.result(out, grp, np.bool_)
    return (np.ascontiguousarray(new) if B is HOST else new), dropped


def grow_by_score(score, mask, k, axis=None):
    """Activate the ``k`` inactive connections with the largest normalised ``|score|``.

    Each group's magnitudes are divided by the group's mean ``|score|`` (over
    all its entries) so that layers and units with different gradient scales
    compete fairly; groups whose score is all zero get 0.  Ranking uses the
    magnitude, not the signed value.  Ties break towards the lower flat index.

    Returns
    -------
    new_mask : ndarray of bool
    grown : ndarray of intp
        Flat indices (into the weight) of the activated connections, e.g. to
        reset their momentum.

    Raises
    ------
    ValueError
        ``k`` larger than the number of inactive connections, NaN/Inf scores.

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> g = np.array([[0.1, -5.0, 0.2], [1.0, 0.0, -3.0]])
    >>> m = np.array([[True, False, False], [True, False, False]])
    >>> new, idx = lpcore.grow_by_score(g, m, 2, axis=1)
    >>> idx.tolist()
    [1, 5]
    """
    fn = "lpcore.grow_by_score"
    B = for_arrays(fn, score=score, mask=mask)
    score = B.as_array(score, fn, "score")
    comp, _ = compute_dtype(score, fn=fn, names=("score",))
    m = _mask_like(mask, score.shape, fn, B=B)
    k = _count(k, fn)
    K = B.kernels
    m1 = _flat(B, m, fn)  # C order, 1-D
    n_in = K.inactive_count(m1)
    if k > n_in:
        raise ValueError(f"{fn}: k={k} exceeds the {n_in} inactive connections")
    if not all_finite(score):
        raise ValueError(f"{fn}: score contains NaN or Inf")
    grp = groups(score.shape, axis, fn)
    s2 = B.to2d(grp, score, comp)
    keys2 = K.grow_keys(s2, K.group_norms(s2, 1.0)[0], grp.n, B.empty(s2.shape, np.float64))
    # the k largest normalised scores among the inactive, ties to the lower
    # index (of the C-ordered original shape)
    keys1 = B.flat(B.write(grp, keys2, B.empty(score.shape, np.float64)))
    new1, idx = K.select_keys(keys1, m1, k)
    return B.shaped(new1, m.shape), idx


def drop_smallest(w, mask, k):
    """Drop the ``k`` active connections with the smallest ``|w|`` (over the whole
    tensor; ties towards the lower flat index).

    Parameters
    ----------
    w : array_like
        Real weights (their magnitudes rank the active connections).
    mask : array_like of bool
        w's shape; True = active.
    k : int
        How many to drop, ``0 <= k <=`` the number of active connections.

    Returns
    -------
    (ndarray of bool, ndarray of int)
        The new mask and the dropped flat indices (sorted).  On GPU arrays
        both are device arrays (the indices int64): the selection runs on the
        device, and the copies to the host are two counts.

    Raises
    ------
    ValueError
        k out of range, a mask of another shape, NaN/Inf among the active weights.

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> lpcore.drop_smallest(np.array([3.0, -0.5, 1.0, 0.1]), np.array([True, True, True, False]), 1)
    (array([ True, False,  True, False]), array([1]))
    """
    fn = "lpcore.drop_smallest"
    B = for_arrays(fn, w=w, mask=mask)
    w = check_real_array(B.as_array(w, fn, "w"), fn, "w")
    m = _mask_like(mask, w.shape, fn, B=B)
    k = _count(k, fn)
    K = B.kernels
    m1 = _flat(B, m, fn)
    n_act = m1.size - K.inactive_count(m1)
    if k > n_act:
        raise ValueError(f"{fn}: k={k} exceeds the {n_act} active connections")
    keys = B.empty((m1.size,), np.float64)
    if K.magnitudes(_flat(B, w, fn, _key_dtype(w)), m1, True, keys):
        raise ValueError(f"{fn}: w contains NaN or Inf among the active weights")
    new1, idx = K.select_keys(keys, m1, k, active=True)
    return B.shaped(new1, m.shape), idx


def grow_random(mask, k, rng):
    """Activate ``k`` inactive connections chosen uniformly at random (SET).

    Parameters
    ----------
    mask : array_like of bool
        True = active.
    k : int
        How many to grow, ``0 <= k <=`` the number of inactive connections.
    rng : numpy.random.Generator, int or None
        The caller's generator, an integer seed, or None (fresh entropy).

    Returns
    -------
    (ndarray of bool, ndarray of int)
        The new mask and the grown flat indices (sorted).  On a GPU mask both
        are device arrays and the draw is the host's, from the same ``rng``
        (the same connections): the inactive count comes to the host, the
        ``k`` ranks drawn go to the device.

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> m, idx = lpcore.grow_random(np.array([True, False, False]), 1, rng=0)
    >>> int(m.sum()), idx.size
    (2, 1)
    """
    fn = "lpcore.grow_random"
    rng = check_rng(rng, fn)
    B = for_arrays(fn, mask=mask)
    m = B.as_array(mask, fn, "mask")
    _mask_like(m, m.shape, fn, B=B)
    k = _count(k, fn)
    m1 = _flat(B, m, fn)
    n_free = B.kernels.inactive_count(m1)
    if k > n_free:
        raise ValueError(f"{fn}: k={k} exceeds the {n_free} inactive connections")
    # rng.choice(free, k) draws these ranks and returns free[ranks]
    ranks = np.sort(rng.choice(n_free, size=k, replace=False)) if k else np.zeros(0, np.intp)
    new1, idx = B.kernels.grow_at(m1, ranks, n_free)
    return B.shaped(new1, m.shape), idx


def inactive_magnitudes(score, mask):
    """``|score|`` where the boolean ``mask`` is False, 0 where it is True (in
    the score's float dtype, on its backend): e.g. RigL's regrowth scores,
    restricted to the connections that were inactive.

    >>> import numpy as np
    >>> from lpcore.masks import inactive_magnitudes
    >>> inactive_magnitudes(np.array([-2.0, 3.0]), np.array([False, True])).tolist()
    [2.0, 0.0]
    """
    fn = "lpcore.masks.inactive_magnitudes"
    B = for_arrays(fn, score=score, mask=mask)
    s = B.as_array(score, fn, "score")
    dt, _ = compute_dtype(s, fn=fn, names=("score",))
    m = _mask_like(mask, s.shape, fn, B=B)
    out = B.empty((m.size,), dt)
    B.kernels.magnitudes(_flat(B, s, fn, dt), _flat(B, m, fn), False, out)
    return B.shaped(out, s.shape)


def random_mask(shape, sparsity, rng):
    """A boolean mask with exactly ``round(sparsity * size)`` zeros at random places.

    Parameters
    ----------
    shape : tuple of int
    sparsity : float
        The fraction of zeros, in [0, 1].
    rng : numpy.random.Generator, int or None
        The caller's generator, an integer seed, or None (fresh entropy).

    Examples
    --------
    >>> import lpcore
    >>> int((~lpcore.random_mask((4, 5), 0.75, rng=1)).sum())
    15
    """
    fn = "lpcore.random_mask"
    sparsity = check_real(sparsity, fn, "sparsity", 0.0, 1.0)
    rng = check_rng(rng, fn)
    size = math.prod(shape)
    n_zero = int(round(float(sparsity) * size))
    m = np.ones(size, dtype=bool)
    m[rng.choice(size, size=n_zero, replace=False)] = False
    return m.reshape(shape)


def mask_sparsity(masks):
    """Exact fraction of zeros over all ``masks`` (a mask or a list of masks).

    Host masks may be of any dtype (their zeros count); GPU masks must be
    boolean and are counted on the device (one integer per mask reaches the
    host).

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> lpcore.mask_sparsity([np.array([True, False]), np.zeros((2, 1), bool)])
    0.75
    """
    fn = "lpcore.mask_sparsity"
    ms = [masks] if hasattr(masks, "shape") else list(masks)  # one mask (any backend) or several
    total = zeros = 0
    for i, m in enumerate(ms):
        B = for_arrays(fn, **{f"masks[{i}]": m})
        if B is HOST:
            total += int(np.size(m))
            zeros += int(np.size(m)) - int(np.count_nonzero(m))
        else:
            m = B.as_array(m, fn, f"masks[{i}]")
            _mask_like(m, m.shape, fn, f"masks[{i}]", B=B)
            total += int(m.size)
            zeros += B.kernels.inactive_count(_flat(B, m, fn)) if m.size else 0
    if total == 0:
        raise ValueError(f"{fn}: no mask entries")
    return zeros / total


def adjust_to_sparsity(masks, drop_scores, grow_scores, target):
    """Drop or grow connections over all ``masks`` to exactly
    ``round(target * total)`` zeros, in one global ranking.

    With too few zeros, the active connections with the smallest
    ``|drop_scores|`` are dropped; with too many, the inactive ones with the
    largest ``|grow_scores|`` are grown.  Ties break towards the earlier
    layer, then the lower flat index.  Linear time (a partition, no sort of
    all connections): an 11 M-weight network adjusts in well under a second.

    Parameters
    ----------
    masks : sequence of array_like of bool
        One mask per layer; True = active.  Not modified.
    drop_scores : sequence of array_like
        Per layer, real scores of the mask's shape (e.g. the weights); their
        magnitudes rank the active connections.  Read only when dropping.
    grow_scores : sequence of array_like or None
        Per layer, real scores of the mask's shape (e.g. dense gradients), or
        None for a layer without one (its connections score 0).  Read only
        when growing.
    target : float
        The fraction of zeros wanted over all masks, in [0, 1].

    Returns
    -------
    new_masks : list of ndarray of bool
        Copies of the masks after the adjustment.
    changed : list of ndarray of intp
        Per layer, the sorted flat indices that were dropped (too few zeros)
        or grown (too many).

    Raises
    ------
    ValueError
        A target outside [0, 1], no masks or a score of another shape (named
        with its layer, e.g. ``drop_scores[2]``), NaN/Inf among the scores
        that are ranked.  Nothing is modified.

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> m = [np.array([True, True, True, True]), np.array([True, False])]
    >>> w = [np.array([0.5, -0.1, 2.0, 0.3]), np.array([0.2, 0.0])]
    >>> new, changed = lpcore.adjust_to_sparsity(m, w, [None, None], 0.5)
    >>> [x.tolist() for x in new], [c.tolist() for c in changed]
    ([[True, False, True, True], [False, False]], [[1], [0]])
    """
    fn = "lpcore.adjust_to_sparsity"
    target = check_real(target, fn, "target", 0.0, 1.0)
    masks, drop_scores, grow_scores = list(masks), list(drop_scores), list(grow_scores)
    named = {f"masks[{i}]": m for i, m in enumerate(masks)}
    for name, sc in (("drop_scores", drop_scores), ("grow_scores", grow_scores)):
        named.update({f"{name}[{i}]": a for i, a in enumerate(sc)})
    B = for_arrays(fn, **named)
    ms = [_mask_like(m, B.as_array(m, fn, f"masks[{i}]").shape, fn, f"masks[{i}]", B=B)
          for i, m in enumerate(masks)]
    if not ms:
        raise ValueError(f"{fn}: masks is empty")
    for name, sc in (("drop_scores", drop_scores), ("grow_scores", grow_scores)):
        if len(sc) != len(ms):
            raise ValueError(f"{fn}: {name} has {len(sc)} entries for {len(ms)} masks")
    K = B.kernels
    m1s = [_flat(B, m, fn) for m in ms]
    total = sum(m.size for m in ms)
    diff = int(round(target * total)) - sum(K.inactive_count(m1) for m1 in m1s)
    drop = diff > 0
    # one ranking over all layers, in layer order: ties go to the earlier
    # layer, then the lower flat index
    keys = B.empty((total,), np.float64)
    cat = B.empty((total,), np.bool_)
    start = 0
    for i, (m, m1) in enumerate(zip(ms, m1s)):
        name = f"{'drop' if drop else 'grow'}_scores[{i}]"
        sc = (drop_scores if drop else grow_scores)[i]
        part = keys[start:start + m.size]
        K.copy_mask(m1, cat[start:start + m.size])
        if sc is None and not drop:
            K.fill(B.shaped(part, (1, part.size)), 0.0)
        else:
            a = check_real_array(B.as_array(sc, fn, name), fn, name)
            if a.shape != m.shape:
                raise ValueError(f"{fn}: {name} has shape {a.shape}, expected the mask's "
                                 f"{m.shape}")
            if K.magnitudes(_flat(B, a, fn, _key_dtype(a)), m1, drop, part):
                raise ValueError(f"{fn}: {name} contains NaN or Inf among the "
                                 f"{'active' if drop else 'inactive'} connections")
        start += m.size
    new1, _ = K.select_keys(keys, cat, abs(diff), active=drop)
    new, changed, start = [], [], 0
    for m, m1 in zip(ms, m1s):
        n1 = new1[start:start + m.size]
        start += m.size
        new.append(B.shaped(n1, m.shape))
        # the dropped (active before, not now) or the grown (active now only)
        changed.append(activated(m1, n1) if drop else activated(n1, m1))
    return new, changed
