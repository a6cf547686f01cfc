"""The plain (``p=None``) parameters of ``lpcore_torch.LpSGD``: torch's own
SGD update, and on the GPU its fused SGD skipping on a found-inf flag that
lpcore's step shares (no synchronisation)."""
from __future__ import annotations

import torch
from torch.optim.sgd import sgd as _torch_sgd

from lpcore.optim import decayed_lr

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class PlainSteps:
    """The plain-parameter half of :class:`lpcore_torch.LpSGD` (a mixin)."""

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

    def _plain_finite(self, plain):
        """Whether every plain gradient is finite, in one torch call where all
        are dense CPU tensors of a float dtype (a loop of per-tensor checks
        cost about 5 us a tensor); False means: check them one by one (which
        also names the culprit)."""
        grads = [g for _, _, gg in plain for g in gg]
        check = getattr(torch, "_amp_foreach_non_finite_check_and_unscale_", None)
        if check is None or not all(g.layout is torch.strided and g.device.type == "cpu"
                                    and g.dtype in _FLOATS for g in grads):
            return False
        found = self.__dict__.get("_cpu_found")
        if found is None:  # (apart from the GPU flags, which check() reads)
            found = self._cpu_found = torch.zeros(1)
        found.zero_()
        # found-inf of torch's GradScaler with a scale of 1: reads the gradients
        # (writes them back unchanged, their version counters untouched)
        check(grads, found, self._one(found.device))  # (private: absent, the loop does it)
        return not bool(found.item())

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
