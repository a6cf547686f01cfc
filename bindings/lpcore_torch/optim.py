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
                 weight_decay=0.0, lr_decay=0.0, variant="dual"):
        defaults = dict(lr=lr, p=p, momentum=momentum, dampening=dampening, nesterov=nesterov,
                        weight_decay=weight_decay, lr_decay=lr_decay, variant=variant,
                        maximize=False, foreach=None, fused=None, differentiable=False)
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
                    arr, back = _array(w, names[id(w)])
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
        """q's registered mask as lpcore's bool array of q's shape, or None."""
        hit = self.__dict__.get("_mask_map", {}).get(id(q))
        if hit is None or hit[0]() is not q:
            return None
        m = hit[1]() if callable(hit[1]) else hit[1]
        if not isinstance(m, torch.Tensor) or m.dtype is not torch.bool or m.shape != q.shape \
                or m.device != q.device:
            raise ValueError(f"lpcore_torch.LpSGD.step: the mask of {name} must be a bool "
                             f"tensor of its shape {tuple(q.shape)} on {q.device}; nothing was "
                             "updated")
        return C.core_view(m.contiguous())

    def _prepare(self, core, q, names, arr, cs):
        """Phase 1 of q's step on ``arr`` (q's weight in its grouped view) with
        its gradient and registered mask; errors name the parameter."""
        mk = self._mask_of(q, names[id(q)])
        try:
            return core.prepare(arr, _grad_array(q, names).reshape(arr.shape), cs,
                                mask=None if mk is None else mk.reshape(arr.shape))
        except ValueError as e:
            raise ValueError(f"{names[id(q)]}: {e}") from None

    def _fast(self):
        """id(weight) -> :class:`_Cached`: the core state of each constrained
        weight kept between steps (dropped on copy/pickle, like ``_seen``)."""
        return self.__dict__.setdefault("_fast_map", {})

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
        pending = []  # (core, handle, writeback, state, core state, fresh, param, kept)
        plain = []  # (group, params, grads)
        names = _LazyNames(self)
        fast = self._fast()
        # phase 1 everywhere: read and validate, write nothing
        for group in self.param_groups:
            core = self._cached_core(group)
            cons = {id(w): layout for w, layout in self._constrained(group)}
            pg, gg = [], []
            for q in group["params"]:
                if q.grad is None:
                    continue
                f = fast.get(id(q))
                if f is not None and f.valid(q, self.state[q]) and not self._changed(q):
                    # the cached state of this weight: views of its tensors, kept
                    # from the last step; only the gradient is new
                    h = self._prepare(core, q, names, f.arr, f.state)
                    pending.append((core, h, None, self.state[q], f.state, False, q, True))
                    continue
                # (_grad_array checks the gradient, naming it only when it refuses)
                if id(q) not in cons:
                    if not lpcore.all_finite(_grad_array(q, names)):
                        raise ValueError(f"lpcore_torch.LpSGD.step: the gradient of "
                                         f"{names[id(q)]} contains NaN or Inf; nothing was "
                                         "updated")
                    _check_state(self.state.get(q, {}), q, names, "momentum_buffer")
                    pg.append(q)
                    gg.append(q.grad)
                    continue
                view, axis = cons[id(q)]
                st = self.state[q]
                for key in ("dual", "momentum_buffer"):
                    _check_state(st, q, names, key)
                arr, back = _array(q, names[id(q)])
                axis = tuple(axis) if axis is not None else None
                fresh = self._changed(q)
                if fresh:
                    # the weights were replaced outside the optimizer: derive the state
                    # from them, on a copy (nothing is written before phase 2)
                    if not lpcore.all_finite(arr):
                        raise ValueError(f"lpcore_torch.LpSGD.step: {names[id(q)]} was changed "
                                         "outside the optimizer and contains NaN or Inf; "
                                         "nothing was updated")
                    arr, back = _array(q, names[id(q)], copy=True)
                    cs = core.init(arr.reshape(view), axis=axis)
                    cs.step = int(st["step"])
                else:
                    cs = lpcore.LpSGDState(
                        step=int(st["step"]), shape=view, axis=axis,
                        dual=_state_array(st, "dual"),
                        momentum_buffer=_state_array(st, "momentum_buffer"))
                h = self._prepare(core, q, names, arr.reshape(view), cs)
                pending.append((core, h, back, st, cs, fresh, q, False))
            if pg:
                plain.append((group, pg, gg))
        # phase 2: write
        seen = self._seen()
        for core, h, back, st, cs, fresh, q, kept in pending:
            core.apply(h)
            if back is not None:
                back()
            st["step"] = cs.step
            if fresh:
                st.pop("momentum_buffer", None)
                if cs.dual is not None:
                    st["dual"] = C.from_core(cs.dual, q.device)
            if cs.momentum_buffer is not None and "momentum_buffer" not in st:
                st["momentum_buffer"] = C.from_core(cs.momentum_buffer, q.device)
            seen[id(q)] = _fingerprint(q)
            if back is None and not kept:
                # stepped in place through views of its own memory: keep the
                # state for the next step (fp16/bf16 and non-contiguous
                # weights, stepped on copies, take the full path every step)
                fast[id(q)] = _Cached(q, st, cs, h.w)
        for group, pg, gg in plain:
            self._plain_sgd(group, pg, gg)

    def _plain_sgd(self, group, params, grads):
        """torch.optim.SGD's own update (same function, same arguments)."""
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


class _Cached:
    """A constrained weight's step state kept between steps: the NumPy view of
    the weight in its (G, n)-grouped shape and the core ``LpSGDState`` whose
    arrays are views of the optimizer's state tensors.  Valid while the
    weight object, its storage, its state tensors and step count are the
    ones it was made from."""

    __slots__ = ("ref", "ptr", "dual", "buf", "state", "arr")

    def __init__(self, q, st, cs, arr):
        self.ref = weakref.ref(q)
        self.ptr = q.data_ptr()
        self.dual, self.buf = st.get("dual"), st.get("momentum_buffer")
        self.state, self.arr = cs, arr

    def valid(self, q, st):
        return (self.ref() is q and q.data_ptr() == self.ptr and st.get("dual") is self.dual
                and st.get("momentum_buffer") is self.buf and st.get("step") == self.state.step)


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


def _array(q, name, copy=False):
    """(lpcore's array to update in place, writeback callable or None) for
    parameter q: a view of q's memory, or (fp16/bf16, non-contiguous, or
    ``copy``) a float32-or-q's-dtype contiguous copy on q's device written back
    by the callable."""
    check_tensor(q, name)
    if q.dtype in _HALF:
        t = q.detach().to(torch.float32)
    elif copy or not q.is_contiguous():
        t = q.detach().clone(memory_format=torch.contiguous_format)
    else:
        return C.core_view(q), None
    return C.core_view(t), (lambda: q.copy_(t))
