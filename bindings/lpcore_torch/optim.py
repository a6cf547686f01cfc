"""``lpcore_torch.LpSGD``: a torch.optim.Optimizer delegating to ``lpcore.LpSGD``."""
from __future__ import annotations

import contextlib
import weakref

import torch
from torch.optim import Optimizer

import lpcore

from . import _convert
from ._convert import check_tensor
from ._plain import PlainSteps
from ._plan import LazyNames, PlanHolder, grad_array, group_core
from ._state import (check_state, fingerprint, init_state, latent_values, load_checked,
                     zero_entries)


class LpSGD(PlainSteps, Optimizer):
    """Lp-spherical SGD for PyTorch models (a thin adapter over :class:`lpcore.LpSGD`).

    Parameter groups carry their own ``p``: a float constrains each output
    unit's fan-in of every tensor in the group to the unit Lp sphere; ``p=None``
    is plain SGD, bit-identical to ``torch.optim.SGD`` with the same settings
    (and ``lr_decay=0``).  In a constrained group, 1-D tensors take the plain
    SGD step too.  :func:`lpcore_torch.lp_param_groups` builds the groups the
    reference way and records each weight's fan-in layout (``fan_in``);
    without it a tensor's groups are its dim-0 slices.

    **Constrained weights are projected onto the sphere here, at construction**
    (in place; all-zero output units stay zero).

    The optimizer optimises the weights it finds: if a constrained weight was
    changed outside it since its last step (``model.load_state_dict``,
    ``copy_``, a DDP broadcast; seen through the tensor's version counter),
    the next step first projects the new values onto the sphere and derives
    the LpSGD state from them (a fresh dual, no momentum; the step count and
    so the lr decay go on).  Code that edits weights in a way that keeps the
    state valid (``SparseTrainer`` re-applying its masks) does it inside
    :meth:`keep_state`.  To resume, load the model's state before the
    optimizer's: :meth:`load_state_dict` takes the current weights as the
    ones its state belongs to.

    Parameters are updated in place (same storage, same Python objects).  The
    step is atomic: every gradient and state is validated before any parameter
    is written, so a non-finite gradient raises ``ValueError`` naming the
    parameter and group and leaves every parameter unchanged.

    fp16/bf16 parameters are computed in float32 and written back; their
    LpSGD state is kept in float32.  CPU and CUDA tensors: on the GPU the step runs
    lpcore's CUDA kernels on torch's current stream, on views of the tensors' memory.

    Parameters
    ----------
    params : iterable of tensors or dicts
    lr : float
    p : float or None
        Default exponent for groups that do not set one.
    momentum, dampening, nesterov, weight_decay
        As torch.optim.SGD.
    lr_decay : float
        Step size ``lr / (1 + lr_decay * t)`` (t = steps taken by the tensor).
    variant : {"dual", "primal", "riemannian"}

    Examples
    --------
    >>> import torch, lpcore_torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    >>> opt = lpcore_torch.LpSGD(lpcore_torch.lp_param_groups(net, p=1.3), lr=0.1, momentum=0.9)
    >>> loss = net(torch.randn(4, 8)).square().mean(); loss.backward(); opt.step()
    """

    def __init__(self, params, lr, p=None, momentum=0.0, dampening=0.0, nesterov=False,
                 weight_decay=0.0, lr_decay=0.0, variant="dual", check="auto"):
        if check not in ("auto", "immediate"):
            raise ValueError(f"lpcore_torch.LpSGD: check must be 'auto' or 'immediate', "
                             f"got {check!r}")
        defaults = dict(lr=lr, p=p, momentum=momentum, dampening=dampening, nesterov=nesterov,
                        weight_decay=weight_decay, lr_decay=lr_decay, variant=variant,
                        maximize=False, foreach=None, fused=None, differentiable=False,
                        check=check)
        super().__init__(params, defaults)
        with torch.no_grad(), _convert.stream_of(self._all_constrained()):
            init_state(self, self._names())
        self.accept_weights()

    def accept_weights(self, params=None):
        """Declare the current values of ``params`` (default: every constrained
        weight) consistent with the optimizer's state, so that the next step
        keeps the state instead of re-deriving it from the weights.  For code
        that edits weights in place the way the state allows, e.g. zeroing
        masked connections (their latent dual value is meant to stay)."""
        seen = self._seen()
        for w in (self._all_constrained() if params is None else params):
            seen[id(w)] = fingerprint(w)

    @contextlib.contextmanager
    def keep_state(self, params=None):
        """Context manager: in-place edits of ``params`` (default: every
        constrained weight) inside it keep the optimizer's state.  Weights that
        had already been changed outside the optimizer before it are not
        vouched for: their state is still re-derived at the next step."""
        ok = [w for w in (self._all_constrained() if params is None else params)
              if not self._changed(w)]
        yield
        self.accept_weights(ok)

    def _seen(self):
        """id(weight) -> its fingerprint when the optimizer last saw it.  Not
        part of torch's pickled optimizer state: a copy starts empty (and
        vouches for nothing until its first step)."""
        return self.__dict__.setdefault("_seen_map", {})

    def constrained_weights(self):
        """``[(weight, (view, fan-in axes))]``: every tensor this optimizer
        keeps on the unit sphere, with the layout its groups are taken in
        (the weight reshaped to ``view``, one group per index over the other
        axes)."""
        return [wl for g in self.param_groups for wl in self._constrained(g)]

    # what a trainer may ask of the state (never the state's layout itself)
    def grouped_state(self, weight):
        """The LpSGD state of the constrained ``weight`` in its (G, n) group
        layout: ``{"dual": tensor, "momentum_buffer": tensor}`` (the state's
        own tensors, detached; a key is absent while the state lacks it)."""
        self._layout_of(weight)
        st = self.state.get(weight, {})
        return {k: st[k].detach() for k in ("dual", "momentum_buffer") if k in st}

    def latent(self, weight):
        """Every connection's latent magnitude ``D_q(dual)`` (the magnitude
        semi-pruning ranks by; inactive connections keep theirs) in
        ``weight``'s fan-in view, on its device: a NumPy array for a CPU
        weight, a numba device array for a CUDA one (computed there, never
        copied to the host); None without a dual state."""
        pos, (view, _), p = self._layout_of(weight)
        dual = self.state.get(weight, {}).get("dual")
        return None if dual is None else latent_values(self, dual, pos, view, p)

    def reset_state(self, weight, index, momentum=True, dual=False):
        """Zero the momentum (and with ``dual=True`` the dual value) of the
        entries of ``weight`` at ``index``: flat positions (its own flat
        order), or a boolean tensor of its shape (nothing read back to the
        host): the connections a trainer dropped or grew.  ``weight`` may
        also be a plain parameter (its momentum only)."""
        st = self.state.get(weight, {})
        constrained = any(weight is w for w in self._all_constrained())
        pos = self._layout_of(weight)[0] if constrained else None
        for k, on in (("momentum_buffer", momentum), ("dual", dual)):
            if on and k in st:
                zero_entries(self, st[k], pos, index)

    def clear_momentum(self):
        """Drop every momentum buffer (a rewound run starts its momentum at
        zero); rewound constrained weights get a fresh state at the next step."""
        for st in self.state.values():
            st.pop("momentum_buffer", None)

    def _layout_of(self, weight):
        """(flat weight index -> flat (G, n) index, the layout, p) of a
        constrained weight (cached); ValueError for any other tensor."""
        cache = self.__dict__.setdefault("_positions", {})  # layout -> positions
        for g in self.param_groups:
            for w, layout in self._constrained(g):
                if w is weight:
                    if layout not in cache:
                        cache[layout] = lpcore.group_positions(*layout)
                    return cache[layout], layout, g["p"]
        raise ValueError("lpcore_torch.LpSGD: the tensor is not a constrained weight of this "
                         "optimizer")

    def _all_constrained(self):
        return [w for w, _ in self.constrained_weights()]

    def _changed(self, w):
        """Whether w was written outside this optimizer since it last saw it."""
        seen = self._seen().get(id(w))
        return seen is not None and seen != fingerprint(w)

    def set_mask(self, param, mask):
        """Step the constrained weight ``param`` masked (semi-pruning, in the
        fused kernel): its masked entries are written as exact zeros and each
        group's active entries put on the unit sphere at every step, while
        the dual state keeps every entry (see ``lpcore.LpSGD.step``).

        ``mask``: a bool tensor of ``param``'s shape and device, or a
        callable returning one at each step (e.g. ``lambda: module.weight_mask``,
        a buffer that ``model.to()`` may replace); None removes it.  The
        masks are not part of ``state_dict()`` (the model's buffers hold
        them) nor of a copy of the optimizer: the owner registers them again.
        :class:`lpcore_torch.SparseTrainer` does this for its weights.
        """
        if not any(param is w for w in self._all_constrained()):
            raise ValueError("lpcore_torch.LpSGD.set_mask: param is not a constrained weight "
                             "of this optimizer")
        masks = self.__dict__.setdefault("_mask_map", {})
        if mask is None:
            masks.pop(id(param), None)
        else:
            masks[id(param)] = (weakref.ref(param), mask)

    def _mask_of(self, q, names):
        """q's registered mask (a contiguous bool tensor of q's shape), or None
        (``names``: the parameter names, read only for an error)."""
        hit = self.__dict__.get("_mask_map", {}).get(id(q))
        if hit is None or hit[0]() is not q:
            return None
        m = hit[1]() if callable(hit[1]) else hit[1]
        if not isinstance(m, torch.Tensor) or m.dtype is not torch.bool or m.shape != q.shape \
                or m.device != q.device:
            raise ValueError(f"lpcore_torch.LpSGD.step: the mask of {names[id(q)]} must be a "
                             f"bool tensor of its shape {tuple(q.shape)} on {q.device}; nothing "
                             "was updated")
        return m if m.is_contiguous() else m.contiguous()

    def _cached_core(self, group):
        """The group's ``lpcore.LpSGD``, rebuilt (and so validated) only when
        its hyperparameters change (an LR scheduler's new lr included)."""
        key = tuple(group.get(k) for k in ("p", "lr", "momentum", "dampening", "nesterov",
                                            "weight_decay", "lr_decay", "variant", "maximize"))
        cores = self.__dict__.setdefault("_core_map", {})
        hit = cores.get(id(group))
        if hit is None or hit[0] != key:
            hit = cores[id(group)] = (key, self._core(group))
        return hit[1]

    def _names(self):
        """id(param) -> the name errors use: the group's ``names`` entry if
        given (``lp_param_groups`` records them), else its position."""
        names = {}
        for gi, group in enumerate(self.param_groups):
            given = group.get("names") or [None] * len(group["params"])
            for pi, q in enumerate(group["params"]):
                names[id(q)] = given[pi] or f"param_groups[{gi}]['params'][{pi}]"
        return names

    # ------------------------------------------------------------------
    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        g = self.param_groups[-1]
        n = len(g["params"])
        fan = g.get("fan_in")
        if fan is None:
            g["fan_in"] = [None] * n
        elif len(fan) != n:
            raise ValueError(f"lpcore_torch.LpSGD: group has {n} params but {len(fan)} fan_in "
                             "layouts")
        for q in g["params"]:
            check_tensor(q, "a parameter")
        self._core(g)  # validate the hyperparameters now

    _core = staticmethod(group_core)

    @staticmethod
    def _constrained(group):
        if group["p"] is None:
            return []
        out = []
        for w, layout in zip(group["params"], group["fan_in"]):
            if w.dim() < 2:
                continue
            if layout is None:
                layout = (tuple(w.shape), tuple(range(1, w.dim())))
            out.append((w, (tuple(layout[0]), None if layout[1] is None else tuple(layout[1]))))
        return out

    # ------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        """One step (optionally re-evaluating the loss with ``closure``)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with _convert.stream_of(self._all_constrained()):
            self._step()
        return loss

    def _step(self):
        names = LazyNames(self)
        holder = self._plan_for(names)  # the constrained weights with a gradient
        plain = []  # (group, params, grads)
        gpu = False
        for group in self.param_groups:
            cons = {id(w) for w, _ in self._constrained(group)}
            pg = [q for q in group["params"] if q.grad is not None and id(q) not in cons]
            for q in pg:
                check_state(self.state.get(q, {}), q, names, "momentum_buffer")
                gpu = gpu or q.device.type == "cuda" or _convert.on_gpu(q)
            if pg:
                plain.append((group, pg, [q.grad for q in pg]))
        mode = self._mode(holder, gpu)
        flag = None
        if mode == "immediate" and plain and not self._plain_finite(plain):
            for group, pg, gg in plain:  # plain gradients first: nothing is written if bad
                for q in pg:
                    if not lpcore.all_finite(grad_array(q, names)):
                        raise ValueError(f"lpcore_torch.LpSGD.step: the gradient of "
                                         f"{names[id(q)]} contains NaN or Inf; nothing was "
                                         "updated")
        elif plain:
            # on the device, without a synchronisation: torch's found-inf check of the
            # plain gradients, a flag lpcore's step reads (and sets when one of its own
            # groups is bad); torch's fused SGD then skips the plain update on it.  The
            # flag stays set (it is never zeroed in a step, so a CUDA graph replays
            # with it) until the error is raised.
            flag = self._flag(plain[0][1][0].device)
            torch._amp_foreach_non_finite_check_and_unscale_(
                [g for _, _, gg in plain for g in gg], flag, self._one(flag.device))
        if holder is not None:
            try:
                holder.step(self, names, mode, flag)
            except lpcore.FlagSet as e:
                self._raise_plain(e, names)
            except ValueError:
                self._clear_flags()  # raised: the next steps write again
                raise
        # the plain gradients of a step checked on the device: named if it was bad
        self._last_plain = [(q, g) for _, pg, gg in plain for q, g in zip(pg, gg)] \
            if flag is not None else []
        for group, pg, gg in plain:
            self._plain_sgd(group, pg, gg, None if mode == "immediate" else flag)

    def _mode(self, holder, gpu):
        """How this step learns of a bad input: at once on the CPU; on the GPU
        as the ``check`` option says ("none" while a CUDA graph is captured)."""
        on_gpu = gpu or (holder is not None and holder.gpu)
        if not on_gpu or self.defaults.get("check", "auto") == "immediate":
            return "immediate"
        if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            return "none"
        return "deferred"

    def check(self):
        """Raise now the error of an earlier step whose bad input was found on
        the GPU without a synchronisation (nothing of that step, or of any
        later one, was written); waits for the enqueued steps.  A no-op on the
        CPU, where every step checks at once."""
        holder = self.__dict__.get("_plan_holder")
        if holder is not None:
            try:
                with _convert.stream_of(holder.params):
                    holder.sync(self, LazyNames(self))
            except lpcore.FlagSet as e:
                self._raise_plain(e, LazyNames(self))
            except ValueError:
                self._clear_flags()
                raise
        for f in self.__dict__.get("_flag_map", {}).values():
            if bool(f.item()):  # a step of plain parameters only was stopped by its flag
                self._raise_plain(lpcore.FlagSet("an earlier step"), LazyNames(self))

    def state_dict(self):
        """torch's ``state_dict``, after :meth:`check` (on the GPU the step
        counts are brought back from the device first)."""
        self.check()
        return super().state_dict()

    def _plan_for(self, names):
        """The :class:`PlanHolder` of the constrained weights that have a
        gradient now: the one of the last step while the same weights, state
        tensors, layouts and hyperparameters (but the lr) come back and no
        weight was changed outside, else a new one."""
        items = []
        for group in self.param_groups:
            core = None
            for w, layout in self._constrained(group):
                if w.grad is None:
                    continue
                if core is None:
                    core = self._cached_core(group)
                items.append((group, core, w, layout))
        old = self.__dict__.get("_plan_holder")
        if not items:
            return None
        if old is not None and old.valid(self, items):
            return old
        if old is not None:
            try:
                old.sync(self, names)
            finally:
                self._plan_holder = None
        holder = self._plan_holder = PlanHolder(self, items, names)
        return holder

    def load_state_dict(self, state_dict):
        """torch's loader, keeping the LpSGD state exactly as saved (fp16/bf16
        parameters' state stays float32); a state that does not fit (another
        model's shapes or layouts) is refused before anything is loaded."""
        load_checked(self, state_dict, super().load_state_dict)

