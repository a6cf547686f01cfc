"""The typed configuration of one ``lpcore-train`` run (:class:`RunConfig`):
what the command line builds and what ``benchmarks/evidence.py`` builds
directly, checked once by :meth:`RunConfig.checked`."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from lpcore.methods import TRAININGS, training_count

#: the p of ``--p`` when it is not given (README table (c): LpSS at p = 2 against p = auto)
DEFAULT_P = 2.0
#: IMP's pruning rounds when --rounds is not given
DEFAULT_ROUNDS = 3
#: the score steps --mask-lr may take: outside, a step of float32 scores
#: vanishes or overflows (and SCL's calibrated lam cannot be found)
MASK_LR_RANGE = (1e-8, 1e8)
#: the learned-mask methods (their options: --mask-lr, --lam, --penalty)
LEARNED = ("scl", "scl-lp", "concave")


#: options that do not change what is trained (a resumed run may differ in them)
FREE_OPTIONS = ("out", "resume", "quiet")


class ConfigError(ValueError):
    """A run configuration that cannot train; the message names the option."""


@dataclass
class RunConfig:
    """One run of ``lpcore-train``; every field is the command-line option of
    the same name (``--no-revive`` is ``no_revive``; ``lpcore-train --help``
    explains each)."""

    dataset: str = "digits"
    model: str = "mlp"
    method: str = "lpss"
    rounds: int | None = None
    mask_lr: float | None = None
    lam: float | str | None = None
    penalty: str | None = None
    channel_sparsity: float | None = None
    p: float | list | str | None = None
    recipe: str = "library"
    target_sparsity: float = 0.9
    epochs: int = 60
    batch_size: int = 64
    lr: float = 0.05
    lp_lr: float = 0.02
    lr_decay: float = 0.01
    momentum: float = 0.9
    frequency: int | None = None
    h0: float = 0.2
    h_schedule: str = "auto"
    controller: str = "schedule"
    no_adapt_h: bool = False
    no_revive: bool = False
    finalize: str = "auto"
    seed: int = 0
    device: str = "cpu"
    threads: int | str = "auto"
    out: str = "lpcore-run"
    sweep_p: list | None = None
    resume: bool = False
    quiet: bool = False
    all_estimators: bool = False

    # ------------------------------------------------------------------
    @property
    def uses_lpsgd(self):
        """Whether the method's constrained weights take LpSGD steps."""
        return TRAININGS[self.method].lpsgd

    @property
    def topology(self):
        """The ``lpcore.methods`` method deciding the masks (None: dense)."""
        return TRAININGS[self.method].topology

    def total_epochs(self):
        """Epochs of the whole run: ``epochs`` per training; IMP trains
        ``rounds`` + 1 times, the concave lottery twice."""
        return self.epochs * training_count(self.method, self.imp_rounds)

    @property
    def imp_rounds(self):
        """IMP's pruning rounds (--rounds, default 3)."""
        return DEFAULT_ROUNDS if self.rounds is None else self.rounds

    def run_args(self):
        """The options that define what is trained, for a checkpoint (sorted)."""
        return {k: v for k, v in sorted(self.as_dict().items()) if k not in FREE_OPTIONS}

    def as_dict(self):
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    # ------------------------------------------------------------------
    def checked(self, cuda_problem=None):
        """A copy with ``lam`` a number or "auto" and ``device`` resolved;
        :class:`ConfigError` naming the option for anything that cannot
        train.  ``cuda_problem()``: why CUDA cannot run here, or None."""
        c = dataclasses.replace(self)
        err = _first_error(c)
        if err:
            raise ConfigError(err)
        if c.device != "cpu":
            why = cuda_problem() if cuda_problem is not None else "no CUDA check was given"
            if c.device == "cuda" and why:
                raise ConfigError(f"--device cuda: {why}")
            c.device = "cpu" if why else "cuda"
        return c


def _finite32(v):
    # the models are float32: torch's SGD takes -lr as a float32 factor
    return isinstance(v, (int, float)) and math.isfinite(v) \
        and abs(v) <= float(np.finfo(np.float32).max)


def _p_error(name, v):
    vals = v if isinstance(v, list) else [v]
    if v == "auto" and name == "--p":
        return None
    if not vals or any(isinstance(x, bool) or not isinstance(x, (int, float))
                       or not 1.0 < x < float("inf") for x in vals):
        return f"{name} values must satisfy 1 < p < inf, got {v!r}"
    return None


def _first_error(c):  # noqa: C901 - one flat list of rules, in the order the user reads them
    from ..data import DATASETS
    choices = {"dataset": DATASETS, "model": ("mlp", "cnn"), "method": tuple(TRAININGS),
               "recipe": ("library", "reference"), "penalty": (None, "log", "l1"),
               "h_schedule": ("auto", "cosine", "constant", "exponential"),
               "controller": ("schedule", "reference"), "finalize": ("auto", "exact", "none"),
               "device": ("cpu", "cuda", "auto")}
    for name, allowed in choices.items():
        if getattr(c, name) not in allowed:
            return f"--{name.replace('_', '-')} must be one of {allowed}, got {getattr(c, name)!r}"
    for name in ("target_sparsity", "h0", "lr", "lp_lr", "lr_decay", "momentum"):
        v = getattr(c, name)
        if not _finite32(v):
            return f"--{name.replace('_', '-')} must be a finite float32 number, got {v}"
    if not (isinstance(c.seed, int) and 0 <= c.seed < 2**32):
        return f"--seed must satisfy 0 <= seed < 2**32, got {c.seed}"
    if not 0.0 < c.target_sparsity < 1.0:
        return f"--target-sparsity must be in (0, 1), got {c.target_sparsity}"
    if not 0 <= c.h0 < 1:
        return f"--h0 must be in [0, 1), got {c.h0}"
    if c.epochs < 1 or c.batch_size < 1 or (c.frequency is not None and c.frequency < 1) \
            or (c.rounds is not None and c.rounds < 1):
        return "--epochs, --batch-size, --frequency and --rounds must be >= 1"
    for name in ("lr", "lp_lr"):
        if not getattr(c, name) > 0:
            return f"--{name.replace('_', '-')} must be > 0"
    if not 0 < c.lp_lr <= 1:
        return "--lp-lr must be in (0, 1]"
    if c.lr_decay < 0 or not 0 <= c.momentum < 1:
        return "--lr-decay must be >= 0 and --momentum in [0, 1)"
    if c.threads != "auto" and (isinstance(c.threads, bool) or not isinstance(c.threads, int)
                                or c.threads < 1):
        return f"--threads must be 'auto' or an integer >= 1, got {c.threads!r}"
    for name, v in (("--p", c.p), ("--sweep-p", c.sweep_p)):
        if v is not None and _p_error(name, v):
            return _p_error(name, v)
    if c.rounds is not None and c.method != "imp":
        return f"--rounds applies to --method imp only, not to --method {c.method}"
    lo, hi = MASK_LR_RANGE
    if c.mask_lr is not None and not (math.isfinite(c.mask_lr) and lo <= c.mask_lr <= hi):
        return (f"--mask-lr must be a number in [{lo:g}, {hi:g}] (outside, the score step "
                f"vanishes or overflows), got {c.mask_lr}")
    if c.lam is not None:
        if c.lam != "auto":
            try:
                c.lam = float(c.lam)
            except (TypeError, ValueError):
                return f"--lam must be 'auto' or a number, got {c.lam!r}"
            if not (math.isfinite(c.lam) and c.lam >= 0):
                return f"--lam must be a finite number >= 0, got {c.lam}"
        elif c.method != "scl" and c.method != "scl-lp":
            return "--lam auto is scl's calibration; concave takes a number"
    for opt in ("mask_lr", "lam", "penalty"):
        if getattr(c, opt) is not None and c.method not in LEARNED:
            return (f"--{opt.replace('_', '-')} applies to the learned-mask methods "
                    f"({', '.join(LEARNED)}), not to --method {c.method}")
    if c.channel_sparsity is not None:
        if c.method != "chase":
            return "--channel-sparsity applies to --method chase only"
        if not 0.0 <= c.channel_sparsity < 1.0:
            return f"--channel-sparsity must be in [0, 1), got {c.channel_sparsity}"
    if c.penalty is not None and c.method != "concave":
        return "--penalty applies to --method concave only"
    if c.recipe == "reference":
        if c.method != "lpss":
            return ("--recipe reference is LpSS's (the reference implementation's); "
                    f"not for --method {c.method}")
        given = [f for f, v, d in (("--p", c.p, None), ("--controller", c.controller, "schedule"),
                                   ("--h-schedule", c.h_schedule, "auto"),
                                   ("--frequency", c.frequency, None),
                                   ("--no-revive", c.no_revive, False),
                                   ("--no-adapt-h", c.no_adapt_h, False),
                                   ("--finalize", c.finalize, "auto"),
                                   ("--sweep-p", c.sweep_p, None)) if v != d]
        if given:
            return (f"--recipe reference sets {', '.join(given)} itself; leave "
                    f"{'it' if len(given) == 1 else 'them'} out")
    if c.model == "cnn" and c.dataset == "breast_cancer":
        return "--model cnn needs image or sequence data; breast_cancer is tabular (use mlp)"
    if c.sweep_p and isinstance(c.p, list):
        return "--sweep-p takes one p per run; do not combine it with a per-layer --p list"
    return None
