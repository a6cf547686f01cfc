"""``lpcore_torch.LpSGD``: a torch.optim.Optimizer delegating to ``lpcore.LpSGD``."""
from __future__ import annotations

import contextlib
import math
import weakref

import torch
from torch.optim import Optimizer
from torch.optim.sgd import sgd as _torch_sgd

import lpcore
from lpcore.optim import decayed_lr

from . import _convert as C
from ._convert import _HALF, check_tensor


class LpSGD(Optimizer):
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
        names = self._names()
        with torch.no_grad(), C.stream_of(self._all_constrained()):
            todo = []
            # validate every constrained weight first: nothing is projected
            # unless all of them can be
            for group in self.param_groups:
                core = self._core(group)
                for w, layout in self._constrained(group):
                    if "step" in self.state[w]:
                        continue
                    copy = _work_copy(w, names[id(w)])
                    arr = C.core_view(w if copy is None else copy)
                    back = None if copy is None else (lambda w=w, c=copy: w.copy_(c))
                    if not lpcore.all_finite(arr):
                        raise ValueError(f"lpcore_torch.LpSGD: {names[id(w)]} contains NaN or "
                                         "Inf; no parameter was changed")
                    todo.append((core, w, layout, arr, back))
            for core, w, layout, arr, back in todo:
                cs = core.init(arr.reshape(layout[0]), axis=layout[1])
                if back is not None:
                    back()
                st = self.state[w]
                st["step"] = 0
                if cs.dual is not None:
                    st["dual"] = C.from_core(cs.dual, w.device)
        self.accept_weights()

    def accept_weights(self, params=None):
        """Declare the current values of ``params`` (default: every constrained
        weight) consistent with the optimizer's state, so that the next step
        keeps the state instead of re-deriving it from the weights.  For code
        that edits weights in place the way the state allows, e.g. zeroing
        masked connections (their latent dual value is meant to stay)."""
        seen = self._seen()
        for w in (self._all_constrained() if params is None else params):
            seen[id(w)] = _fingerprint(w)

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

    def _all_constrained(self):
        return [w for w, _ in self.constrained_weights()]

    def _changed(self, w):
        """Whether w was written outside this optimizer since it last saw it."""
        seen = self._seen().get(id(w))
        return seen is not None and seen != _fingerprint(w)

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

    def _mask_of(self, q, name):
        """q's registered mask (a contiguous bool tensor of q's shape), or None."""
        hit = self.__dict__.get("_mask_map", {}).get(id(q))
        if hit is None or hit[0]() is not q:
            return None
        m = hit[1]() if callable(hit[1]) else hit[1]
        if not isinstance(m, torch.Tensor) or m.dtype is not torch.bool or m.shape != q.shape \
                or m.device != q.device:
            raise ValueError(f"lpcore_torch.LpSGD.step: the mask of {name} must be a bool "
                             f"tensor of its shape {tuple(q.shape)} on {q.device}; nothing was "
                             "updated")
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

    @staticmethod
    def _core(group):
        fn = "lpcore_torch.LpSGD"
        if group.get("maximize"):
            if group["p"] is not None:
                raise ValueError(f"{fn}: maximize=True is not supported in a constrained "
                                 "(p is not None) group; minimise the negated objective")
        if group["p"] is None:
            # what torch.optim.SGD refuses, refused here too
            for k in ("lr", "momentum", "weight_decay"):
                v = group[k]
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0 \
                        or v != v or v == float("inf"):
                    raise ValueError(f"{fn}: {k} must be a finite number >= 0, got {v!r}")
            if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
                raise ValueError(f"{fn}: nesterov requires momentum > 0 and dampening = 0")
            return None
        return lpcore.LpSGD(group["p"], group["lr"], momentum=group["momentum"],
                            dampening=group["dampening"], nesterov=group["nesterov"],
                            weight_decay=group["weight_decay"], lr_decay=group["lr_decay"],
                            variant=group["variant"])

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
        with C.stream_of(self._all_constrained()):
            self._step()
        return loss

    def _step(self):
        names = _LazyNames(self)
        holder = self._plan_for(names)  # the constrained weights with a gradient
        plain = []  # (group, params, grads)
        gpu = False
        for group in self.param_groups:
            cons = {id(w) for w, _ in self._constrained(group)}
            pg = [q for q in group["params"] if q.grad is not None and id(q) not in cons]
            for q in pg:
                _check_state(self.state.get(q, {}), q, names, "momentum_buffer")
                gpu = gpu or q.device.type == "cuda" or C.on_gpu(q)
            if pg:
                plain.append((group, pg, [q.grad for q in pg]))
        mode = self._mode(holder, gpu)
        flag = None
        if mode == "immediate":
            for group, pg, gg in plain:  # plain gradients first: nothing is written if bad
                for q in pg:
                    if not lpcore.all_finite(_grad_array(q, names)):
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

    def _flag(self, device):
        """The float32 found-inf flag of the plain gradients (made once per device)."""
        flags = self.__dict__.setdefault("_flag_map", {})
        f = flags.get(device)
        if f is None:
            f = flags[device] = torch.zeros(1, dtype=torch.float32, device=device)
        return f

    def _clear_flags(self):
        for f in self.__dict__.get("_flag_map", {}).values():
            f.zero_()

    def _one(self, device):
        ones = self.__dict__.setdefault("_one_map", {})
        if device not in ones:
            ones[device] = torch.ones(1, dtype=torch.float32, device=device)
        return ones[device]

    def _raise_plain(self, err, names):
        """A step was stopped by the plain gradients' flag: name the culprit
        (among the gradients of the step that set it, kept for this)."""
        when = "an earlier step: " if "earlier step" in str(err) else ""
        self._clear_flags()  # raised now: later steps write again
        for q, g in self.__dict__.get("_last_plain", []):
            if not bool(torch.isfinite(g).all()):
                raise ValueError(f"lpcore_torch.LpSGD.step: {when}the gradient of "
                                 f"{names[id(q)]} contains NaN or Inf; nothing was "
                                 "updated") from None
        raise ValueError(f"lpcore_torch.LpSGD.step: {when}a plain gradient contained NaN or "
                         "Inf; nothing was updated") from None

    def check(self):
        """Raise now the error of an earlier step whose bad input was found on
        the GPU without a synchronisation (nothing of that step, or of any
        later one, was written); waits for the enqueued steps.  A no-op on the
        CPU, where every step checks at once."""
        holder = self.__dict__.get("_plan_holder")
        if holder is not None:
            try:
                with C.stream_of(holder.params):
                    holder.sync(self, _LazyNames(self))
            except lpcore.FlagSet as e:
                self._raise_plain(e, _LazyNames(self))
            except ValueError:
                self._clear_flags()
                raise
        for f in self.__dict__.get("_flag_map", {}).values():
            if bool(f.item()):  # a step of plain parameters only was stopped by its flag
                self._raise_plain(lpcore.FlagSet("an earlier step"), _LazyNames(self))

    def state_dict(self):
        """torch's ``state_dict``, after :meth:`check` (on the GPU the step
        counts are brought back from the device first)."""
        self.check()
        return super().state_dict()

    def _plan_for(self, names):
        """The :class:`_PlanHolder` of the constrained weights that have a
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
        holder = self._plan_holder = _PlanHolder(self, items, names)
        return holder

    def _plain_sgd(self, group, params, grads, flag=None):
        """torch.optim.SGD's own update (same function, same arguments); on the
        GPU without a check, torch's fused SGD skipping on ``flag`` (momentum
        buffers made as zeros when first needed, so that a skipped first step
        leaves valid ones)."""
        if flag is not None:
            self._fused_sgd(group, params, grads, flag)
            return
        bufs = [self.state[q].get("momentum_buffer") for q in params]
        lr = group["lr"]
        if group["lr_decay"]:
            # per-tensor step counts differ only if tensors joined late: use each one's
            for q, g, b in zip(params, grads, bufs):
                t = self.state[q].get("step", 0)
                self._sgd([q], [g], [b], group, decayed_lr(lr, group["lr_decay"], t))
                self.state[q]["step"] = t + 1
            return
        self._sgd(params, grads, bufs, group, lr)
        for q in params:
            self.state[q]["step"] = self.state[q].get("step", 0) + 1

    def _fused_sgd(self, group, params, grads, flag):
        mom = group["momentum"]
        calls = {}  # (lr, first momentum step) -> indices: one fused call each
        for i, q in enumerate(params):
            st = self.state[q]
            first = mom != 0 and "momentum_buffer" not in st
            if first:
                st["momentum_buffer"] = torch.zeros_like(q, memory_format=torch.preserve_format)
            lr = decayed_lr(group["lr"], group["lr_decay"], st.get("step", 0))
            calls.setdefault((lr, first), []).append(i)
        for (lr, first), sel in calls.items():
            torch._fused_sgd_([params[i] for i in sel], [grads[i] for i in sel],
                              [] if mom == 0 else
                              [self.state[params[i]]["momentum_buffer"] for i in sel],
                              weight_decay=group["weight_decay"], momentum=mom, lr=lr,
                              dampening=group["dampening"], nesterov=group["nesterov"],
                              maximize=bool(group["maximize"]), is_first_step=first,
                              grad_scale=None, found_inf=flag)
        for q in params:
            self.state[q]["step"] = self.state[q].get("step", 0) + 1

    def _sgd(self, params, grads, bufs, group, lr):
        _torch_sgd(params, grads, bufs, weight_decay=group["weight_decay"],
                   momentum=group["momentum"], lr=lr, dampening=group["dampening"],
                   nesterov=group["nesterov"], maximize=bool(group["maximize"]),
                   has_sparse_grad=False,
                   foreach=group["foreach"], fused=group["fused"], grad_scale=None,
                   found_inf=None)
        if group["momentum"] != 0:
            for q, b in zip(params, bufs):
                self.state[q]["momentum_buffer"] = b

    def load_state_dict(self, state_dict):
        """torch's loader, keeping the LpSGD state exactly as saved.

        torch casts floating state tensors to the parameter's dtype on load;
        the LpSGD state of fp16/bf16 parameters is float32, so the saved
        tensors are taken as they are (a float32 copy on the parameter's
        device), never through the parameter's dtype.  A state whose tensors
        do not match their parameters' shapes (another model's) is refused
        before anything is loaded.
        """
        saved = state_dict.get("state", {})
        groups = state_dict.get("param_groups", [])
        if len(groups) != len(self.param_groups):
            raise ValueError(f"lpcore_torch.LpSGD.load_state_dict: the state has {len(groups)} "
                             f"parameter groups, this optimizer {len(self.param_groups)}")
        names = self._names()
        exact = {}
        for gi, (gs, g) in enumerate(zip(groups, self.param_groups)):
            if len(gs["params"]) != len(g["params"]):
                raise ValueError("lpcore_torch.LpSGD.load_state_dict: a group's parameter "
                                 f"count differs ({len(gs['params'])} saved, {len(g['params'])})")
            # the groups' layouts come from the model, never from the checkpoint: a
            # different layout would regroup the weights silently
            fan = gs.get("fan_in", [None] * len(gs["params"]))
            for pi, (a, b) in enumerate(zip(fan, g["fan_in"])):
                if _layout_key(a) != _layout_key(b):
                    raise ValueError(
                        f"lpcore_torch.LpSGD.load_state_dict: the fan-in layout of "
                        f"{names[id(g['params'][pi])]} in the state ({a!r}) differs from this "
                        f"optimizer's ({b!r}) in group {gi}; nothing was loaded")
            lay = {id(w): v for w, v in self._constrained(g)}
            for idx, q in zip(gs["params"], g["params"]):
                st = saved.get(idx, {})
                for key in ("dual", "momentum_buffer"):
                    t = st.get(key)
                    if t is None:
                        continue
                    want = (_layout_shape(lay[id(q)]) if id(q) in lay
                            else tuple(q.shape))
                    if not torch.is_tensor(t) or tuple(t.shape) != want:
                        raise ValueError(
                            f"lpcore_torch.LpSGD.load_state_dict: state {key!r} of "
                            f"{names[id(q)]} has shape "
                            f"{tuple(t.shape) if torch.is_tensor(t) else type(t).__name__}, "
                            f"expected {want}; nothing was loaded")
                    if id(q) in lay:
                        exact[(id(q), key)] = t
                step = st.get("step")
                if step is not None:
                    v = step.item() if torch.is_tensor(step) else step
                    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
                    if not (ok and math.isfinite(v) and float(v) == int(v) and int(v) >= 0):
                        raise ValueError(f"lpcore_torch.LpSGD.load_state_dict: step of "
                                         f"{names[id(q)]} must be an integer >= 0, got {v!r}")
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            for q, _ in self._constrained(group):
                st = self.state.get(q, {})
                for k in ("dual", "momentum_buffer"):
                    if (id(q), k) in exact:
                        st[k] = exact[(id(q), k)].detach().to(
                            device=q.device, dtype=_state_dtype(q), copy=True).contiguous()
        self.accept_weights()  # the loaded state belongs to the weights as they are now


class _PlanHolder:
    """The constrained weights of the last steps as one ``lpcore.StepPlan``
    (built once, reused while nothing it was built from changes) and what the
    binding adds around it: float32 copies of fp16/bf16 and non-contiguous
    weights, the lr of each weight as last uploaded, the registered masks'
    addresses."""

    def __init__(self, opt, items, names):
        fn = "lpcore_torch.LpSGD.step"
        self.items = items
        self.params = [w for _, _, w, _ in items]
        self.gpu = any(C.on_gpu(w) for w in self.params)
        entries, self.copies, self.fresh, self.cstates = [], [], [], []
        for group, core, q, (view, axis) in items:
            st = opt.state[q]
            for key in ("dual", "momentum_buffer"):
                _check_state(st, q, names, key)
            fresh = opt._changed(q)
            copy = _work_copy(q, names[id(q)], force=fresh)
            arr = C.core_view(q if copy is None else copy).reshape(view)
            if fresh:
                # the weights were replaced outside the optimizer: the state is derived
                # from them, on a copy written back only once the step succeeds
                if not lpcore.all_finite(arr):
                    raise ValueError(f"lpcore_torch.LpSGD.step: {names[id(q)]} was changed "
                                     "outside the optimizer and contains NaN or Inf; "
                                     "nothing was updated")
                cs = core.init(arr, axis=axis)
                cs.step = int(st["step"])
            else:
                cs = lpcore.LpSGDState(step=int(st["step"]), shape=view, axis=axis,
                                       dual=_state_array(st, "dual"),
                                       momentum_buffer=_state_array(st, "momentum_buffer"))
            m = opt._mask_of(q, names[id(q)])
            mask = None if m is None else C.core_view(m).reshape(view)
            entries.append(core._entry(arr, cs, fn, mask, in_place=True))
            self.copies.append(copy)
            self.fresh.append(fresh)
            self.cstates.append(cs)
        self.plan = lpcore.StepPlan(entries, fn="lpcore_torch.LpSGD",
                                    names=[names[id(q)] for q in self.params])
        self.lrs = [core.lr for _, core, _, _ in items]
        self.keys = [self._key(opt, g, c, q, lay) for g, c, q, lay in items]

    @staticmethod
    def _key(opt, group, core, q, layout):
        st = opt.state.get(q, {})
        return (id(q), q.data_ptr(), q.dtype, id(st.get("dual")), id(st.get("momentum_buffer")),
                layout, core.p, core.momentum, core.dampening, core.nesterov,
                core.weight_decay, core.lr_decay, core.variant)

    def valid(self, opt, items):
        if len(items) != len(self.items) or any(f for f in self.fresh):
            return False
        for (g, c, q, lay), key in zip(items, self.keys):
            if self._key(opt, g, c, q, lay) != key or opt._changed(q):
                return False
        return True

    def step(self, opt, names, mode, flag):
        grads, keep = [], []
        for k, q in enumerate(self.params):
            g = q.grad
            want = q.dtype if self.copies[k] is None else self.copies[k].dtype
            if g.layout is not torch.strided or g.dtype is not want or not g.is_contiguous() \
                    or g.device != q.device:
                check_tensor(g, f"the gradient of {names[id(q)]}")
                g = g.detach().to(dtype=want, device=q.device).contiguous()
            keep.append(g)
            grads.append(C.address(g))
        masks = []
        for q in self.params:
            m = opt._mask_of(q, names[id(q)])
            masks.append(0 if m is None else C.address(m))
            if m is not None:
                keep.append(m)
        for k, (group, _, _, _) in enumerate(self.items):
            if group["lr"] != self.lrs[k]:
                self.plan.set_lr(k, group["lr"])
                self.lrs[k] = group["lr"]
        for q, copy, fresh in zip(self.params, self.copies, self.fresh):
            if copy is not None and not fresh:  # a fresh copy holds the projected weights
                copy.copy_(q)
        self.keep = keep  # the tensors the enqueued kernels read stay alive
        try:
            self.plan.step(grads, masks=masks, check=mode,
                           arrays=lambda: [C.core_view(g) for g in keep[:len(grads)]],
                           flag=0 if flag is None else C.address(flag))
        finally:
            self._states(opt)
        seen = opt._seen()
        for k, q in enumerate(self.params):
            if self.copies[k] is not None:
                q.copy_(self.copies[k])
            st = opt.state[q]
            cs = self.cstates[k]
            if self.fresh[k]:
                st.pop("momentum_buffer", None)
                if cs.dual is not None:
                    st["dual"] = C.from_core(cs.dual, q.device)
            if cs.momentum_buffer is not None and "momentum_buffer" not in st:
                st["momentum_buffer"] = C.from_core(cs.momentum_buffer, q.device)
            seen[id(q)] = _fingerprint(q)
        if any(self.fresh):
            opt._plan_holder = None  # next time: views of the weights and the new state
        else:  # a first momentum buffer installed above is the plan's own
            self.keys = [self._key(opt, g, c, q, lay) for g, c, q, lay in self.items]

    def _states(self, opt):
        for q, cs in zip(self.params, self.cstates):
            opt.state[q]["step"] = cs.step

    def sync(self, opt, names):
        """Raise a pending error and bring the step counts back (GPU)."""
        try:
            self.plan.sync()
        finally:
            self._states(opt)


class _LazyNames:
    """The parameter names of error messages, computed on first use only."""

    def __init__(self, opt):
        self._opt, self._map = opt, None

    def __getitem__(self, key):
        if self._map is None:
            self._map = self._opt._names()
        return self._map[key]


_FULL = (torch.float32, torch.float64)  # the dtypes NumPy views directly


def _grad_array(q, names):
    """q's gradient as lpcore's array of q's dtype (a view when it is one)."""
    g = q.grad
    if g.layout is torch.strided and g.dtype is q.dtype and g.dtype in _FULL \
            and g.is_contiguous():
        return C.core_view(g)
    check_tensor(g, f"the gradient of {names[id(q)]}")
    # contiguous: the step reshapes it to the weight's (G, n) view, which a
    # device array does only without a copy
    g = g.detach().to(torch.float32) if g.dtype in _HALF else g
    return C.core_view(g.contiguous())


def _fingerprint(w):
    """What changes when a tensor is written outside the optimizer: torch's
    version counter (in-place ops, ``copy_``, ``load_state_dict``) and the
    storage (``w.data = ...``)."""
    return (w._version, w.data_ptr())


def _layout_key(layout):
    """A fan-in layout as comparable tuples (lists after a save/load round trip)."""
    if layout is None:
        return None
    try:
        view, axis = layout
        return (tuple(int(v) for v in view), None if axis is None else tuple(int(a) for a in axis))
    except (TypeError, ValueError):
        return ("invalid", repr(layout))


def _layout_shape(layout):
    """The (G, n) shape of a constrained parameter's LpSGD state."""
    from lpcore.layout import Groups
    grp = Groups(layout[0], layout[1], "lpcore_torch.LpSGD")
    return (grp.G, grp.n)


def _check_state(st, q, names, key):
    """A state tensor that cannot belong to q (e.g. loaded from another model)."""
    t = st.get(key)
    if t is None:
        return
    if t.numel() != q.numel():  # plain: q's shape; constrained: its (G, n) layout
        raise ValueError(f"lpcore_torch.LpSGD.step: state {key!r} of {names[id(q)]} has shape "
                         f"{tuple(t.shape)}, which does not fit the parameter's "
                         f"{tuple(q.shape)}; nothing was updated")


def _state_dtype(q):
    return torch.float32 if q.dtype in _HALF else q.dtype


def _state_array(st, key):
    t = st.get(key)
    if t is None:
        return None
    if not t.is_contiguous():
        st[key] = t = t.contiguous()
    return C.core_view(t)


def _work_copy(q, name, force=False):
    """None when lpcore can step ``q`` in place; else (fp16/bf16,
    non-contiguous, or ``force``) a float32-or-q's-dtype contiguous copy on
    q's device that the step works on and the binding writes back."""
    check_tensor(q, name)
    if q.dtype in _HALF:
        return q.detach().to(torch.float32)
    if force or not q.is_contiguous():
        return q.detach().clone(memory_format=torch.contiguous_format)
    return None
