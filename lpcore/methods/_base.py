"""What every sparse-training method shares: the update schedule, the layer
view the methods read, the RNG, the exact adjustment at ``end``."""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from .._backend import for_arrays
from .._validate import check_real
from ..masks import adjust_to_sparsity, mask_sparsity, random_mask
from ..schedules import drop_threshold_schedule


@dataclass
class Layer:
    """One sparse weight as a method sees it, in the weight's fan-in view.

    mask : bool array (True = active); the method returns new masks, it
        never writes this one.
    weight : the effective weights (zero where masked).
    latent : the magnitudes semi-pruning ranks by (for LpSGD's dual variant
        ``D_q`` of the dual state, which inactive connections keep), or
        None: the weights.
    grad : the dense gradient of the last step (inactive connections
        included), or None when there is none yet.
    axis : the fan-in axes of the view (one group per output unit).
    """

    mask: np.ndarray
    weight: np.ndarray
    latent: np.ndarray | None = None
    grad: np.ndarray | None = None
    axis: tuple | None = None


class Method:
    """A sparse-training method: its masks at the start, its topology update
    every ``frequency`` steps in ``[begin, end]``, its state.

    A method works on host NumPy arrays (those with :attr:`device_ready`
    also on GPU arrays); the framework binding owns the tensors, the gradient
    hooks, the optimizer-state resets and the DDP all-reduce, and calls
    :meth:`update` with a :class:`Layer` per sparse weight.  Subclasses set ``name`` and implement :meth:`start_sparsity`
    and :meth:`update`; adding a method is one module in this package and
    one entry in ``lpcore.methods.METHODS``.

    Parameters
    ----------
    target_sparsity : float
        Exact-zero fraction over the sparse weights at the end, in (0, 1).
    init_sparsity : float
        The initial mask sparsity of methods that start sparser than the
        target's schedule (``lpss``), in [0, 1).
    begin, end, frequency : int
        Topology updates every ``frequency`` steps in ``[begin, end]``.
    h0 : float
        The drop threshold (``lpss``) or drop fraction (``set``, ``rigl``),
        in [0, 1).
    h_schedule : {"auto", "constant", "cosine", "exponential"}
        The annealing of ``h0`` (``"auto"``: the method's own default).
    finalize : {"auto", "exact", "none"}
        Whether to adjust the masks once at ``end`` to exactly the target
        (``"auto"``: the method's own default).
    delta : float
        The controller's margin, in [0, 1) (``lpss``).
    pruning : {"semi", "hard"}
        Whether inactive connections keep a latent value (the optimizer's
        dual state); ``"hard"`` asks the binding to zero it on a drop.
    controller, revive, adapt_h
        ``lpss``'s options (see :class:`lpcore.methods.lpss.LpSS`); checked
        for every method so that a typo is never silently ignored.
    seed : int or numpy.random.Generator
        Random masks and random regrowth (identical on every DDP replica when
        every replica passes the same seed).
    """

    name = "method"
    #: the h schedule of h_schedule="auto"
    default_h_schedule = "cosine"
    #: whether finalize="auto" means the exact adjustment at ``end``
    default_finalize = "exact"
    #: whether the method evolves the masks at all
    evolves = True
    #: whether :meth:`update` reads ``Layer.latent`` (the binding computes it only then)
    uses_latent = False
    #: whether :meth:`update` also takes GPU arrays (numba device arrays) and
    #: decides on the device, returning device masks and indices and copying
    #: only counts to the host; the binding then hands it device arrays of CUDA
    #: tensors (the other methods get host copies)
    device_ready = False
    #: whether the method learns a real score per connection every step
    #: (:class:`LearnedMask`: the binding keeps the trainable weights and calls
    #: :meth:`LearnedMask.learn`)
    learns = False
    #: whether the binding must keep the bias of channels without any active
    #: connection at zero (the method removes whole channels: Chase)
    removes_channels = False

    def __init__(self, target_sparsity=0.9, init_sparsity=0.2, begin=0, end=1000, frequency=40,
                 h0=0.2, h_schedule="auto", finalize="auto", delta=0.1, pruning="semi",
                 controller="schedule", revive=True, adapt_h=True, seed=0):
        fn = f"lpcore.methods.{self.name}"
        self.target = check_real(target_sparsity, fn, "target_sparsity", 0.0, 1.0,
                                 lo_open=True, hi_open=True)
        self.s0 = check_real(init_sparsity, fn, "init_sparsity", 0.0, 1.0, hi_open=True)
        for name, v in (("begin", begin), ("end", end), ("frequency", frequency)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise ValueError(f"{fn}: {name} must be an integer step, got {v!r}")
        if frequency < 1:
            raise ValueError(f"{fn}: frequency must be an integer >= 1, got {frequency!r}")
        if not 0 <= begin < end:
            raise ValueError(f"{fn}: need 0 <= begin < end, got {begin}, {end}")
        self.begin, self.end, self.frequency = int(begin), int(end), int(frequency)
        self.h0 = check_real(h0, fn, "h0", 0.0, 1.0, hi_open=True)
        self.h_schedule = self.default_h_schedule if h_schedule == "auto" else h_schedule
        drop_threshold_schedule(0, self.h0, self.begin, self.end, kind=self.h_schedule)  # validates
        if finalize not in ("auto", "exact", "none"):
            raise ValueError(f"{fn}: finalize must be 'auto', 'exact' or 'none', "
                             f"got {finalize!r}")
        if finalize == "auto":
            finalize = "exact" if self.default_finalize == "exact" else "none"
        self.finalize = finalize
        self.delta = check_real(delta, fn, "delta", 0.0, 1.0, hi_open=True)
        if pruning not in ("semi", "hard"):
            raise ValueError(f"{fn}: pruning must be 'semi' or 'hard', got {pruning!r}")
        if controller not in ("schedule", "reference"):
            raise ValueError(f"{fn}: controller must be 'schedule' or 'reference', "
                             f"got {controller!r}")
        self.pruning, self.controller = pruning, controller
        self.revive, self.adapt_h = bool(revive), bool(adapt_h)
        self.rng = np.random.default_rng(seed)

    # -------------------------------------------------------------- schedule
    @classmethod
    def trainings(cls, rounds=1):
        """How many trainings of one length a run of this method takes (IMP:
        ``rounds`` + 1, the concave lottery: 2, the others: 1)."""
        return 1

    @classmethod
    def schedule(cls, steps, frequency=None, rounds=1):
        """``(begin, end, frequency)`` for a run whose one training has
        ``steps`` steps: topology updates from 20% to 80% of it, every
        ``frequency`` steps (None: 20, or fewer so that pruning sees at
        least 40 updates).  ``rounds`` is IMP's.

        >>> from lpcore.methods import RigL
        >>> RigL.schedule(1000)
        (200, 800, 15)
        """
        if steps < 2:
            raise ValueError(f"lpcore.methods.{cls.name}: a training of {steps} step leaves no "
                             "room for a topology schedule (it needs at least 2 steps: more "
                             "epochs or a smaller batch)")
        begin = int(0.2 * steps)
        end = max(int(0.8 * steps), begin + 1)
        return begin, end, frequency or max(1, min(20, (end - begin) // 40))

    def start_sparsity(self):
        """The sparsity of the initial random masks."""
        return self.target

    def init_masks(self, shapes):
        """One random mask per shape, with exactly ``round(s * size)`` zeros
        at :meth:`start_sparsity` (drawn in order from the method's RNG)."""
        s = self.start_sparsity()
        return [random_mask(tuple(shape), s, self.rng) for shape in shapes]

    def due(self, t):
        """Whether step ``t`` is a topology update."""
        return self.evolves and self.begin <= t <= self.end and t > 0 and \
            (t - self.begin) % self.frequency == 0

    def finalizes(self, t):
        """Whether step ``t`` is the exact adjustment to the target."""
        return self.evolves and t == self.end and self.finalize == "exact"

    #: the step after which the binding keeps a copy of every parameter to
    #: rewind to (None: the method never rewinds)
    rewind_step = None

    def rewinds(self, t):
        """Whether the binding rewinds every parameter to its copy from
        :attr:`rewind_step` (and clears the optimizer state) after step
        ``t``'s update."""
        return False

    def h(self, t):
        """The drop threshold / fraction at step ``t``."""
        return drop_threshold_schedule(t, self.h0, self.begin, self.end, kind=self.h_schedule)

    # ---------------------------------------------------------------- update
    def update(self, t, layers):
        """The topology update at step ``t``: a list with, per layer, None
        (unchanged) or ``(new_mask, grown)``, ``grown`` the flat indices
        (into the layer's view) of connections that became active and whose
        optimizer state (momentum) the binding resets (arrays of the layers'
        backend)."""
        raise NotImplementedError

    def adjust(self, layers, sparsity=None):
        """The exact adjustment to ``sparsity`` (default: the target;
        ``finalize="exact"``): one global ranking, |w| to drop and |dense
        gradient| to grow (:func:`lpcore.adjust_to_sparsity`); the
        :meth:`update` format."""
        old = [ly.mask for ly in layers]
        new, changed = adjust_to_sparsity(old, [ly.weight for ly in layers],
                                          [ly.grad for ly in layers],
                                          self.target if sparsity is None else sparsity)
        grow = mask_sparsity(new) < mask_sparsity(old)
        return [None if c.size == 0 else (n, c if grow else np.zeros(0, np.intp))
                for n, c in zip(new, changed)]

    @staticmethod
    def sparsity(layers):
        """The masks' exact zero fraction over all layers."""
        return mask_sparsity([ly.mask for ly in layers])

    # ----------------------------------------------------------------- state
    def state_dict(self):
        """The method's evolving state (the masks live with the weights)."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]


class LearnedMask(Method):
    """A method that learns the masks: a real score per connection, trained
    every step of the learning phase next to the weights ``theta``; the
    network computes with ``theta * gate`` (``gate`` from the scores, 0 =
    inactive).

    The binding's side: it keeps ``theta`` (the trainable weights, inactive
    connections included), scales the gradient of the effective weight by the
    gate (``dL/dtheta = dL/dw_eff * gate``), after every optimizer step moves
    ``theta`` by the step the optimizer made and calls :meth:`learn` with
    :class:`Layer` views whose ``grad`` is the dense ``dL/dw_eff`` and whose
    ``latent`` is ``theta``, then writes ``theta * gate`` as the weight.  The
    mask is ``gate != 0``.  A step ``t`` is in the learning phase while
    :meth:`learning` is true (a prefix of the run); afterwards the masks are
    fixed binary masks as for every other method.
    """

    learns = True
    default_finalize = "none"
    #: the score step of mask_lr=None
    default_mask_lr = 0.01
    #: learn (and the ticket's update) run on the layers' backend: GPU arrays
    #: keep the scores on the device, and only counts and one order statistic
    #: reach the host
    device_ready = True

    def __init__(self, *args, mask_lr=None, **kw):
        super().__init__(*args, **kw)
        fn = f"lpcore.methods.{self.name}"
        self.mask_lr = check_real(self.default_mask_lr if mask_lr is None else mask_lr, fn,
                                  "mask_lr", 0.0, float("inf"), lo_open=True, hi_open=True)
        self.scores = None
        self._flat = None

    def _set_scores(self, flat, shapes):
        """The scores as per-layer views of shapes ``shapes`` into one 1-D
        float64 buffer (host or device), the concatenation the global steps
        rank."""
        self._flat, self.scores = flat, self._split(flat, shapes)

    def _split(self, flat, shapes):
        """Views of consecutive pieces of the 1-D ``flat`` in ``shapes``."""
        B = for_arrays(f"lpcore.methods.{self.name}", flat=flat)
        out, start = [], 0
        for sh in shapes:
            n = int(np.prod(sh))
            out.append(B.shaped(flat[start:start + n], tuple(sh)))
            start += n
        return out

    def _views_of(self, flat):
        """``flat`` (a buffer like the scores') in the scores' shapes."""
        return self._split(flat, [s.shape for s in self.scores])

    def _scores_on(self, layers):
        """The backend of the layers' arrays, with the scores moved to it (once,
        when a host run meets its first GPU layers)."""
        fn = f"lpcore.methods.{self.name}"
        B = for_arrays(fn, **{f"layers[{i}].mask": ly.mask for i, ly in enumerate(layers)})
        here = for_arrays(fn, scores=self._flat)
        if here is not B:
            shapes = [s.shape for s in self.scores]
            flat = here.to_numpy(self._flat) if B.name == "cpu" else B.from_host(self._flat)
            self._set_scores(flat, shapes)
        return B

    def _step_layers(self, layers, step):
        """A new flat score buffer on the layers' backend, each layer's view
        written by ``step(scores_view, out_view, layer)``."""
        self._check_scores(layers)
        B = self._scores_on(layers)
        new = B.empty((self._flat.size,), np.float64)
        for s, o, ly in zip(self._views(self._flat, layers), self._views(new, layers), layers):
            step(s, o, ly)
        return new

    def _views(self, flat, layers):
        """Per layer, the view of ``flat`` in the layer's mask shape."""
        return self._split(flat, [ly.mask.shape for ly in layers])

    def learning(self, t):
        """Whether step ``t`` trains the scores."""
        raise NotImplementedError

    def gate_active(self, t):
        """Whether the gates (rather than the binary masks) scale the
        gradients of step ``t``: the learning phase has not closed before
        ``t``."""
        return t == 0 or self.learning(t - 1)

    def init_scores(self, shapes):
        raise NotImplementedError

    def init_masks(self, shapes):
        shapes = [tuple(s) for s in shapes]
        scores = self.init_scores(shapes)
        flat = np.concatenate([np.asarray(x, np.float64).reshape(-1) for x in scores]) \
            if scores else np.zeros(0)
        self._set_scores(flat, shapes)
        return [g != 0 for g in self.gates()]

    def gates(self):
        """The current gate of every layer (float64, in [0, 1])."""
        raise NotImplementedError

    def learn(self, t, layers):
        """One score step at ``t``; returns :meth:`gates`."""
        raise NotImplementedError

    def _check_scores(self, layers):
        if self.scores is None or len(self.scores) != len(layers):
            raise RuntimeError(f"lpcore.methods.{self.name}: learn() before init_masks(), or "
                               f"{len(layers)} layers for {0 if self.scores is None else len(self.scores)} "
                               "score arrays")

    def array_state(self):
        """The scores (host copies), for a checkpoint (the JSON-able rest is
        :meth:`state_dict`)."""
        if self.scores is None:
            return {}
        B = for_arrays(f"lpcore.methods.{self.name}", scores=self._flat)
        return {f"scores.{i}": B.to_numpy(s) for i, s in enumerate(self.scores)}

    def load_array_state(self, arrays):
        n = sum(1 for k in arrays if k.startswith("scores."))
        if n:
            scores = [np.array(arrays[f"scores.{i}"], dtype=np.float64) for i in range(n)]
            self._set_scores(np.concatenate([x.reshape(-1) for x in scores]),
                             [x.shape for x in scores])
