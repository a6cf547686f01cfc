"""LpSGD: gradient descent with every group (neuron) on the unit Lp sphere.

A framework-independent optimizer in the style of an (init, step) pair: the
hyperparameters live on the :class:`LpSGD` object (validated once), the
per-tensor state in an :class:`LpSGDState` of plain arrays.  Weights and state
are updated in place; the tensors of a step go through a :class:`StepPlan`:
one kernel call for all of them on the CPU (``lpcore/kernels/lpsgd.py``),
three launches on the GPU (``lpcore/kernels/cuda/lpsgd.py``).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np


from . import _device
from ._backend import cuda_backend, for_arrays
from ._validate import check_p
from .kernels import lpsgd as _k
from .layout import groups
from .norms import normalize
from .sphere import to_dual

__all__ = ["LpSGD", "LpSGDState", "StepPlan", "FlagSet"]

_VARIANTS = {"dual": _k.DUAL, "primal": _k.PRIMAL, "riemannian": _k.RIEMANNIAN}


@dataclass
class LpSGDState:
    """Per-tensor LpSGD state: plain arrays and scalars.

    Attributes
    ----------
    step : int
        Steps taken so far (the ``t`` of the learning-rate decay).
    shape : tuple of int
        The weight's shape.
    axis : tuple of int or None
        The reduced axes (one group per index over the remaining axes).
    dual : ndarray or None
        ``dual`` variant only: the dual vector ``v = D_p(w)``, shape (groups, n).
    momentum_buffer : ndarray or None
        The momentum buffer, shape (groups, n); None until the first step with
        momentum (which copies the direction, as torch.optim.SGD does).
    """

    step: int
    shape: tuple
    axis: tuple | None
    dual: np.ndarray | None = None
    momentum_buffer: np.ndarray | None = None
    #: the step plan of LpSGD.step / step_many, kept between steps (not part of
    #: the state's value)
    _work: object = field(default=None, repr=False, compare=False)

    def __getstate__(self):  # copies and pickles leave the scratch behind
        d = dict(self.__dict__)
        d["_work"] = None
        return d

    def to_dict(self):
        """A dict of NumPy arrays (for ``np.savez`` and the like); GPU state is
        copied to the host."""
        d = {"step": np.array(self.step, dtype=np.int64),
             "shape": np.array(self.shape, dtype=np.int64),
             "axis": np.array([] if self.axis is None else self.axis, dtype=np.int64),
             "axis_is_none": np.array(self.axis is None)}
        for name in ("dual", "momentum_buffer"):
            a = getattr(self, name)
            if a is not None:
                d[name] = cuda_backend().to_numpy(a) if _device.is_device(a) else a.copy()
        return d

    def to_device(self):
        """This state with its arrays copied to the GPU (for a weight on the GPU,
        e.g. after :meth:`from_dict`)."""
        cu = _device.cuda()
        mv = {n: (cu.to_device(np.ascontiguousarray(a)) if a is not None and not _device.is_device(a)
                  else a) for n, a in (("dual", self.dual), ("momentum_buffer", self.momentum_buffer))}
        return LpSGDState(step=self.step, shape=self.shape, axis=self.axis, **mv)

    @classmethod
    def from_dict(cls, d):
        """Inverse of :meth:`to_dict`.  Refuses (``ValueError`` naming the key)
        a step or shape entry that is not a whole number >= 0 (a tampered or
        foreign state); nothing is truncated."""
        fn = "LpSGDState.from_dict"
        try:
            step = _whole(d["step"], "step", fn, scalar=True)
            shape = _whole(d["shape"], "shape", fn)
            axis = None if bool(np.asarray(d["axis_is_none"])) else \
                tuple(int(a) for a in _whole(d["axis"], "axis", fn, signed=True))
            return cls(step=int(step), shape=tuple(int(s) for s in shape), axis=axis,
                       dual=np.array(d["dual"]) if "dual" in d else None,
                       momentum_buffer=(np.array(d["momentum_buffer"])
                                        if "momentum_buffer" in d else None))
        except KeyError as e:
            raise ValueError(f"{fn}: missing key {e}") from None


def _whole(v, name, fn, scalar=False, signed=False):
    """v as an integer array (0-d if ``scalar``): whole, finite and (unless
    ``signed``) >= 0, else ``ValueError`` naming ``name``."""
    a = np.asarray(v)
    bad = a.dtype.kind not in "iuf" or (scalar and a.ndim != 0) or (not scalar and a.ndim != 1)
    if not bad and a.dtype.kind == "f":
        bad = not (np.all(np.isfinite(a)) and np.all(a == np.round(a)))
    if not bad and not signed:
        bad = bool(np.any(a < 0))
    if bad:
        what = "an integer" if scalar else "a 1-D array of integers"
        raise ValueError(f"{fn}: {name} must be {what}{'' if signed else ' >= 0'}, got {v!r}")
    return a.astype(np.int64)


def _nonneg(x, name, fn):
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real) or not math.isfinite(x) \
            or x < 0:
        raise ValueError(f"{fn}: {name} must be a finite number >= 0, got {x!r}")
    return float(x)


class LpSGD:
    """Lp-spherical gradient descent (Li et al. 2021), framework independent.

    Every group of a weight (by default one row per output unit) is kept on
    the unit Lp sphere.  The direction ``d`` follows torch.optim.SGD:
    ``d = g + weight_decay * w``; with momentum ``buf = momentum * buf +
    (1 - dampening) * d`` (the first step copies ``d``), then ``d = d +
    momentum * buf`` (Nesterov) or ``d = buf``.  The step size at step ``t``
    (counted from 0) is ``eta_t = lr / (1 + lr_decay * t)``.

    Variants (DESIGN section 4), per group, with ``g_hat = d / ||d||_q``:

    * ``"dual"`` (the reference algorithm): keep ``v = D_p(w)``;
      ``v <- (1 - eta) v - eta g_hat``, ``v <- v / ||v||_q``, ``w <- D_q(v)``.
      ``w`` is always recomputed from ``v``.  For a constant gradient ``c`` it
      converges linearly, at rate ``1 - eta``, to the Hoelder extremiser
      ``-sign(c)|c|^(q-1) / ||c||_q^(q-1)``.
    * ``"primal"``: ``w <- (1 - eta) w - eta D_q(g_hat)``, ``w <- w / ||w||_p``.
    * ``"riemannian"``: ``w <- R_w(-eta P_w(d))``, the tangent projection
      followed by the radial retraction.  With a fixed step it does not
      converge for p < 2: the sphere's curvature is unbounded at the
      coordinate hyperplanes, so iterates oscillate around the minimiser at
      a distance set by ``lr``; use ``lr_decay`` or p >= 2.

    A group whose direction is zero (dead or fully pruned neuron) is left
    unchanged; an all-zero weight group stays zero.

    Parameters
    ----------
    p : float
        ``1 < p < inf``.
    lr : float
        ``lr > 0``; for ``dual`` and ``primal`` also ``lr <= 1`` (the update
        is a convex combination).
    momentum, dampening, nesterov, weight_decay
        As in torch.optim.SGD (Nesterov needs momentum > 0 and dampening 0).
    lr_decay : float
        ``>= 0``; see above.
    variant : {"dual", "primal", "riemannian"}

    Notes
    -----
    One kernel call per step for every tensor of it (:meth:`plan`,
    :meth:`step_many`; :meth:`step` is the one-tensor case), in two phases
    (see ``lpcore/kernels/lpsgd.py``).  Passes over memory, per group:

    * phase 1 (reads, validates): g, buf and the state (v for ``dual``, w
      otherwise) once from memory; then ``||d||_q`` (``dual``, ``primal``) or
      ``<nu, d>, <nu, nu>`` (``riemannian``) in a second pass over the group
      while it is in cache.
    * phase 2 (writes): g, buf and the state read again, buf and the updated
      state written in the same pass; ``dual`` then makes one power pass
      (w's magnitudes and the terms of ``||v||_q`` from one logarithm) and one
      scaling pass over v and w, both in cache; ``primal`` and
      ``riemannian`` make a norm pass and a scaling pass over w in cache.

    So from memory: two reads of g, buf and the state, one write of buf, the
    state and w (``dual`` also writes w).  Weight decay adds reads of w.
    Each group is one task; a single group larger than the caches is re-read
    from memory by its in-cache passes.  The float32 powers are the vectorised
    ones of ``lpcore.kernels._pow32`` (relative error about ``6e-8 * max(2,
    exponent)``); the arithmetic is carried in float64.

    A non-finite gradient, momentum buffer, weight or dual state raises
    ValueError naming the group before anything is written: ``w`` and the
    state are unchanged and the optimizer stays usable.

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> w = np.random.default_rng(0).standard_normal((3, 5))
    >>> opt = lpcore.LpSGD(p=1.5, lr=0.1, momentum=0.9)
    >>> state = opt.init(w, axis=1)          # projects w onto the sphere in place
    >>> c = np.arange(15.0).reshape(3, 5) - 7
    >>> for _ in range(200):
    ...     state = opt.step(w, c, state)
    >>> np.allclose(lpcore.norm(w, 1.5, axis=1), 1.0)
    True
    """

    def __init__(self, p, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0,
                 lr_decay=0.0, variant="dual"):
        fn = "lpcore.LpSGD"
        self.p = check_p(p, fn, lo=1.0, allow_inf=False)
        if variant not in _VARIANTS:
            raise ValueError(f"{fn}: variant must be one of {sorted(_VARIANTS)}, got {variant!r}")
        self.variant = variant
        self.lr = _check_lr(lr, variant, fn)
        self.momentum = _nonneg(momentum, "momentum", fn)
        self.dampening = _nonneg(dampening, "dampening", fn)
        self.weight_decay = _nonneg(weight_decay, "weight_decay", fn)
        self.lr_decay = _nonneg(lr_decay, "lr_decay", fn)
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(f"{fn}: nesterov requires momentum > 0 and dampening = 0")

    def __repr__(self):
        return (f"LpSGD(p={self.p}, lr={self.lr}, momentum={self.momentum}, "
                f"dampening={self.dampening}, nesterov={self.nesterov}, "
                f"weight_decay={self.weight_decay}, lr_decay={self.lr_decay}, "
                f"variant={self.variant!r})")

    def lr_at(self, step):
        """The step size ``lr / (1 + lr_decay * step)``."""
        return decayed_lr(self.lr, self.lr_decay, step)

    # ------------------------------------------------------------------
    def init(self, w, axis=None):
        """Project ``w`` onto the unit sphere in place (per group) and return its state.

        Parameters
        ----------
        w : ndarray or GPU array
            A writable float32 or float64 weight; all-zero groups stay zero.
        axis : None, int or tuple of ints
            The axes of one group (``axis=1`` for a Linear weight, ``(1, 2,
            3)`` for a Conv2d one); None: the whole tensor is one group.

        Returns
        -------
        LpSGDState
            Step 0; for the ``dual`` variant the dual vector ``D_p(w)`` in the
            (groups, n) layout, on w's device.
        """
        fn = "lpcore.LpSGD.init"
        B = for_arrays(fn, w=w)
        w = self._check_weight(B, w, fn)
        grp = groups(w.shape, axis, fn)
        normalize(w, self.p, axis=axis, out=w, zero="keep")
        dual = None
        if self.variant == "dual":
            dual = to_dual(B.to2d(grp, w, w.dtype), self.p)
        return LpSGDState(step=0, shape=w.shape, axis=grp.reduced if axis is not None else None,
                          dual=dual)

    def step(self, w, grad, state, lr=None, mask=None):
        """One in-place step on ``w`` and ``state`` (one kernel call); returns ``state``.

        Parameters
        ----------
        w : ndarray or GPU array
            The weight (float32 or float64), updated in place.
        grad : array_like or GPU array
            Its gradient, w's shape (on w's device).
        state : LpSGDState
            From :meth:`init`; updated in place.
        lr : float, optional
            This step's step size, in place of ``lr_at(state.step)`` (for a
            caller that runs its own schedule, e.g. a torch LR scheduler);
            the same bounds as the constructor's ``lr``.
        mask : bool array, optional
            w's shape, on w's device; True = active.  The masked entries of
            ``w`` are written as exact zeros and each group's active entries
            put on the unit sphere (a group with no active non-zero entry
            becomes zero); for the ``dual`` variant the dual state keeps
            every entry (semi-pruning: a masked connection's latent value
            goes on evolving).  A group the step does not move is masked and
            renormalised only if the mask zeroes one of its entries.

        Raises
        ------
        ValueError
            Shape mismatch, a state that does not belong to ``w``, or NaN/Inf
            in the gradient, momentum buffer, weights or dual state (the
            message names the group).  Nothing is written when it raises.
        """
        fn = "lpcore.LpSGD.step"
        e = self._entry(w, state, fn, mask, grad=grad)
        eta = None if lr is None else _check_lr(lr, self.variant, fn)
        self._step_cached([e], [grad], fn, eta)
        return state

    def plan(self, ws, states, masks=None, names=None):
        """A :class:`StepPlan` stepping the tensors ``ws`` together: their
        tables, scratch and guard made once, then each :meth:`StepPlan.step`
        is one kernel call (CPU) or three launches (GPU) for all of them.

        ``ws``: weights viewable in place (C-contiguous in their grouped
        layout, float32/float64, on one backend); ``states`` their
        :class:`LpSGDState` from :meth:`init`; ``masks`` None or one bool
        array (or None) per weight, re-read at every step when passed there
        instead; ``names`` what errors call each tensor (default ``tensor
        k``).  The plan owns the step counts and momentum buffers of the
        states from now on (it writes them back at every CPU step and at
        :meth:`StepPlan.sync` on the GPU)."""
        fn = "lpcore.LpSGD.plan"
        masks = [None] * len(ws) if masks is None else list(masks)
        if not (len(ws) == len(states) == len(masks)):
            raise ValueError(f"{fn}: got {len(ws)} weights, {len(states)} states and "
                             f"{len(masks)} masks")
        entries = [self._entry(w, s, fn, m, in_place=True) for w, s, m in zip(ws, states, masks)]
        return StepPlan(entries, fn=fn, names=names)

    def step_many(self, ws, grads, states, masks=None):
        """Step several tensors atomically in one kernel call (one launch per
        phase on the GPU): if any input is bad, none is changed (ValueError
        naming the tensor and group).  Builds a :meth:`plan` on first use and
        reuses it while the same arrays come back (kept on the first state)."""
        fn = "lpcore.LpSGD.step_many"
        masks = [None] * len(ws) if masks is None else list(masks)
        if not (len(ws) == len(grads) == len(states) == len(masks)) or not ws:
            raise ValueError(f"{fn}: need as many weights, gradients, states and masks (and at "
                             "least one)")
        entries = [self._entry(w, s, fn, m, grad=g) for w, s, m, g in
                   zip(ws, states, masks, grads)]
        self._step_cached(entries, grads, fn)
        return list(states)

    def _step_cached(self, entries, grads, fn, eta=None):
        """Step ``entries`` now through the plan kept on the first one's state
        (made anew when the arrays it was built on changed); the states hold
        the counters between these calls, so they are loaded every time."""
        key = tuple(e.key for e in entries)
        hit = entries[0].state._work
        plan = hit[1] if hit is not None and hit[0] == key else None
        if plan is None:
            plan = StepPlan(entries, fn=fn)
            entries[0].state._work = (key, plan)
        else:
            plan.entries[:] = entries
        for k in range(len(entries)):
            plan._reload(k, eta)
        g2 = [self._grad2d(e, g, fn) for e, g in zip(entries, grads)]
        plan._run(g2, fn, "immediate", single=len(entries) == 1)
        for e in entries:
            if not e.direct:  # the updated rows were a copy of w's
                e.B.write(e.grp, e.w2, e.w)

    def _entry(self, w, state, fn, mask=None, in_place=False, grad=None):
        """One tensor of a step: validated, in its (G, n) view (``grad`` only
        takes part in the check that every array is on one device)."""
        B = for_arrays(fn, w=w, grad=grad, mask=mask,
                       **{f"state.{k}": getattr(state, k, None)
                          for k in ("dual", "momentum_buffer")})
        w = self._check_weight(B, w, fn)
        if not isinstance(state, LpSGDState):
            raise TypeError(f"{fn}: state must be an LpSGDState (from init), "
                            f"got {type(state).__name__}")
        if tuple(state.shape) != w.shape:
            raise ValueError(f"{fn}: state was made for shape {tuple(state.shape)}, "
                             f"w has shape {w.shape}")
        st = state.step
        if isinstance(st, (bool, np.bool_)) or not isinstance(st, numbers.Integral) or st < 0:
            raise ValueError(f"{fn}: state.step must be an integer >= 0, got {st!r}")
        grp = groups(w.shape, state.axis, fn)
        dt = w.dtype
        G, n = grp.G, grp.n
        for name in ("dual", "momentum_buffer"):
            a = getattr(state, name)
            if a is not None and (tuple(a.shape) != (G, n) or a.dtype != dt
                                  or not _device.is_c_layout(a.shape, a.strides, dt.itemsize)):
                raise ValueError(f"{fn}: state.{name} has shape {a.shape} and dtype {a.dtype}, "
                                 f"expected a C-contiguous ({G}, {n}) {dt} array")
            if isinstance(a, np.ndarray) and not a.flags.writeable:
                raise ValueError(f"{fn}: state.{name} is read-only (the step updates it in "
                                 "place); pass a writable copy")
        if self.variant == "dual" and state.dual is None:
            raise ValueError(f"{fn}: the dual variant needs state.dual (use LpSGD.init)")
        m2 = None
        if mask is not None:
            mask = B.as_array(mask, fn, "mask")
            if mask.dtype != np.bool_ or mask.shape != w.shape:
                raise ValueError(f"{fn}: mask must be a boolean array of w's shape {w.shape}, "
                                 f"got dtype {mask.dtype} and shape {mask.shape}")
            m2 = B.to2d(grp, mask, np.bool_)
        w2 = B.view2d(grp, w, dt)
        direct = w2 is not None
        if not direct:
            if in_place:
                raise ValueError(f"{fn}: w must be viewable in place in its grouped layout "
                                 "(C-contiguous groups of its dtype); step a contiguous copy")
            w2 = B.to2d(grp, w, dt).copy() if B.name == "cpu" else B.to2d(grp, w, dt)
        return _Entry(self, B, w, w2, direct, state, grp, m2)

    @staticmethod
    def _grad2d(e, grad, fn):
        grad = e.B.as_array(grad, fn, "grad")
        if grad.shape != e.w.shape:
            raise ValueError(f"{fn}: grad has shape {grad.shape}, expected w's shape "
                             f"{e.w.shape}")
        if grad.dtype.kind not in "fiub" or grad.dtype.itemsize > 8:
            raise TypeError(f"{fn}: grad must be a real array, got dtype {grad.dtype}")
        e.grad = grad
        return e.B.to2d(e.grp, grad, e.w2.dtype)

    # ------------------------------------------------------------------
    def _culprit(self, code, i, g2, state, grad, grp, B):
        """What made group ``i``'s step non-finite, as the start of the message."""
        if code == _k.BAD_DIRECTION:
            if not _row_finite(g2, i):
                if grad.dtype != g2.dtype and _row_finite(B.to2d(grp, grad, grad.dtype), i):
                    return (f"grad is finite in {grad.dtype} but overflows w's dtype "
                            f"{g2.dtype}")
                return "grad contains NaN or Inf"
            if state.momentum_buffer is not None and not _row_finite(state.momentum_buffer, i):
                return "state.momentum_buffer contains NaN or Inf"
            if self.weight_decay > 0:
                return "w contains NaN or Inf (it enters through weight decay and the normal)"
            return "w contains NaN or Inf"
        return ("state.dual contains NaN or Inf" if self.variant == "dual"
                else "w contains NaN or Inf")

    @staticmethod
    def _check_weight(B, w, fn):
        if B.name == "cpu" and not isinstance(w, np.ndarray):
            raise TypeError(f"{fn}: w must be a numpy.ndarray or a GPU array updated in place, "
                            f"got {type(w).__name__}")
        w = B.as_array(w, fn, "w")
        if w.dtype not in (np.float32, np.float64):
            raise TypeError(f"{fn}: w must be float32 or float64, got {w.dtype}")
        if isinstance(w, np.ndarray) and not w.flags.writeable:
            raise ValueError(f"{fn}: w is read-only")
        return w


def decayed_lr(lr, lr_decay, step):
    """LpSGD's step-size schedule ``lr / (1 + lr_decay * step)`` (also the
    plain-SGD tensors' schedule in the torch binding)."""
    return lr / (1.0 + lr_decay * step)


def _check_lr(lr, variant, fn):
    """``lr`` as a float: finite and > 0, and <= 1 for the convex-combination
    variants (the constructor's and a step-time ``lr``)."""
    if isinstance(lr, (bool, np.bool_)) or not isinstance(lr, numbers.Real) \
            or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"{fn}: lr must be a finite number > 0, got {lr!r}")
    if variant != "riemannian" and lr > 1:
        raise ValueError(f"{fn}: lr={lr} > 1; the {variant} update (1 - lr) x - lr u needs "
                         "0 < lr <= 1")
    return float(lr)


class _Entry:
    """One tensor of a step: the optimizer whose hyperparameters it takes,
    the weight and its (G, n) view (``direct``: w's own memory), the state,
    the layout and the (G, n) mask."""

    __slots__ = ("opt", "B", "w", "w2", "direct", "state", "grp", "mask2", "grad", "key")

    def __init__(self, opt, B, w, w2, direct, state, grp, mask2):
        self.opt, self.B, self.w, self.w2, self.direct = opt, B, w, w2, direct
        self.state, self.grp, self.mask2, self.grad = state, grp, mask2, None
        addr = B.address
        buf = state.momentum_buffer
        # what a plan is built on (the mask is reloaded at every call instead)
        self.key = (B.name, addr(w2), w2.shape, w2.dtype.str, opt.variant, opt.momentum > 0,
                    None if state.dual is None else addr(state.dual),
                    None if buf is None else addr(buf))


#: the guard's value when the step's external flag stopped it (``StepPlan.step(flag=...)``)
FLAG = -2


class FlagSet(ValueError):
    """A step stopped by its external flag (``StepPlan.step(flag=...)``), not
    by one of its own tensors: the binding that set the flag knows why."""


class StepPlan:
    """LpSGD steps of a fixed set of tensors, all of them in one kernel call
    per step (CPU) or three launches (GPU), atomically: a bad input in any
    tensor leaves every tensor and state unchanged.

    Made by :meth:`LpSGD.plan` (or by :meth:`LpSGD.step` /
    :meth:`LpSGD.step_many`, which keep one): the tensor tables (addresses,
    layouts, hyperparameters, step counts) and all scratch are made once;
    a step uploads only what changed (a gradient's address, a mask, a
    learning rate).  Tensors of different dtypes, variants or momentum
    settings form separate tables, checked together before any is written.

    On the GPU nothing in :meth:`step` waits for the device with
    ``check="deferred"``: a bad input is found on the device, where it stops
    every later write (the *guard*), and is raised at the next :meth:`step`,
    at :meth:`sync` or at :meth:`check`.  ``check="immediate"`` (the default)
    reads it back at once; ``check="none"`` leaves it to :meth:`check` (a
    step captured in a CUDA graph).  The step counts and the first-momentum
    rule live in device memory, so a captured step replays correctly.
    """

    def __init__(self, entries, fn="lpcore.StepPlan", names=None):
        self.fn = fn
        self.entries = list(entries)
        self.names = names
        self.B = B = entries[0].B
        if any(e.B is not B for e in entries):
            raise TypeError(f"{fn}: the weights are on different devices (host and GPU)")
        classes = {}
        for k, e in enumerate(entries):
            classes.setdefault((e.w2.dtype.str, e.opt.variant, e.opt.momentum > 0), []).append(k)
        self.classes = []
        self._fresh = {}  # entry -> the momentum buffer made for its first momentum step
        base = 0
        guard = None
        for (dt, variant, has_mom), idx in classes.items():
            dt = np.dtype(dt)
            nmax = max(1, max(entries[k].grp.n for k in idx))
            dummy = B.zeros((1, nmax), dt)  # read (as zeros) where a tensor has no buf / v
            rows = []
            for k in idx:
                e = entries[k]
                buf = e.state.momentum_buffer
                if has_mom and buf is None:
                    buf = self._fresh[k] = B.zeros((e.grp.G, e.grp.n), dt)
                rows.append(self._row(e, buf if has_mom else dummy,
                                      e.state.dual if e.state.dual is not None else dummy))
            tables = _k.Tables(dt, rows, base)
            ms = B.kernels.MultiStep(tables, _VARIANTS[variant], has_mom, guard=guard)
            guard = getattr(ms, "guard", None)
            self.classes.append((ms, tables, idx, dummy))
            base += tables.ngroups
        self._keep = None  # the arrays of the step in flight (their memory must stay)
        self._optimistic = False

    def _row(self, e, buf, v):
        B, opt = self.B, e.opt
        for a in (e.w2, buf, v, e.mask2):
            B.register(a)
        return dict(w=B.address(e.w2), buf=B.address(buf), v=B.address(v),
                    mask=0 if e.mask2 is None else B.address(e.mask2), G=e.grp.G, n=e.grp.n,
                    p=opt.p, wd=opt.weight_decay, mu=opt.momentum, damp=opt.dampening,
                    nest=1.0 if opt.nesterov else 0.0, lr=opt.lr, decay=opt.lr_decay,
                    step=e.state.step, started=0 if e.state.momentum_buffer is None else 1)

    def _where(self, k):
        for ms, tables, idx, _ in self.classes:
            if k in idx:
                return ms, idx.index(k)
        raise IndexError(k)

    def _reload(self, k, eta):
        """Tensor ``k``'s counters, hyperparameters and mask from its entry (the
        one-call API, where the state holds them between calls)."""
        e = self.entries[k]
        ms, t = self._where(k)
        ms.set_counters(t, e.state.step, 0 if e.state.momentum_buffer is None and
                        k in self._fresh else 1)
        if e.mask2 is not None:
            self.B.register(e.mask2)
        ms.set_mask(t, 0 if e.mask2 is None else self.B.address(e.mask2))
        if eta is None:
            ms.set_lr(t, e.opt.lr, e.opt.lr_decay)
        else:
            ms.set_lr(t, eta, 0.0)

    # ------------------------------------------------------------------
    def set_lr(self, k, lr, lr_decay=None):
        """Tensor ``k``'s step size from the next step on: ``lr / (1 + lr_decay
        * t)`` (``lr_decay`` None: unchanged)."""
        ms, t = self._where(k)
        _check_lr(lr, self.entries[k].opt.variant, self.fn)
        tab = ms.t.ftab
        ms.set_lr(t, float(lr), float(tab[t, _k.F_DECAY] if lr_decay is None else lr_decay))

    def step(self, grads, masks=None, check="immediate", arrays=None, flag=0):
        """Step every tensor with ``grads`` (arrays of the weights' shapes; of
        their dtypes and C-contiguous to be used without a copy).  ``masks``
        (a list with a bool array or None per tensor) replaces the masks for
        this and later steps.  ``check``: see the class.

        For bindings that checked the gradients themselves (w's dtype, shape
        and device, C-contiguous in w's grouped layout), ``grads`` and
        ``masks`` may hold plain addresses (ints; 0: no mask) instead: nothing
        is converted.  ``arrays()`` then returns the gradients as arrays for
        an error message.  ``flag`` (GPU): the address of a float32 device
        scalar that, when non-zero as the step starts, stops it like a bad
        group (:class:`FlagSet` names it) and that the step sets to 1 when a
        group is bad (torch's ``found_inf``: it ties a binding's own updates
        to the same guard)."""
        fn = self.fn + ".step"
        if check not in ("immediate", "deferred", "none"):
            raise ValueError(f"{fn}: check must be 'immediate', 'deferred' or 'none', "
                             f"got {check!r}")
        if len(grads) != len(self.entries):
            raise ValueError(f"{fn}: got {len(grads)} gradients for {len(self.entries)} tensors")
        if check != "none":  # (waiting for an event is not allowed in a graph capture)
            self.check()
        if masks is not None:
            for k, m in enumerate(masks):
                self._set_mask(k, m, fn)
        g2 = [g if isinstance(g, int) else LpSGD._grad2d(e, g, fn)
              for e, g in zip(self.entries, grads)]
        self._arrays = arrays
        self._run(g2, fn, check, flag=flag)

    def _set_mask(self, k, m, fn):
        e = self.entries[k]
        if isinstance(m, int):
            ms, t = self._where(k)
            ms.set_mask(t, m)
            e.mask2 = m or None
            return
        if m is None:
            e.mask2 = None
        else:
            m = e.B.as_array(m, fn, "mask")
            if m.dtype != np.bool_ or tuple(m.shape) != tuple(e.w.shape):
                raise ValueError(f"{fn}: mask {k} must be a boolean array of shape "
                                 f"{tuple(e.w.shape)}, got dtype {m.dtype} and shape {m.shape}")
            e.mask2 = e.B.to2d(e.grp, m, np.bool_)
            e.B.register(e.mask2)
        ms, t = self._where(k)
        ms.set_mask(t, 0 if e.mask2 is None else e.B.address(e.mask2))

    def _run(self, g2, fn, check, single=False, flag=0):
        B = self.B
        for k, g in enumerate(g2):
            ms, t = self._where(k)
            if isinstance(g, int):
                ms.set_grad(t, g)
            else:
                B.register(g)
                ms.set_grad(t, B.address(g))
        self._keep = (g2, [e.mask2 for e in self.entries])
        if B.name == "cpu":
            check = "immediate"
        if len(self.classes) == 1:
            res = self.classes[0][0].run(check, flag=flag)
        else:
            res = (-1, None)
            for ms, *_ in self.classes:
                res = ms.run(check, "phase1", flag=flag)
                if res[0] != -1:
                    break
            if res[0] == -1:
                for i, (ms, *_) in enumerate(self.classes):
                    last = i == len(self.classes) - 1
                    ms.run(check if last else "none", "phase2", flag=flag)
        if res[0] != -1:
            self._raise(res, fn, single)
        self._advance(optimistic=check != "immediate")

    def _advance(self, optimistic):
        """The states after a step: step counts and first momentum buffers
        (on the GPU without a check, assumed to have succeeded until
        :meth:`check` says otherwise)."""
        for ms, tables, idx, _ in self.classes:
            ctr = None if optimistic else ms.counters()
            for t, k in enumerate(idx):
                st = self.entries[k].state
                st.step = st.step + 1 if ctr is None else int(ctr[t, 0])
                if k in self._fresh and st.momentum_buffer is None:
                    st.momentum_buffer = self._fresh[k]
        self._optimistic = optimistic

    def check(self):
        """Raise the error of an earlier step that ran without an immediate
        check (it changed nothing; the guard is cleared by raising); waits only
        for that step's kernels."""
        for ms, *_ in self.classes:
            res = ms.pending(wait=True)
            if res is not None and res[0] != -1:
                self._raise(res, self.fn + ".step", False, deferred=True)

    def sync(self):
        """Wait for the enqueued steps, raise a pending error, and write the
        step counts back into the states (the GPU keeps them on the device)."""
        for ms, *_ in self.classes:
            res = ms.check_now()
            if res[0] != -1:
                self._raise(res, self.fn + ".step", False, deferred=True)
        if self._optimistic:
            self._advance(optimistic=False)

    def _raise(self, res, fn, single, deferred=False):
        gg, code = res
        if gg == FLAG:
            for ms2, *_ in self.classes:
                ms2.clear()
            if deferred:
                self._advance(optimistic=False)
            raise FlagSet(f"{fn}: {'an earlier step: ' if deferred else ''}the flag was set; "
                          "nothing was updated")
        for ms, tables, idx, _ in self.classes:
            if tables.base <= gg < tables.base + tables.ngroups:
                break
        t, i = tables.locate(gg)
        k = idx[t]
        e = self.entries[k]
        if code is None:
            code = _k.BAD_DIRECTION
        g2 = self._keep[0][k] if self._keep is not None else None
        if isinstance(g2, int):  # an address: the binding has the array
            arrays = getattr(self, "_arrays", None)
            g2 = None if arrays is None else arrays()[k]
            if g2 is not None:
                e.grad = g2
                g2 = e.B.to2d(e.grp, g2, e.w2.dtype)
        why = e.opt._culprit(code, i, g2, e.state, e.grad, e.grp, e.B) if g2 is not None \
            else "a gradient, weight or state contains NaN or Inf"
        for ms2, *_ in self.classes:
            ms2.clear()
        if deferred:  # the states were advanced before the outcome was known
            self._advance(optimistic=False)
        who = "" if single else (f"{self.names[k]}: " if self.names else f"tensor {k}: ")
        when = "an earlier step: " if deferred else ""
        raise ValueError(f"{fn}: {when}{who}{why} in group {e.grp.index(i)}; nothing was "
                         "updated")


def _row_finite(a, i):
    """Whether row ``i`` of a (G, n) host or device array is finite (error path only)."""
    row = cuda_backend().to_numpy(a[i]) if _device.is_device(a) else a[i]
    return bool(np.all(np.isfinite(row)))
