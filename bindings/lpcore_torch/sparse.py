"""``SparseTrainer``: topology evolution for sparse training (DESIGN section 5).

The trainer owns one boolean mask per sparse weight, registered as a buffer
``<weight name>_mask`` on the weight's module (so masks live in the model's
``state_dict``).  Masked weights are exactly zero in the forward pass and get
no update: a gradient hook zeroes their gradients (keeping the dense gradient
for regrowth scores), and after every optimizer step the trainer re-applies
the mask.  All decisions are computed by ``lpcore``'s topology primitives.

The methods (``lpss``, ``set``, ``rigl``, ``static``, ``magnitude``,
``imp``, ``scl``, ``chase``, ``concave``) are the policy of
``lpcore.methods``, one module each, whose docstrings say what each does and
where it departs from its paper; ``lpss`` needs :class:`lpcore_torch.LpSGD`
(its latent magnitudes are ``D_q`` of the dual state, read through
:meth:`LpSGD.latent`).  IMP and the concave lottery rewind every parameter
to its value after step ``begin`` (the trainer keeps that copy:
:meth:`SparseTrainer.tensor_state`).

The learned-mask methods keep ``theta`` (the trainable weights, inactive
connections included) in the trainer; the weight the model holds is ``theta
* gate``, its gradient is scaled by the gate, and after each optimizer step
``theta`` takes the step the optimizer made on the weight.  (With weight
decay, torch's SGD decays ``theta * gate`` rather than ``theta``.)

This module keeps the torch side: mask buffers, gradient hooks, the DDP
all-reduce of dense gradients, resets of the optimizer state of changed
connections (through ``LpSGD.reset_state``; torch's SGD: its momentum
buffers), ``state_dict``.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

import lpcore

from . import _convert
from ._convert import host
from ._masking import alive, apply_masks, gate_tensor, select_weights, zero_dead_biases
from .optim import LpSGD


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
    method : str
        "lpss", "set", "rigl", "static", "magnitude", "imp", "scl", "concave",
        or any name in ``lpcore.methods.METHODS``.
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
        ``lpss``: let latent connections above the threshold come back (the
        library's option; the reference never revives by threshold).
    adapt_h : bool
        ``lpss``: raise the threshold when a drop round falls short.
    finalize : {"auto", "exact", "none"}
        Adjust the masks once at ``end`` to exactly the target.
    pruning : {"semi", "hard"}
        Whether inactive connections keep a latent dual value (``lpss``).
    seed : int
        For random masks and SET's regrowth (identical on every DDP replica).
    mask_lr, lam, penalty
        The learned-mask methods' options (``scl``, ``concave``): the score
        step, the regulariser's weight, the concave method's penalty; None:
        the method's default.  A method that takes none of them refuses them.
    channel_sparsity
        ``chase``: the fraction of every layer's channels removed by ``end``
        (None: 0.3).
    mask_classifier : bool
        Also mask the final classifier (the last Linear/Conv layer), which
        ``lp_param_groups`` leaves unconstrained; its mask is re-applied after
        every step (the reference masks it: ``lpcore.methods.lpss.REFERENCE``).
    count_all_parameters : bool
        ``lpss``: its controller counts mask zeros over all the model's
        parameters (biases and unmasked weights included), as the reference
        does, instead of over the masked weights.
    """

    def __init__(self, model, optimizer, method="lpss", target_sparsity=0.9, init_sparsity=0.2,
                 begin=0, end=1000, frequency=40, h0=0.2, h_schedule="auto", delta=0.1,
                 pruning="semi", seed=0, controller="schedule", revive=True, finalize="auto",
                 adapt_h=True, mask_lr=None, lam=None, penalty=None, channel_sparsity=None,
                 mask_classifier=False, count_all_parameters=False):
        self.model, self.optimizer, self.method = model, optimizer, method
        self.mask_classifier = bool(mask_classifier)
        self.items = select_weights(model, optimizer, self.mask_classifier)
        if not self.items:
            raise ValueError("SparseTrainer: the model has no weight to sparsify")
        dense = None
        if count_all_parameters:
            if method != "lpss":
                raise ValueError("SparseTrainer: count_all_parameters is lpss's (its controller's "
                                 f"sparsity), not {method!r}'s")
            dense = sum(q.numel() for q in model.parameters()) - \
                sum(it.weight.numel() for it in self.items)
        extra = {k: v for k, v in (("mask_lr", mask_lr), ("lam", lam), ("penalty", penalty),
                                   ("channel_sparsity", channel_sparsity),
                                   ("dense_params", dense)) if v is not None}
        try:
            self.policy = lpcore.make_method(
                method, target_sparsity=target_sparsity, init_sparsity=init_sparsity,
                begin=begin, end=end, frequency=frequency, h0=h0, h_schedule=h_schedule,
                finalize=finalize, delta=delta, pruning=pruning, controller=controller,
                revive=revive, adapt_h=adapt_h, seed=seed, **extra)
        except (TypeError, ValueError) as e:
            raise type(e)(f"SparseTrainer: {e}") from None
        if self.policy.uses_latent and not isinstance(optimizer, LpSGD):
            raise TypeError(f"SparseTrainer: method={method!r} ranks latent values and needs "
                            "lpcore_torch.LpSGD")
        self.t = 0
        self._rewind_to = None
        for it in self.items:
            if "weight_mask" in it.module._buffers:
                # a second trainer would multiply its masks into the first one's
                raise ValueError(f"SparseTrainer: {it.name}.weight already has a mask "
                                 "(weight_mask): another SparseTrainer owns this model; "
                                 "a model takes one trainer")
        # LpSGD steps its constrained weights masked (the fused kernel zeroes the
        # masked entries and renormalises the rest): no per-step pass here
        self._masked_step = isinstance(optimizer, LpSGD) and all(
            self._p(it) is not None for it in self.items)
        masks = self.policy.init_masks([tuple(it.weight.shape) for it in self.items])
        for it, m in zip(self.items, masks):
            it.module.register_buffer("weight_mask", torch.from_numpy(m).to(it.weight.device))
            it.weight.register_hook(self._hook(it))
            bias = getattr(it.module, "bias", None)
            if self.policy.removes_channels and isinstance(bias, nn.Parameter):
                # a removed channel's bias stays zero: the channel outputs nothing
                bias.register_hook(lambda g, it=it: g * alive(it).to(g.dtype))
            if self._masked_step:
                optimizer.set_mask(it.weight, lambda mod=it.module: mod.weight_mask)
            if self.policy.pruning == "hard" and self._p(it) is not None:
                optimizer.reset_state(it.weight, np.flatnonzero(~m.reshape(-1)),
                                      momentum=False, dual=True)
        if self.policy.learns:
            gates = self.policy.gates()
            for it, g in zip(self.items, gates):
                it.theta = it.weight.detach().clone()
                it.gate = gate_tensor(g, it.weight)
        with torch.no_grad():
            apply_masks(self.items, self.optimizer, self._p)
            if self.policy.removes_channels:
                zero_dead_biases(self.items)

    # ------------------------------------------------------------------
    def _hook(self, it):
        def hook(grad):
            it.dense_grad = grad.detach()
            # dL/dtheta = dL/dw_eff * gate: the binary mask, or a learned method's gate
            return grad * (it.mask if it.gate is None else it.gate).to(grad.dtype)
        return hook

    @property
    def sparsity(self):
        """Exact-zero fraction of the masks over all sparse weights (counted on
        the masks' device)."""
        with _convert.stream_of([it.mask for it in self.items]):
            return lpcore.mask_sparsity([_convert.core_view(it.mask) for it in self.items])

    def weight_sparsity(self):
        """Exact-zero fraction of the sparse weights themselves."""
        z = sum(int((it.weight == 0).sum()) for it in self.items)
        return z / sum(it.weight.numel() for it in self.items)

    # ------------------------------------------------------------------
    @torch.no_grad()
    def step(self):
        """Advance one training step: evolve the topology when due (the
        method's schedule), adjust to the exact target at ``end`` if the
        method asks, re-apply the masks when they changed."""
        t = self.t
        changed = False
        learned = False
        if self.policy.learns and self.items[0].gate is not None:
            if self.policy.learning(t):
                self._learn(t)
                learned = True
            else:
                # the learning phase is over: the masks are binary from here on
                for it in self.items:
                    it.gate = None
        if t == self.policy.rewind_step:
            # the parameters to rewind to (IMP, concave); masks and buffers are not
            # rewound; a learned method's weights are its theta, not theta * gate
            self._rewind_to = {n: q.detach().clone() for n, q in self.model.named_parameters()}
            names = {id(q): n for n, q in self.model.named_parameters()}
            for it in self.items:
                if it.theta is not None:
                    self._rewind_to[names[id(it.weight)]] = it.theta.clone()
        if self.policy.due(t):
            self._all_reduce_dense_grads()
            self._decide(lambda layers: self.policy.update(t, layers), self.policy.uses_latent)
            changed = True
            if self.policy.rewinds(t):
                self._rewind()
        if self.policy.finalizes(t):
            self._decide(self.policy.adjust, False)
            changed = True
        if changed and self.policy.learns:
            for it in self.items:  # the ticket's weights are the (rewound) parameters
                it.gate = it.theta = None
        if (changed or not self._masked_step) and not learned:
            # LpSGD's masked step keeps its weights masked and on the sphere; a
            # new mask (or another optimizer) needs the masks applied here
            apply_masks(self.items, self.optimizer, self._p)
        if self.policy.removes_channels:
            zero_dead_biases(self.items)
        self.t += 1

    def _decide(self, decide, latent):
        """Install ``decide(layers)``; a device-ready method gets device arrays
        of CUDA tensors, on torch's stream (it copies counts, never a tensor)."""
        on_device = self.policy.device_ready
        with _convert.stream_of([it.weight for it in self.items]) if on_device else \
                contextlib.nullcontext():
            self._install(decide(self._layers(latent=latent, on_device=on_device)))

    def _learn(self, t):
        """One step of a learned-mask method: it trains its scores from the dense
        gradients and theta (this step's; CUDA tensors: on the device), theta takes
        the optimizer's step (the weight's move from theta * gate), the new masks
        are installed and the weights become theta * gate."""
        self._all_reduce_dense_grads()
        with _convert.stream_of([it.weight for it in self.items]):
            gates = self.policy.learn(t, self._layers(latent=False, theta=True, on_device=True))
        for it, g in zip(self.items, gates):
            it.theta.add_(it.weight.detach() - it.theta * it.gate)
            it.gate = gate_tensor(g, it.weight)
            new = (it.gate != 0).reshape(it.mask.shape)
            if _convert.on_gpu(changed := new ^ it.mask) or changed.any():  # (a GPU .any() waits)
                self._set_mask(it, new, changed)
        apply_masks(self.items, self.optimizer, self._p)

    def _rewind(self):
        """Every parameter back to its copy from the rewind step, the
        optimizer's state cleared (momentum of the new round starts at 0)."""
        if self._rewind_to is None:
            raise RuntimeError("SparseTrainer: the method rewinds, but the rewind step "
                               f"{self.policy.rewind_step} was never reached")
        params = dict(self.model.named_parameters())
        for n, v in self._rewind_to.items():
            params[n].copy_(v)
        if isinstance(self.optimizer, LpSGD):
            # LpSGD re-derives the state of the weights written here (fresh dual, no
            # momentum) at its next step; the plain tensors lose their momentum
            self.optimizer.clear_momentum()
        else:
            self.optimizer.state.clear()

    # the method's state, for logs and checkpoints
    phi = property(lambda self: getattr(self.policy, "phi", 1.0))
    h_gain = property(lambda self: getattr(self.policy, "h_gain", 1.0))
    finalize = property(lambda self: self.policy.finalize)

    def _all_reduce_dense_grads(self):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # identical decisions on every replica: average the dense gradients
            ws = torch.distributed.get_world_size()
            for it in self.items:
                if it.dense_grad is not None:
                    g = it.dense_grad.clone()
                    torch.distributed.all_reduce(g)
                    it.dense_grad = g / ws

    def _layers(self, latent, theta=False, on_device=False):
        """The method's view of every sparse weight: NumPy views of CPU
        tensors (no copies but the latent magnitudes); for CUDA tensors
        device arrays over their memory with ``on_device`` (the method
        decides on the device), else host copies.  ``theta``: a learned
        method's trainable weights as the latent values."""
        out = []
        for it in self.items:
            view, axis = it.layout
            dev = on_device and _convert.on_gpu(it.weight)

            def arr(t, view=view, dev=dev):
                return _convert.core_view(t.reshape(view)) if dev else host(t).reshape(view)
            if theta and it.theta is not None:
                lat = arr(it.theta)
            elif latent and self._p(it) is not None:
                # LpSGD's latent magnitudes, on the weight's device
                lat = self.optimizer.latent(it.weight)
                if lat is not None and not on_device and not isinstance(lat, np.ndarray):
                    lat = lat.copy_to_host()
            else:
                lat = None
            out.append(lpcore.methods.Layer(
                mask=arr(it.mask), weight=arr(it.weight), latent=lat,
                grad=None if it.dense_grad is None else arr(it.dense_grad), axis=axis))
        return out

    def _install(self, decisions):
        for it, d in zip(self.items, decisions):
            if d is not None:
                self._commit(it, *d)

    def _commit(self, it, new, grown):
        """Install the new mask ``new`` (the weight's view; NumPy or a device
        array) whose grown connections are the flat indices ``grown``."""
        dev = it.mask.device
        new = _convert.from_core(new, dev).to(dev).reshape(it.mask.shape)
        changed = it.mask & ~new
        changed.view(-1)[_convert.from_core(grown, dev).to(dev, torch.int64)] = True
        self._set_mask(it, new, changed)

    def _set_mask(self, it, new, changed):
        """Reset the optimizer state of the ``changed`` connections (dropped
        or grown) and install the boolean tensor ``new``, in torch ops on the
        mask's device: nothing is read back to the host."""
        if isinstance(self.optimizer, LpSGD):
            self.optimizer.reset_state(it.weight, changed)
            if self.policy.pruning == "hard" and self._p(it) is not None:
                self.optimizer.reset_state(it.weight, it.mask & ~new, momentum=False, dual=True)
        else:  # torch's SGD: its momentum buffer, in the weight's shape
            buf = self.optimizer.state.get(it.weight, {}).get("momentum_buffer")
            if buf is not None:
                buf.masked_fill_(changed.reshape(buf.shape), 0.0)
        it.mask.copy_(new)

    @property
    def channel_sparsity(self):
        """The fraction of output channels with no active connection (Chase
        removes channels; for the other methods this is whatever their masks
        left empty)."""
        with _convert.stream_of([it.mask for it in self.items]):
            return lpcore.channel_sparsity([_convert.core_view(it.mask).reshape(it.layout[0])
                                            for it in self.items], [it.layout[1] for it in self.items])

    def _p(self, it):
        for group in self.optimizer.param_groups:
            if any(q is it.weight for q in group["params"]):
                return group.get("p")
        return None

    # ------------------------------------------------------------------
    def state_dict(self):
        """Trainer state (the masks are in the model's state_dict), JSON-able;
        the parameters kept to rewind to are in :meth:`tensor_state`."""
        return {"t": self.t, **self.policy.state_dict()}

    def load_state_dict(self, state):
        self.t = int(state["t"])
        self.policy.load_state_dict(state)

    def tensor_state(self):
        """The tensors a checkpoint must also hold: the parameters kept to
        rewind to (IMP, concave; under their parameter names) and a learned
        method's scores and trainable weights (``lpcore.scores.<i>``,
        ``lpcore.theta.<i>``); ``{}`` for the other methods."""
        out = {} if self._rewind_to is None else dict(self._rewind_to)
        if self.policy.learns:
            for k, v in self.policy.array_state().items():
                out[f"lpcore.{k}"] = torch.from_numpy(np.array(v))
            for i, it in enumerate(self.items):
                if it.theta is not None:
                    out[f"lpcore.theta.{i}"] = it.theta.clone()
        return out

    def load_tensor_state(self, tensors):
        tensors = dict(tensors or {})
        ours = {k[len("lpcore."):]: tensors.pop(k) for k in list(tensors)
                if k.startswith("lpcore.")}
        self._rewind_to = {n: v.clone() for n, v in tensors.items()} if tensors else None
        if self.policy.learns:
            self.policy.load_array_state({k: host(v) for k, v in ours.items()
                                          if k.startswith("scores.")})
            active = self.policy.gate_active(self.t) and "theta.0" in ours
            gates = self.policy.gates() if active else [None] * len(self.items)
            for i, (it, g) in enumerate(zip(self.items, gates)):
                it.theta = ours[f"theta.{i}"].to(it.weight.device, copy=True) if active else None
                it.gate = None if g is None else gate_tensor(g, it.weight)

    def report(self):
        """Per-layer exact sparsity of the sparse weights: list of (name, sparsity)."""
        return [(f"{it.name}.weight", float((it.weight == 0).float().mean()))
                for it in self.items]
