"""Channel statistics of masked weights (Chase, seed 006).

* :func:`unmasked_mean_magnitude` - Chase's channel score.
* :func:`channel_sparsity` - the fraction of output channels with no active
  connection.

Both run on the arrays' backend (GPU arrays: a block per channel; the one
copy to the host is a count).
"""
from __future__ import annotations

import numpy as np

from ._backend import for_arrays
from ._validate import check_real_array
from .layout import feature_axes, groups
from .masks import _key_dtype, _mask_like

__all__ = ["unmasked_mean_magnitude", "channel_sparsity"]


def unmasked_mean_magnitude(w, mask, axis=None):
    """Chase's channel score, per output channel (one group: the fan-in
    ``axis``, default all but the first): ``sum |w * mask| / n`` over the
    channel's ``n`` positions, inactive ones counting as zeros, so that a
    channel scores low when it is sparse, when its weights are small, or
    both.  Returns float64 of the kept (channel) shape.

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> w = np.array([[1.0, -3.0], [0.5, 0.5]])
    >>> lpcore.unmasked_mean_magnitude(w, np.array([[True, False], [True, True]]))
    array([0.5, 0.5])
    """
    fn = "lpcore.unmasked_mean_magnitude"
    B = for_arrays(fn, w=w, mask=mask)
    w = check_real_array(B.as_array(w, fn, "w"), fn, "w")
    m = _mask_like(mask, w.shape, fn, B=B)
    if w.ndim < 1:
        raise ValueError(f"{fn}: w must have at least 1 dimension")
    grp = groups(w.shape, feature_axes(w.ndim) if axis is None else axis, fn)
    out = B.empty((grp.G,), np.float64)
    bad = B.kernels.row_umm(B.to2d(grp, w, _key_dtype(w)), B.to2d(grp, m, np.bool_), out)
    if bad < grp.G:
        raise ValueError(f"{fn}: w contains NaN or Inf among the active weights in group "
                         f"{grp.index(bad)}")
    return B.reduced(grp, out, False)


def channel_sparsity(masks, axes=None):
    """The fraction of output channels with no active connection, over all
    ``masks`` (``axes``: per mask the fan-in axes, default all but the
    first).

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> lpcore.channel_sparsity([np.array([[True, False], [False, False]])])
    0.5
    """
    fn = "lpcore.channel_sparsity"
    masks = list(masks)
    B = for_arrays(fn, **{f"masks[{i}]": m for i, m in enumerate(masks)})
    ms = [_mask_like(m, B.as_array(m, fn, f"masks[{i}]").shape, fn, f"masks[{i}]", B=B)
          for i, m in enumerate(masks)]
    if not ms:
        raise ValueError(f"{fn}: masks is empty")
    axes = [None] * len(ms) if axes is None else list(axes)
    if len(axes) != len(ms):
        raise ValueError(f"{fn}: axes has {len(axes)} entries for {len(ms)} masks")
    dead = total = 0
    for m, ax in zip(ms, axes):
        grp = groups(m.shape, feature_axes(m.ndim) if ax is None else ax, fn)
        dead += B.kernels.live_rows(B.to2d(grp, m, np.bool_), B.empty((grp.G,), np.bool_))
        total += grp.G
    if total == 0:
        raise ValueError(f"{fn}: the masks have no channels (every shape has a zero-length "
                         "output axis)")
    return dead / total
