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

from .._validate import check_real
from ..layout import groups
from ..channels import unmasked_mean_magnitude
from ..kernels.topology import smallest_stable
from ..masks import drop_smallest, grow_by_score
from ..schedules import sparsity_schedule
from ._base import Layer
from .rigl import RigL


class Chase(RigL):
    """RigL plus gradual removal of the channels with the smallest UMM."""

    name = "chase"
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
        it grows, the channels without any connection are no candidates."""
        target = self.target if sparsity is None else sparsity
        total = sum(ly.mask.size for ly in layers)
        zeros = sum(ly.mask.size - int(np.count_nonzero(ly.mask)) for ly in layers)
        want = int(round(target * total))
        if zeros <= want:  # dropping (or nothing): the base rule
            return super().adjust(layers, sparsity)
        dead, filled = [], []
        for ly in layers:
            grp = groups(ly.mask.shape, ly.axis, "lpcore.methods.chase")
            m2 = grp.to2d(ly.mask, np.bool_)
            d2 = np.broadcast_to(~m2.any(axis=1)[:, None], m2.shape)
            d = np.ascontiguousarray(grp.from2d(np.ascontiguousarray(d2)))
            dead.append(d)
            filled.append(ly.mask | d)  # dead channels marked active: never grown
        n_dead = sum(int(d.sum()) for d in dead)
        goal = max(0, want - n_dead)  # the zeros wanted among the living channels
        out = []
        fake = [Layer(mask=f, weight=ly.weight, grad=ly.grad, axis=ly.axis)
                for f, ly in zip(filled, layers)]
        for (dec, d, ly) in zip(super().adjust(fake, goal / total), dead, layers):
            if dec is None:
                out.append(None)
            else:
                new, grown = dec
                out.append((new & ~d, grown))
        return out

    def channel_fraction(self, t):
        """The fraction of every layer's channels removed by step ``t``."""
        return sparsity_schedule(t, 0.0, self.channel_target, self.begin, self.end)

    def update(self, t, layers):
        h, c_t = self.h(t), self.channel_fraction(t)
        out = []
        for ly in layers:
            shape, axis = ly.mask.shape, ly.axis
            grp = groups(shape, axis, "lpcore.methods.chase")
            # the view's flat index of every (G, n) position
            where = grp.to2d(np.arange(ly.mask.size).reshape(shape), np.intp).reshape(-1)
            m2 = grp.to2d(ly.mask, np.bool_).copy()
            w2 = grp.to2d(ly.weight, np.float64)
            G = m2.shape[0]
            dead = ~m2.any(axis=1)
            # 1. channel removal: the smallest UMM among the living channels
            n_rm = max(0, min(G - 1, int(round(c_t * G))) - int(dead.sum()))
            freed = 0
            if n_rm:
                umm = np.asarray(unmasked_mean_magnitude(w2, m2, axis=1), dtype=np.float64)
                rm = smallest_stable(np.where(dead, np.inf, umm), n_rm)
                freed = int(m2[rm].sum())
                m2[rm] = False
                dead[rm] = True
            # 2. RigL among the living channels, plus the freed budget
            k = int(round(h * int(m2.sum())))
            new2, _ = drop_smallest(w2, m2, k)
            room = int((~new2[~dead]).sum())
            n_grow = min(k + freed, room)
            if ly.grad is None:
                score = np.ones_like(w2)
            else:
                score = np.where(m2, 0.0, np.abs(grp.to2d(ly.grad, np.float64)))
            # dead channels are not candidates: marked active for the selection
            grown2 = grow_by_score(score, new2 | dead[:, None], n_grow, axis=1)[1]
            new2.reshape(-1)[grown2] = True
            new2[dead] = False
            new = np.ascontiguousarray(grp.from2d(new2))
            grown = np.sort(where[grown2])
            out.append((new, grown))
        return out
