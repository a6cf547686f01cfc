"""Chase (Yin et al., NeurIPS 2023, seed 003): dynamic sparse training that
turns unstructured sparsity into channel sparsity at the same parameter
budget.

Every update is RigL's (drop the ``h`` fraction of each layer's smallest
active ``|w|``, regrow as many by the largest ``|dense gradient|``), plus a
gradual channel removal: the fraction of removed output channels of every
layer follows the cubic schedule from 0 at ``begin`` to
``channel_sparsity`` at ``end``; the channels removed are those with the
smallest Unmasked Mean Magnitude (:func:`lpcore.unmasked_mean_magnitude`:
``sum |w * mask| / n`` per channel, so sparse channels and small ones go
first).  A removed channel loses all its connections and never regrows; the
connections it had are regrown in the layer's remaining channels (by
``|dense gradient|``), so the layer keeps its parameter budget.  The
binding zeroes the bias of removed channels and keeps it at zero, so that a
removed channel outputs exactly nothing and :func:`lpcore_torch.compact`
can cut it out.

Where this departs from the paper: its full text was not readable here; the
UMM formula above, the per-layer cubic schedule of the channel fraction and
the in-layer reallocation of the freed budget are this library's reading of
the abstract and of the issue that specified it.  The inputs that the next
layer takes from a removed channel keep their mask (they see a zero
activation); :func:`lpcore_torch.compact` removes them.
"""
from __future__ import annotations

import numpy as np

from .._backend import for_arrays
from .._validate import check_real
from ..layout import groups
from ..masks import drop_smallest, grow_by_score, inactive_count, inactive_magnitudes
from ..schedules import sparsity_schedule
from ._base import Layer
from .rigl import RigL


class Chase(RigL):
    """RigL plus gradual removal of the channels with the smallest UMM."""

    name = "chase"
    device_ready = True
    #: the binding keeps the bias of channels without connections at zero
    removes_channels = True

    def __init__(self, *args, channel_sparsity=None, **kw):
        super().__init__(*args, **kw)
        self.channel_target = check_real(0.3 if channel_sparsity is None else channel_sparsity,
                                         "lpcore.methods.chase", "channel_sparsity", 0.0, 1.0,
                                         hi_open=True)

    def init_masks(self, shapes):
        """The initial masks; refuses a (target, channel_sparsity) pair whose
        remaining channels cannot hold the weights the target keeps (the
        removal would have to be undone)."""
        shapes = [tuple(sh) for sh in shapes]
        total = sum(int(np.prod(sh)) for sh in shapes)
        keep = total - int(round(self.target * total))
        room = 0
        for sh in shapes:
            G, n = sh[0], int(np.prod(sh[1:]))
            room += (G - max(0, min(G - 1, int(round(self.channel_target * G))))) * n
        if room < keep:
            raise ValueError(
                f"lpcore.methods.chase: channel_sparsity={self.channel_target} leaves channels "
                f"with room for {room} connections, but target_sparsity={self.target} keeps "
                f"{keep} of {total}; lower channel_sparsity (at most about "
                f"{self.target:.3g}) or raise target_sparsity")
        return super().init_masks(shapes)

    def adjust(self, layers, sparsity=None):
        """The exact adjustment at ``end``, never into a removed channel: when
        it grows, the channels without any connection are no candidates (on
        the layers' backend)."""
        target = self.target if sparsity is None else sparsity
        total = sum(ly.mask.size for ly in layers)
        zeros = sum(inactive_count(ly.mask) for ly in layers)
        want = int(round(target * total))
        if zeros <= want:  # dropping (or nothing): the base rule
            return super().adjust(layers, sparsity)
        fake, lives, n_dead = [], [], 0
        for i, ly in enumerate(layers):
            B, grp, m2 = self._rows(ly, i)
            live = B.empty((grp.G,), np.bool_)
            n_dead += B.kernels.live_rows(m2, live) * grp.n
            filled = B.empty(m2.shape, np.bool_)  # dead channels marked active: never grown
            B.kernels.fill_rows(m2, live, False, True, filled)
            fake.append(Layer(mask=B.result(filled, grp, np.bool_), weight=ly.weight,
                              grad=ly.grad, axis=ly.axis))
            lives.append(live)
        goal = max(0, want - n_dead)  # the zeros wanted among the living channels
        out = []
        for i, (dec, live, ly) in enumerate(zip(super().adjust(fake, goal / total), lives,
                                                layers)):
            if dec is None:
                out.append(None)
                continue
            B, grp, new2 = self._rows(Layer(mask=dec[0], weight=ly.weight, axis=ly.axis), i)
            final = B.empty(new2.shape, np.bool_)
            B.kernels.fill_rows(new2, live, False, False, final)
            out.append((self._shaped(B, grp, final), dec[1]))
        return out

    def channel_fraction(self, t):
        """The fraction of every layer's channels removed by step ``t``."""
        return sparsity_schedule(t, 0.0, self.channel_target, self.begin, self.end)

    @staticmethod
    def _rows(ly, i):
        """(backend, groups, the mask's (G, n) view) of layer ``i``."""
        fn = "lpcore.methods.chase"
        B = for_arrays(fn, **{f"layers[{i}].mask": ly.mask, f"layers[{i}].weight": ly.weight})
        grp = groups(ly.mask.shape, ly.axis, fn)
        return B, grp, B.to2d(grp, ly.mask, np.bool_)

    @staticmethod
    def _shaped(B, grp, a2):
        """A (G, n) mask back in the layer's shape (C-contiguous on the host)."""
        r = B.result(a2, grp, np.bool_)
        return np.ascontiguousarray(r) if B.name == "cpu" else r

    def update(self, t, layers):
        """One Chase update on the layers' backend (GPU arrays: the masks and
        grown indices stay on the device; the copies to the host are counts)."""
        h, c_t = self.h(t), self.channel_fraction(t)
        fn = "lpcore.methods.chase"
        out = []
        for i, ly in enumerate(layers):
            B, grp, m2 = self._rows(ly, i)
            K, G, n = B.kernels, grp.G, grp.n
            if B.name != "cpu" and any(p != q for p, q in enumerate(grp.perm)):
                raise ValueError(f"{fn}: on GPU arrays the fan-in axes must be the trailing "
                                 f"ones (layer {i} has axis={ly.axis})")
            w2 = B.to2d(grp, ly.weight, ly.weight.dtype)
            live = B.empty((G,), np.bool_)
            n_dead = K.live_rows(m2, live)
            # 1. channel removal: the smallest UMM among the living channels
            n_rm = max(0, min(G - 1, int(round(c_t * G))) - n_dead)
            freed = 0
            if n_rm:
                umm = B.empty((G,), np.float64)
                bad = K.row_umm(w2, m2, umm)  # the dead rows are no candidates below
                if bad < G:
                    raise ValueError(f"{fn}: layer {i}'s weights contain NaN or Inf among the "
                                     f"active connections in group {grp.index(bad)}")
                live, _ = K.select_keys(umm, live, n_rm, active=True)
                cut = B.empty((G, n), np.bool_)
                freed = K.fill_rows(m2, live, False, False, cut)
                m2, n_dead = cut, n_dead + n_rm
            # 2. RigL among the living channels, plus the freed budget
            k = int(round(h * (G * n - inactive_count(m2))))
            new2, _ = drop_smallest(w2, m2, k)
            room = inactive_count(new2) - n_dead * n
            n_grow = min(k + freed, room)
            if ly.grad is None:
                score = K.fill(B.empty((G, n), np.float64), 1.0)
            else:
                score = inactive_magnitudes(B.to2d(grp, ly.grad, np.float64), m2)
            # dead channels are not candidates: marked active for the selection
            cand = B.empty((G, n), np.bool_)
            K.fill_rows(new2, live, False, True, cand)
            grown_mask, grown2 = grow_by_score(score, cand, n_grow, axis=1)
            final = B.empty((G, n), np.bool_)
            K.fill_rows(grown_mask, live, False, False, final)
            if B.name == "cpu":  # the view's flat index of every (G, n) position
                where = grp.to2d(np.arange(ly.mask.size).reshape(ly.mask.shape), np.intp)
                grown2 = np.sort(where.reshape(-1)[grown2])
            out.append((self._shaped(B, grp, final), grown2))
        return out
