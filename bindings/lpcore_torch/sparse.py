"""``SparseTrainer``: topology evolution for sparse training (DESIGN section 5).

The trainer owns one boolean mask per sparse weight, registered as a buffer
``<weight name>_mask`` on the weight's module (so masks live in the model's
``state_dict``).  Masked weights are exactly zero in the forward pass and get
no update: a gradient hook zeroes their gradients (keeping the dense gradient
for regrowth scores), and after every optimizer step the trainer re-applies
the mask.  All decisions are computed by ``lpcore``'s topology primitives.

Methods
-------
``lpss``       semi-pruning with threshold adaptation (needs
               :class:`lpcore_torch.LpSGD`; build its groups with
               ``lp_param_groups(model, p="auto", target_sparsity=...)`` so
               that each layer's p can reach the target).  Each update:
               per output unit, the new mask is computed over all
               connections from their latent magnitudes (``D_q`` of the dual
               state), ``|w| >= h * mean(active |w|)`` (so latent connections
               can come back, the reference's semantics); then
               ``round(n_dropped * phi)`` connections regrow by normalised
               gradient magnitude.  The unit-sphere constraint holds for the
               *effective* weights ``w * mask``; inactive connections keep
               their latent dual value, which decays by ``1 - lr`` per step
               (``pruning="hard"`` zeroes it).
``set``        drop the smallest ``|w|``, regrow at random (fixed sparsity).
``rigl``       drop the smallest ``|w|``, regrow by largest ``|gradient|``.
``static``     a fixed random mask.
``magnitude``  gradual magnitude pruning on the cubic schedule, no regrowth.

Where the LpSS controller departs from the reference (each measured; README
table (d)):

* ``controller="schedule"``: ``phi`` is :func:`lpcore.regrow_ratio`, the
  ratio that puts the mask on the sparsity schedule, instead of the
  reference's ``(1 -+ delta) s/s*`` (:func:`lpcore.grow_ratio`,
  ``controller="reference"``), whose fixed point lies below the target.
* ``h_schedule="auto"`` keeps ``h0`` constant for ``lpss``: p is chosen for
  ``h0``; the reference's cosine annealing dries the drops up before the
  target, and at small ``h`` revival undoes the pruning.
* ``adapt_h=True``: when a drop round falls short of the schedule, the
  threshold grows by ``1 + delta`` (and relaxes back towards ``h0`` by
  ``1 - delta`` once the drops suffice), which absorbs the gamma model's error.
* ``finalize="auto"``: no exact adjustment at ``end`` for ``lpss`` (the
  controller lands within 0.02 by itself; ``finalize="exact"`` forces the
  exact count); the baselines keep it.  After ``end`` the topology is frozen.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import nn

import lpcore
from lpcore._validate import check_real

from ._convert import to_numpy
from .groups import _CONV, _CONVT, fan_in_layout
from .optim import LpSGD

METHODS = ("lpss", "set", "rigl", "static", "magnitude")


class _Sparse:
    """One sparse weight: its module, name, layout and the flat -> (G, n) map."""

    def __init__(self, name, module, weight, layout):
        self.name, self.module, self.weight, self.layout = name, module, weight, layout
        view, axis = layout
        idx = lpcore.to_groups(np.arange(weight.numel()).reshape(view), axis).reshape(-1)
        self.pos = np.empty_like(idx)
        self.pos[idx] = np.arange(idx.size)  # flat weight index -> flat (G, n) index
        self.dense_grad = None

    @property
    def mask(self):
        return getattr(self.module, "weight_mask")


class SparseTrainer:
    """Evolve the connectivity of a model's weights during training.

    Call :meth:`step` once per training step, right after ``optimizer.step()``.

    Parameters
    ----------
    model : torch.nn.Module
    optimizer : lpcore_torch.LpSGD or torch.optim.SGD
        ``method="lpss"`` needs ``lpcore_torch.LpSGD``; its constrained tensors
        are the sparse weights.  Otherwise the weights are chosen as
        :func:`lpcore_torch.lp_param_groups` does (Linear/Conv weights but the
        final classifier).
    method : {"lpss", "set", "rigl", "static", "magnitude"}
    target_sparsity : float
        Exact-zero fraction over the sparse weights at the end, in (0, 1).
    init_sparsity : float
        Initial mask sparsity for ``lpss`` (the others start at the target,
        ``magnitude`` dense).
    begin, end, frequency : int
        Topology updates every ``frequency`` steps in ``[begin, end]``.
    h0, h_schedule, delta
        The drop threshold (``lpss``) or drop fraction (``set``, ``rigl``) and
        its annealing (``"auto"``: constant for ``lpss``, cosine otherwise);
        ``delta`` is the controller's margin.
    controller : {"schedule", "reference"}
        ``lpss``'s grow ratio (see the module docstring).
    revive : bool
        ``lpss``: let latent connections above the threshold come back.
    adapt_h : bool
        ``lpss``: raise the threshold when a drop round falls short.
    finalize : {"auto", "exact", "none"}
        Adjust the masks once at ``end`` to exactly the target.
    pruning : {"semi", "hard"}
        Whether inactive connections keep a latent dual value (``lpss``).
    seed : int
        For random masks and SET's regrowth (identical on every DDP replica).
    """

    def __init__(self, model, optimizer, method="lpss", target_sparsity=0.9, init_sparsity=0.2,
                 begin=0, end=1000, frequency=40, h0=0.2, h_schedule="auto", delta=0.1,
                 pruning="semi", seed=0, controller="schedule", revive=True, finalize="auto",
                 adapt_h=True):
        if method not in METHODS:
            raise ValueError(f"SparseTrainer: method must be one of {METHODS}, got {method!r}")
        if not 0.0 < float(target_sparsity) < 1.0:
            raise ValueError(f"SparseTrainer: target_sparsity must be in (0, 1), got {target_sparsity!r}")
        if not 0.0 <= float(init_sparsity) < 1.0:
            raise ValueError(f"SparseTrainer: init_sparsity must be in [0, 1), got {init_sparsity!r}")
        if not (isinstance(frequency, int) and frequency >= 1):
            raise ValueError(f"SparseTrainer: frequency must be an integer >= 1, got {frequency!r}")
        for name, v in (("begin", begin), ("end", end)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise ValueError(f"SparseTrainer: {name} must be an integer step, got {v!r}")
        if not (0 <= begin < end):
            raise ValueError(f"SparseTrainer: need 0 <= begin < end, got {begin}, {end}")
        # h0: lpss's threshold relative to the mean |w|, set/rigl's drop fraction
        h0 = check_real(h0, "SparseTrainer", "h0", 0.0, 1.0, hi_open=True)
        delta = check_real(delta, "SparseTrainer", "delta", 0.0, 1.0, hi_open=True)
        if pruning not in ("semi", "hard"):
            raise ValueError(f"SparseTrainer: pruning must be 'semi' or 'hard', got {pruning!r}")
        if method == "lpss" and not isinstance(optimizer, LpSGD):
            raise TypeError("SparseTrainer: method='lpss' needs lpcore_torch.LpSGD")
        if h_schedule == "auto":
            h_schedule = "constant" if method == "lpss" else "cosine"
        lpcore.drop_threshold_schedule(0, h0, begin, end, kind=h_schedule)  # validates
        self.model, self.optimizer, self.method = model, optimizer, method
        self.target, self.s0 = float(target_sparsity), float(init_sparsity)
        self.begin, self.end, self.frequency = int(begin), int(end), int(frequency)
        self.h0, self.h_schedule, self.delta, self.pruning = float(h0), h_schedule, float(delta), pruning
        if controller not in ("schedule", "reference"):
            raise ValueError(f"SparseTrainer: controller must be 'schedule' or 'reference', "
                             f"got {controller!r}")
        if finalize not in ("auto", "exact", "none"):
            raise ValueError(f"SparseTrainer: finalize must be 'auto', 'exact' or 'none', "
                             f"got {finalize!r}")
        self.controller, self.revive, self.adapt_h = controller, bool(revive), bool(adapt_h)
        self.finalize = ("none" if method == "lpss" else "exact") if finalize == "auto" else finalize
        self.t = 0
        self.phi = 1.0
        self.h_gain = 1.0
        self.rng = np.random.default_rng(seed)
        self.items = self._select()
        if not self.items:
            raise ValueError("SparseTrainer: the model has no weight to sparsify")
        for it in self.items:
            if "weight_mask" in it.module._buffers:
                # a second trainer would multiply its masks into the first one's
                raise ValueError(f"SparseTrainer: {it.name}.weight already has a mask "
                                 "(weight_mask): another SparseTrainer owns this model; "
                                 "a model takes one trainer")
        start = {"lpss": self.s0, "magnitude": 0.0}.get(method, self.target)
        # LpSGD steps its constrained weights masked (the fused kernel zeroes the
        # masked entries and renormalises the rest): no per-step pass here
        self._masked_step = isinstance(optimizer, LpSGD) and all(
            self._p(it) is not None for it in self.items)
        for it in self.items:
            m = lpcore.random_mask(tuple(it.weight.shape), start, self.rng)
            it.module.register_buffer("weight_mask", torch.from_numpy(m))
            it.weight.register_hook(self._hook(it))
            if self._masked_step:
                optimizer.set_mask(it.weight, lambda mod=it.module: mod.weight_mask)
            dual = self.optimizer.state.get(it.weight, {}).get("dual")
            if dual is not None and pruning == "hard":
                off = np.flatnonzero(~m.reshape(-1))
                dual.reshape(-1)[torch.from_numpy(it.pos[off])] = 0.0
        with torch.no_grad():
            self._apply_masks()

    # ------------------------------------------------------------------
    def _select(self):
        owners = {}
        for name, mod in self.model.named_modules():
            w = getattr(mod, "weight", None)
            if isinstance(w, nn.Parameter):
                owners[id(w)] = (name, mod)
        items = []
        if isinstance(self.optimizer, LpSGD):
            for group in self.optimizer.param_groups:
                for w, layout in self.optimizer._constrained(group):
                    if id(w) in owners:
                        name, mod = owners[id(w)]
                        items.append(_Sparse(name, mod, w, layout))
        if not items:
            layers = [(n, m) for n, m in self.model.named_modules()
                      if isinstance(m, (nn.Linear,) + _CONV + _CONVT)]
            for name, mod in layers[:-1]:
                view, axis = fan_in_layout(mod)
                if math.prod(view[a] for a in axis) >= 2:
                    items.append(_Sparse(name, mod, mod.weight, (view, axis)))
        return items

    def _hook(self, it):
        def hook(grad):
            it.dense_grad = grad.detach()
            return grad * it.mask.to(grad.dtype)
        return hook

    @property
    def sparsity(self):
        """Exact-zero fraction of the masks over all sparse weights."""
        return lpcore.mask_sparsity([it.mask.numpy() for it in self.items])

    def weight_sparsity(self):
        """Exact-zero fraction of the sparse weights themselves."""
        z = sum(int((it.weight == 0).sum()) for it in self.items)
        return z / sum(it.weight.numel() for it in self.items)

    # ------------------------------------------------------------------
    @torch.no_grad()
    def step(self):
        """Advance one training step: re-apply masks, evolve the topology when due."""
        t = self.t
        due = self.method != "static" and self.begin <= t <= self.end and \
            (t - self.begin) % self.frequency == 0 and t > 0
        if due:
            self._update(t)
        if self.method != "static" and t == self.end and self.finalize == "exact":
            self._finalize()
            due = True
        if due or not self._masked_step:
            # LpSGD's masked step keeps its weights masked and on the sphere; a
            # new mask (or another optimizer) needs the masks applied here
            self._apply_masks()
        self.t += 1

    def _update(self, t):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # identical decisions on every replica: average the dense gradients
            ws = torch.distributed.get_world_size()
            for it in self.items:
                if it.dense_grad is not None:
                    g = it.dense_grad.clone()
                    torch.distributed.all_reduce(g)
                    it.dense_grad = g / ws
        s_t = lpcore.sparsity_schedule(t, {"magnitude": 0.0}.get(self.method, self.s0),
                                       self.target, self.begin, self.end)
        h = lpcore.drop_threshold_schedule(t, self.h0, self.begin, self.end, kind=self.h_schedule)
        if self.method == "lpss":
            self._lpss_update(s_t, h)
            return
        for it in self.items:
            w = it.weight.detach().numpy().reshape(it.layout[0])
            m = it.mask.numpy().reshape(it.layout[0])
            g = None if it.dense_grad is None else it.dense_grad.numpy().reshape(it.layout[0])
            if self.method in ("set", "rigl"):
                k = int(round(h * int(m.sum())))
                new, _ = lpcore.drop_smallest(w, m, k)
                if self.method == "set" or g is None:
                    new, grown = lpcore.grow_random(new, k, self.rng)
                else:
                    new, grown = lpcore.grow_by_score(np.where(m, 0.0, np.abs(g)), new, k)
            else:  # magnitude
                n_zero = int(round(s_t * m.size))
                k = max(0, n_zero - int((~m).sum()))
                new, _ = lpcore.drop_smallest(w, m, k)
                grown = np.zeros(0, np.intp)
            self._commit(it, m, new, grown)

    def _latent(self, it):
        """Every connection's latent magnitude, in the weight's view: ``D_q`` of
        LpSGD's dual state (semi-pruning keeps it for inactive connections),
        else the effective weight."""
        dual = self.optimizer.state.get(it.weight, {}).get("dual")
        p = self._p(it)
        if dual is None or p is None:
            return it.weight.detach().numpy().reshape(it.layout[0])
        v = dual.numpy().reshape(-1)[it.pos].reshape(it.layout[0])
        return lpcore.from_dual(v, p)

    def _lpss_update(self, s_t, h):
        if h == 0.0:  # a zero threshold drops nothing (and would revive every latent value)
            return
        h = h * self.h_gain
        old = [it.mask.numpy().reshape(it.layout[0]) for it in self.items]
        drops = [lpcore.drop_by_threshold(self._latent(it), m, h, axis=it.layout[1],
                                          revive=self.revive)
                 for it, m in zip(self.items, old)]
        if self.controller == "reference":
            # the reference counts every changed entry as "dropped" and floors
            self.phi = lpcore.grow_ratio(self.sparsity, s_t, h, self.delta)
            ks = [math.floor(np.count_nonzero(new != m) * self.phi) for (new, _), m in zip(drops, old)]
        else:
            zeros = sum(int(np.count_nonzero(~new)) for new, _ in drops)
            want = int(round(s_t * sum(m.size for m in old)))
            self.phi = lpcore.regrow_ratio(zeros, sum(nd for _, nd in drops), want)
            ks = [math.floor(nd * self.phi + 0.5) for _, nd in drops]
            if self.adapt_h:
                self.h_gain = lpcore.threshold_gain(self.h_gain, zeros, want, self.delta)
        for it, m, (new, _), k in zip(self.items, old, drops, ks):
            k = min(int(k), int(np.count_nonzero(~new)))
            grown = np.zeros(0, np.intp)
            if k and it.dense_grad is not None:
                g = it.dense_grad.numpy().reshape(it.layout[0])
                new, grown = lpcore.grow_by_score(g, new, k, axis=it.layout[1])
            # momentum is reset for the regrown (including those dropped and regrown in this
            # round, active before and after) and for the revived
            revived = np.flatnonzero((new & ~m).reshape(-1))
            self._commit(it, m, new, np.union1d(grown, revived))

    def _finalize(self):
        """Adjust the masks once, to exactly the target sparsity overall: one
        global ranking, |w| to drop and |dense gradient| to grow
        (:func:`lpcore.adjust_to_sparsity`)."""
        old = [it.mask.numpy() for it in self.items]
        new, changed = lpcore.adjust_to_sparsity(
            old, [it.weight.detach().numpy() for it in self.items],
            [None if it.dense_grad is None else it.dense_grad.numpy() for it in self.items],
            self.target)
        grow = sum(int(n.sum()) for n in new) > sum(int(m.sum()) for m in old)
        for it, m, n, c in zip(self.items, old, new, changed):
            if c.size:
                self._commit(it, m.reshape(it.layout[0]), n.reshape(it.layout[0]),
                             c if grow else np.zeros(0, np.intp))

    def _commit(self, it, old, new, grown):
        """Install a new mask; reset optimizer state of changed connections."""
        old_flat = old.reshape(-1)
        new_flat = new.reshape(-1)
        dropped = np.flatnonzero(old_flat & ~new_flat)
        changed = np.union1d(dropped, np.asarray(grown, dtype=np.intp))
        st = self.optimizer.state.get(it.weight, {})
        buf = st.get("momentum_buffer")
        if buf is not None and changed.size:
            b = buf.reshape(-1)
            idx = it.pos[changed] if buf.shape != it.weight.shape else changed
            b[torch.from_numpy(idx)] = 0.0
        dual = st.get("dual")
        if dual is not None and self.pruning == "hard" and dropped.size:
            dual.reshape(-1)[torch.from_numpy(it.pos[dropped])] = 0.0
        it.mask.copy_(torch.from_numpy(new.reshape(tuple(it.weight.shape))))

    def _apply_masks(self):
        if isinstance(self.optimizer, LpSGD):
            # masking keeps LpSGD's state (the latent dual values stay)
            with self.optimizer.keep_state([it.weight for it in self.items]):
                self._mask_weights()
        else:
            self._mask_weights()

    def _mask_weights(self):
        for it in self.items:
            w = it.weight
            w.mul_(it.mask.to(w.dtype))
            if isinstance(self.optimizer, LpSGD) and self._p(it) is not None:
                # the unit sphere holds for the effective weights w * mask
                arr = to_numpy(w).reshape(it.layout[0])
                lpcore.normalize(arr, self._p(it), axis=it.layout[1], out=arr, zero="keep")

    def _p(self, it):
        for group in self.optimizer.param_groups:
            if any(q is it.weight for q in group["params"]):
                return group["p"]
        return None

    # ------------------------------------------------------------------
    def state_dict(self):
        """Trainer state (the masks are in the model's state_dict)."""
        return {"t": self.t, "phi": self.phi, "h_gain": self.h_gain,
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state):
        self.t = int(state["t"])
        self.phi = float(state["phi"])
        self.h_gain = float(state.get("h_gain", 1.0))
        self.rng.bit_generator.state = state["rng"]

    def report(self):
        """Per-layer exact sparsity of the sparse weights: list of (name, sparsity)."""
        return [(f"{it.name}.weight", float((it.weight == 0).float().mean()))
                for it in self.items]
