"""LpSGD: gradient descent with every group (neuron) on the unit Lp sphere.

A framework-independent optimizer in the style of an (init, step) pair: the
hyperparameters live on the :class:`LpSGD` object (validated once), the
per-tensor state in an :class:`LpSGDState` of plain arrays.  Weights and state
are updated in place by one fused kernel call per tensor per step
(``lpcore/kernels/lpsgd.py``).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np


from . import _device as D
from ._backend import cuda_backend, for_arrays
from ._validate import check_p
from .kernels import lpsgd as _k
from .layout import groups
from .norms import normalize
from .sphere import to_dual

__all__ = ["LpSGD", "LpSGDState"]

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
    #: the step kernel's scratch, kept between steps (not part of the state's value)
    _work: object = field(default=None, repr=False, compare=False)

    def __getstate__(self):  # copies and pickles leave the scratch behind
        d = dict(self.__dict__)
        d["_work"] = None
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)

    def _workspace(self, B, G):
        """The step kernel's per-group scratch for this tensor on backend ``B``,
        made once and reused by every later step (no allocation per step)."""
        w = self._work
        if w is None or w[0] != B.name or w[1] != G:
            w = self._work = (B.name, G, B.kernels.StepCall.workspace(G))
        return w[2]

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
                d[name] = cuda_backend().to_numpy(a) if D.is_device(a) else a.copy()
        return d

    def to_device(self):
        """This state with its arrays copied to the GPU (for a weight on the GPU,
        e.g. after :meth:`from_dict`)."""
        cu = D.cuda()
        mv = {n: (cu.to_device(np.ascontiguousarray(a)) if a is not None and not D.is_device(a)
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
    One kernel call per tensor per step, in two phases (see
    ``lpcore/kernels/lpsgd.py``).  Passes over memory, per group:

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
        """One in-place step on ``w`` and ``state`` (one fused kernel call); returns ``state``.

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
        call = self._bind(w, grad, state, "lpcore.LpSGD.step", lr, mask)
        call.check(call.kernel.run("step"))
        return call.commit()

    def prepare(self, w, grad, state, lr=None, mask=None):
        """Phase 1 of a step: read and validate, write nothing.

        Returns a handle for :meth:`apply`.  Use the pair to step several
        tensors atomically: prepare all of them (any may raise, and then
        nothing anywhere was written), then apply all.  The passes over
        memory are those of :meth:`step`; only the kernel call is split.
        Between ``prepare`` and ``apply``, ``w``, ``grad`` and the state must
        not change.  ``lr`` and ``mask`` as in :meth:`step`.
        """
        call = self._bind(w, grad, state, "lpcore.LpSGD.prepare", lr, mask)
        call.check(call.kernel.run("phase1"))
        return call

    def apply(self, prepared):
        """Phase 2 of a step prepared by :meth:`prepare`; returns the state."""
        if not isinstance(prepared, _Call) or prepared.opt is not self or prepared.done:
            raise ValueError("lpcore.LpSGD.apply: pass the handle returned by this optimizer's "
                             "prepare(), once")
        prepared.kernel.run("phase2")
        return prepared.commit()

    def step_many(self, ws, grads, states):
        """Step several tensors; if any input is bad, none is changed."""
        calls = [self.prepare(w, g, s) for w, g, s in zip(ws, grads, states, strict=True)]
        return [self.apply(c) for c in calls]

    def _bind(self, w, grad, state, fn, lr=None, mask=None):
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
        eta = self.lr_at(st) if lr is None else _check_lr(lr, self.variant, fn)
        grad = B.as_array(grad, fn, "grad")
        if grad.shape != w.shape:
            raise ValueError(f"{fn}: grad has shape {grad.shape}, expected w's shape {w.shape}")
        if grad.dtype.kind not in "fiub" or grad.dtype.itemsize > 8:
            raise TypeError(f"{fn}: grad must be a real array, got dtype {grad.dtype}")
        grp = groups(w.shape, state.axis, fn)
        dt = w.dtype
        G, n = grp.G, grp.n
        for name in ("dual", "momentum_buffer"):
            a = getattr(state, name)
            if a is not None and (tuple(a.shape) != (G, n) or a.dtype != dt
                                  or not D.is_c_layout(a.shape, a.strides, dt.itemsize)):
                raise ValueError(f"{fn}: state.{name} has shape {a.shape} and dtype {a.dtype}, "
                                 f"expected a C-contiguous ({G}, {n}) {dt} array")
            if isinstance(a, np.ndarray) and not a.flags.writeable:
                raise ValueError(f"{fn}: state.{name} is read-only (the step updates it in "
                                 "place); pass a writable copy")
        if self.variant == "dual" and state.dual is None:
            raise ValueError(f"{fn}: the dual variant needs state.dual (use LpSGD.init)")
        if mask is not None:
            mask = B.as_array(mask, fn, "mask")
            if mask.dtype != np.bool_ or mask.shape != w.shape:
                raise ValueError(f"{fn}: mask must be a boolean array of w's shape {w.shape}, "
                                 f"got dtype {mask.dtype} and shape {mask.shape}")
        return _Call(B, self, fn, w, grad, state, grp, eta, mask)

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


class _Call:
    """One tensor's step in flight: the (G, n) views, the kernel arguments and
    what to do once the kernel has run (either backend)."""

    def __init__(self, B, opt, fn, w, grad, state, grp, eta, mask=None):
        dt = w.dtype
        self.B, self.opt, self.fn, self.w, self.state, self.grp = B, opt, fn, w, state, grp
        self.grad = grad
        self.done = False
        w2 = B.view2d(grp, w, dt)
        self.direct = w2 is not None
        # a weight whose groups are not trailing and contiguous is stepped on a copy
        self.w2 = w2 if self.direct else B.to2d(grp, w, dt).copy() if B.name == "cpu" \
            else B.to2d(grp, w, dt)
        self.g2 = B.to2d(grp, grad, dt)
        self.first = opt.momentum > 0 and state.momentum_buffer is None
        self.buf = None
        if opt.momentum > 0:
            self.buf = B.zeros((grp.G, grp.n), dt) if self.first else state.momentum_buffer
        self.kernel = B.kernels.StepCall(self.w2, self.g2, self.buf, state.dual,
                                         opt.weight_decay, opt.momentum, opt.dampening,
                                         opt.nesterov, self.first, _VARIANTS[opt.variant],
                                         opt.p, eta,
                                         None if mask is None else B.to2d(grp, mask, np.bool_),
                                         work=state._workspace(B, grp.G))

    def check(self, result):
        bad, code = result
        if bad >= 0:
            why = self.opt._culprit(code, bad, self.g2, self.state, self.grad, self.grp, self.B)
            raise ValueError(f"{self.fn}: {why} in group {self.grp.index(bad)}; "
                             "nothing was updated")

    def commit(self):
        if not self.direct:  # the updated rows were a copy of w's
            self.B.write(self.grp, self.w2, self.w)
        if self.first:
            self.state.momentum_buffer = self.buf
        self.state.step += 1
        self.done = True
        return self.state


def _row_finite(a, i):
    """Whether row ``i`` of a (G, n) host or device array is finite (error path only)."""
    row = cuda_backend().to_numpy(a[i]) if D.is_device(a) else a[i]
    return bool(np.all(np.isfinite(row)))
