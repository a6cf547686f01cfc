"""The constrained weights of an LpSGD step as one ``lpcore.StepPlan``
(:class:`PlanHolder`), and the parameter names of error messages."""
from __future__ import annotations

import torch

import lpcore

from . import _convert
from ._convert import _HALF, check_tensor
from ._state import check_state, fingerprint, state_array, work_copy

class PlanHolder:
    """The constrained weights of the last steps as one ``lpcore.StepPlan``
    (built once, reused while nothing it was built from changes) and what the
    binding adds around it: float32 copies of fp16/bf16 and non-contiguous
    weights, the lr of each weight as last uploaded, the registered masks'
    addresses."""

    def __init__(self, opt, items, names):
        fn = "lpcore_torch.LpSGD.step"
        self.items = items
        self.params = [w for _, _, w, _ in items]
        self.gpu = any(_convert.on_gpu(w) for w in self.params)
        entries, self.copies, self.fresh, self.cstates = [], [], [], []
        for group, core, q, (view, axis) in items:
            st = opt.state[q]
            for key in ("dual", "momentum_buffer"):
                check_state(st, q, names, key)
            fresh = opt._changed(q)
            copy = work_copy(q, names[id(q)], force=fresh)
            arr = _convert.core_view(q if copy is None else copy).reshape(view)
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
                                       dual=state_array(st, "dual"),
                                       momentum_buffer=state_array(st, "momentum_buffer"))
            m = opt._mask_of(q, names)
            mask = None if m is None else _convert.core_view(m).reshape(view)
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
            grads.append(_convert.address(g))
        masks = []
        for q in self.params:
            m = opt._mask_of(q, names)
            masks.append(0 if m is None else _convert.address(m))
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
                           arrays=lambda: [_convert.core_view(g) for g in keep[:len(grads)]],
                           flag=0 if flag is None else _convert.address(flag))
        finally:
            self._states(opt)
        seen = opt._seen()
        installed = False
        for k, q in enumerate(self.params):
            if self.copies[k] is not None:
                q.copy_(self.copies[k])
            st = opt.state[q]
            cs = self.cstates[k]
            if self.fresh[k]:
                st.pop("momentum_buffer", None)
                if cs.dual is not None:
                    st["dual"] = _convert.from_core(cs.dual, q.device)
            if cs.momentum_buffer is not None and "momentum_buffer" not in st:
                st["momentum_buffer"] = _convert.from_core(cs.momentum_buffer, q.device)
                installed = True
            seen[id(q)] = fingerprint(q)
        if any(self.fresh):
            opt._plan_holder = None  # next time: views of the weights and the new state
        elif installed:  # a first momentum buffer installed above is the plan's own
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


class LazyNames:
    """The parameter names of error messages, computed on first use only."""

    def __init__(self, opt):
        self._opt, self._map = opt, None

    def __getitem__(self, key):
        if self._map is None:
            self._map = self._opt._names()
        return self._map[key]


FULL = (torch.float32, torch.float64)  # the dtypes NumPy views directly


def grad_array(q, names):
    """q's gradient as lpcore's array of q's dtype (a view when it is one)."""
    g = q.grad
    if g.layout is torch.strided and g.dtype is q.dtype and g.dtype in FULL \
            and g.is_contiguous():
        return _convert.core_view(g)
    check_tensor(g, f"the gradient of {names[id(q)]}")
    # contiguous: the step reshapes it to the weight's (G, n) view, which a
    # device array does only without a copy
    g = g.detach().to(torch.float32) if g.dtype in _HALF else g
    return _convert.core_view(g.contiguous())


def group_core(group):
    """The group's ``lpcore.LpSGD`` (None for a plain group), its
    hyperparameters validated."""
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
