"""Evidence on real data for the README (``python -m benchmarks.evidence``):
an experiment driver over ``lpcore_torch.cli``'s runs.

(a) Hoyer sparsity vs p (LpSGD without pruning; digits, mnist5k and mnist1d,
    MLP and CNN): measured per layer beside the gamma model's prediction from
    every shape estimator, and each estimator's mean absolute error.
(b) LpSS (the default p = 2) at target sparsities 0.5, 0.8, 0.9 on digits and
    mnist5k: the sparsity just before ``end``, the final sparsity, the
    plateau ``expected_pruned_fraction`` predicts for the drop rule alone
    beside the one measured with the drop threshold held fixed, and
    ``sparsity_vs_epoch.png``.
(c) Test accuracy at sparsity 0.9, MLP and CNN, on digits, mnist5k and
    mnist1d, mean +- std over seeds: LpSS (the default p = 2, p = auto, p =
    1.3, the reference's recipe) against dense SGD, gradual magnitude pruning
    on SGD and on LpSGD (magnitude-lp: the optimizer's share of the gain),
    SET, RigL, static; on the MLP also IMP, the learned-mask methods (SCL, SCL
    on LpSGD, the concave lottery with the log and the l1 penalty).
(d) The controller, step by step from the reference's (digits, target 0.9).
(e) Chase against RigL on the CNN (digits, mnist1d): channel sparsity, the
    compacted model's size and CPU inference time.
(f) From (c)'s runs: spectral gaps per method and their rank correlation
    with accuracy.
(g) Test accuracy vs training samples, dense vs a pruned one-hidden-layer
    network (mnist5k), and ``lottery_sample_complexity.png``.
(h) The norm-based bound of Galanti et al. beside the measured generalization
    gap, and Hoang et al.'s Ramanujan gaps (their definitions) beside
    accuracy: dense, magnitude, LpSS, SCL MLPs on digits and mnist5k.

Prints markdown tables and writes them, the plot and the raw runs (JSON) to --out.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time

import numpy as np

from lpcore_torch.cli import DEFAULT_P, RunConfig, cuda_problem, run
from lpcore_torch.cli.run import DEFAULT_ESTIMATOR, ESTIMATORS
from lpcore_torch.data import load

PS = (1.1, 1.2, 1.3, 1.5, 2.0)
TARGETS = (0.5, 0.8, 0.9)
# epochs per (data set, model): what 2 CPU cores allow for 3 seeds
CHASE_EPOCHS = 10
EPOCHS = {("digits", "mlp"): 60, ("digits", "cnn"): 30, ("mnist5k", "mlp"): 30,
          ("mnist5k", "cnn"): 8, ("mnist1d", "mlp"): 30, ("mnist1d", "cnn"): 20}
DATASETS = ("digits", "mnist5k", "mnist1d")


class Setup:
    """What every table's runs share: the device they train on and the data
    splits (each (data set, seed) loaded once)."""

    def __init__(self, device):
        self.device = device
        self.data = functools.cache(load)

    def config(self, **options):
        """A checked :class:`RunConfig` with ``options``, on this device."""
        return RunConfig(device=self.device, **options).checked(cuda_problem)


def _ms(xs):
    xs = list(xs)
    return (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _fmt(xs, nd=3):
    m, s = _ms(xs)
    return f"{m:.{nd}f} +- {s:.{nd}f}"


def _pre_end(r):
    """Sparsity at the last epoch that ends before the topology freezes (80%)."""
    return r["history"][int(0.8 * len(r["history"])) - 2]["sparsity"]


def hoyer_vs_p(seeds, env, log, runs=None):
    if runs is None:
        runs = []
        for (ds, model) in ((d, m) for d in DATASETS for m in ("mlp", "cnn")):
            for p in PS:
                for s in seeds:
                    cfg = env.config(dataset=ds, model=model, method="dense-lp",
                                     epochs=EPOCHS[(ds, model)], seed=s, all_estimators=True)
                    runs.append(run(cfg, p, env.data(ds, s), progress=False))
                log(f"(a) {ds} {model} p={p}")
    md = [f"#### (a) Hoyer sparsity vs p (LpSGD dual, no pruning, seeds {seeds})", "",
          f"Prediction: `{DEFAULT_ESTIMATOR}` (the estimator with the smallest mean absolute "
          "error in the second table).", "",
          "| data | model | p | layer | fan-in | Hoyer measured | predicted | error | test acc |",
          "|---|---|---|---|---|---|---|---|---|"]
    err = {e: [] for e in ESTIMATORS}
    per_cfg = {}
    for r in runs:
        for lay in r["layers"]:
            for e, v in lay["hoyer_estimates"].items():
                if v is not None:
                    err[e].append(abs(v - lay["hoyer"]))
                    per_cfg.setdefault((r["dataset"], r["model"], r["p"], e), []).append(
                        abs(v - lay["hoyer"]))
    keys = sorted({(r["dataset"], r["model"], r["p"]) for r in runs})
    for ds, model, p in keys:
        rs = [r for r in runs if (r["dataset"], r["model"], r["p"]) == (ds, model, p)]
        for li, lay in enumerate(rs[0]["layers"]):
            hm = [r["layers"][li]["hoyer"] for r in rs]
            hp = [r["layers"][li]["hoyer_estimates"][DEFAULT_ESTIMATOR] for r in rs]
            e = [abs(x - y) for x, y in zip(hm, hp)]
            md.append(f"| {ds} | {model} | {p} | {lay['name']} | {lay['fan_in']} | {_fmt(hm)} | "
                      f"{_fmt(hp)} | {statistics.mean(e):.3f} | "
                      f"{statistics.mean(r['test_accuracy'] for r in rs):.4f} |")
    md += ["", "Mean absolute error of the Hoyer prediction per estimator (all layers, runs "
           "and seeds above; worst configuration = data/model/p with the largest mean error):", "",
           "| estimator | mean abs error | worst configuration |", "|---|---|---|"]
    for e in sorted(ESTIMATORS, key=lambda e: statistics.mean(err[e]) if err[e] else 9):
        if not err[e]:
            continue
        worst = max(((k, statistics.mean(v)) for k, v in per_cfg.items() if k[3] == e),
                    key=lambda kv: kv[1])
        md.append(f"| {e} | {statistics.mean(err[e]):.3f} | {worst[0][0]} {worst[0][1]} "
                  f"p={worst[0][2]}: {worst[1]:.3f} |")
    return runs, md


def sparsity_vs_target(seeds, env, log, out):
    import lpcore
    runs = []
    md = [f"#### (b) LpSS reaching the target by itself (p = {DEFAULT_P}, the default; MLP, "
          f"seeds {seeds})", "",
          "| data | target | p per layer | sparsity just before `end` | final sparsity | "
          "plateau predicted / measured (drop rule alone at these p) | test acc |",
          "|---|---|---|---|---|---|---|"]
    curves = {}
    for ds in ("digits", "mnist5k"):
        for target in TARGETS:
            rs = [run(env.config(dataset=ds, target_sparsity=target, seed=s,
                            epochs=EPOCHS[(ds, "mlp")]), DEFAULT_P, env.data(ds, s), progress=False)
                  for s in seeds]
            ps = [lay["p"] for lay in rs[0]["layers"]]
            # where the drop rule alone stalls at these p: fixed h, no threshold adaptation and
            # an unreachable schedule (0.99), so that nothing regrows
            plat = [run(env.config(dataset=ds, target_sparsity=0.99, seed=s, no_adapt_h=True,
                              epochs=EPOCHS[(ds, "mlp")]), ps, env.data(ds, s), progress=False)
                    for s in seeds]
            runs += rs + plat
            fans = [lay["fan_in"] for lay in rs[0]["layers"]]
            sizes = [np.prod(lay["shape"]) for lay in rs[0]["layers"]]
            pred = [float(lpcore.expected_pruned_fraction(p, 0.2, n=f)) for p, f in zip(ps, fans)]
            pred_net = float(np.dot(pred, sizes) / np.sum(sizes))
            md.append(f"| {ds} | {target} | {', '.join(f'{p:.3f}' for p in ps)} | "
                      f"{_fmt(_pre_end(r) for r in rs)} | {_fmt(r['sparsity'] for r in rs)} | "
                      f"{pred_net:.3f} / {_fmt(r['sparsity'] for r in plat)} | "
                      f"{_fmt((r['test_accuracy'] for r in rs), 4)} |")
            curves[(ds, target)] = np.mean([[h["sparsity"] for h in r["history"]] for r in rs], 0)
            log(f"(b) {ds} target={target}")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    for ax, ds in zip(axes, ("digits", "mnist5k")):
        for target in TARGETS:
            c = curves[(ds, target)]
            ax.plot(np.arange(1, len(c) + 1), c, label=f"target {target}")
            ax.axhline(target, color="grey", lw=0.5, ls=":")
        n = len(curves[(ds, TARGETS[0])])
        ax.axvline(0.8 * n, color="k", lw=0.6, ls="--")
        ax.set_title(f"{ds}: LpSS, p = {DEFAULT_P} (mean of {len(seeds)} seeds)")
        ax.set_xlabel("epoch")
    axes[0].set_ylabel("exact sparsity")
    axes[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "sparsity_vs_epoch.png"), dpi=110)
    plt.close(fig)
    return runs, md


#: table (c)'s rows: (method[:concave penalty], label, p, extra arguments, on the CNN too)
C_ROWS = [
    ("dense", "dense SGD (no pruning)", None, {}, True),
    ("lpss", f"lpss (default: p = {DEFAULT_P})", DEFAULT_P, {}, True),
    ("lpss", "lpss, p = auto", "auto", {}, True),
    ("lpss", "lpss, p = 1.3", 1.3, {}, False),
    ("lpss", "lpss, the reference's recipe (--recipe reference)", None,
     {"recipe": "reference"}, True),
    ("magnitude", "magnitude (SGD)", None, {}, True),
    ("magnitude-lp", f"magnitude on LpSGD, p = {DEFAULT_P} (magnitude-lp)", DEFAULT_P, {}, True),
    ("set", "set", None, {}, False), ("rigl", "rigl", None, {}, True),
    ("static", "static", None, {}, False),
    ("imp", "imp (3 rounds + ticket: 4 trainings)", None, {}, False),
    ("scl", "scl (SGD, lam calibrated)", None, {}, False),
    ("scl-lp", f"scl on LpSGD, p = {DEFAULT_P}", DEFAULT_P, {}, False),
    ("concave", "concave, log penalty (search + ticket: 2 trainings)", None, {}, False),
    ("concave:l1", "concave, l1 penalty (search + ticket: 2 trainings)", None, {}, False),
]


def accuracy_at_0_9(seeds, env, log):
    runs = []
    md = [f"#### (c) Test accuracy at sparsity 0.9 (mean +- std over seeds {seeds})", "",
          "The CNN runs a subset of the methods (the LpSS rows and the baselines that isolate "
          "the optimizer and the pruning rule).", "",
          "| data set | model | method | test accuracy | exact sparsity | train s/run |",
          "|---|---|---|---|---|---|"]
    for model in ("mlp", "cnn"):
        for ds in DATASETS:
            for method, label, p, kw, on_cnn in C_ROWS:
                if model == "cnn" and not on_cnn:
                    continue
                method, _, penalty = method.partition(":")
                if penalty:
                    kw = dict(kw, penalty=penalty)
                rs = [run(env.config(dataset=ds, model=model, method=method,
                                epochs=EPOCHS[(ds, model)], seed=s, **kw),
                          p, env.data(ds, s), progress=False) for s in seeds]
                for r in rs:
                    r["label"] = label
                runs += rs
                md.append(f"| {ds} | {model} | {label} | "
                          f"{_fmt((r['test_accuracy'] for r in rs), 4)} | "
                          f"{statistics.mean(r['sparsity'] for r in rs):.3f} | "
                          f"{statistics.mean(r['train_time_s'] for r in rs):.1f} |")
                log(f"(c) {ds} {model} {label}")
    return runs, md


def controller_steps(seeds, env, log):
    runs = []
    md = [f"#### (d) The controller, from the reference's to the library's (digits, MLP, target "
          f"0.9, seeds {seeds})", "",
          "| variant | p | sparsity just before `end` | final | largest epoch-to-epoch step "
          "after 50% | test acc |", "|---|---|---|---|---|---|"]
    ref = dict(controller="reference", h_schedule="cosine", no_adapt_h=True, no_revive=True)
    variants = [
        ("the reference's recipe (`--recipe reference`: no revival, hard pruning, grow ratio "
         "(1 -+ delta) s/s* toward the final s* over all parameters, cosine-annealed h, classifier "
         "masked, Nesterov, warm-up-then-decay lr)", None, dict(recipe="reference")),
        ("reference controller alone (grow ratio toward s*, cosine-annealed h, no revival)",
         1.3, ref),
        ("the same", DEFAULT_P, ref),
        ("+ revival of latent values above the threshold (the library's semi-pruning)",
         DEFAULT_P, dict(ref, no_revive=False)),
        ("+ schedule-tracking grow ratio", DEFAULT_P, dict(h_schedule="cosine", no_adapt_h=True)),
        ("+ constant h", DEFAULT_P, dict(no_adapt_h=True)),
        ("+ threshold adaptation (library default)", DEFAULT_P, {}),
        ("library default, without revival", DEFAULT_P, dict(no_revive=True)),
        ("library default, p = auto", "auto", {}),
    ]
    for label, p, kw in variants:
        rs = [run(env.config(seed=s, **kw), p, env.data("digits", s), progress=False) for s in seeds]
        runs += rs
        steps = []
        for r in rs:
            h = [x["sparsity"] for x in r["history"]]
            steps.append(max(abs(b - a) for a, b in zip(h[len(h) // 2:], h[len(h) // 2 + 1:])))
        pl = p if p is not None else ", ".join(f"{v:g}" for v in rs[0]["p"])
        md.append(f"| {label} | {pl} | {_fmt(_pre_end(r) for r in rs)} | "
                  f"{_fmt(r['sparsity'] for r in rs)} | {max(steps):.3f} | "
                  f"{_fmt((r['test_accuracy'] for r in rs), 4)} |")
        log(f"(d) {label}")
    return runs, md


def chase_vs_rigl(seeds, env, log):
    """Chase on the CNN against RigL (the same dynamic sparse training without
    channel removal): accuracy, weight and channel sparsity, the compacted
    model's size and CPU inference time."""
    runs = []
    md = [f"#### (e) Chase on the CNN: channels removed, compacted size and speed (target 0.9, "
          f"--epochs {CHASE_EPOCHS}, mean +- std over seeds {seeds})", "",
          "| data set | method | test accuracy | exact sparsity | channel sparsity | parameters "
          "masked -> compact | CPU inference masked -> compact (ms, test set) | train s/run |",
          "|---|---|---|---|---|---|---|---|"]
    for ds in ("digits", "mnist1d"):
        for method in ("rigl", "chase"):
            rs = [run(env.config(dataset=ds, model="cnn", method=method, epochs=CHASE_EPOCHS, seed=s),
                      1.3, env.data(ds, s), progress=False) for s in seeds]
            runs += rs
            if method == "chase":
                c = [r["compact"] for r in rs]
                size = (f"{statistics.mean(x['params_masked_model'] for x in c):.0f} -> "
                        f"{statistics.mean(x['params_compact'] for x in c):.0f}")
                speed = (f"{1e3 * statistics.mean(x['inference_s_masked'] for x in c):.1f} -> "
                         f"{1e3 * statistics.mean(x['inference_s_compact'] for x in c):.1f}")
            else:
                size = speed = "-"
            md.append(f"| {ds} | {method} | {_fmt((r['test_accuracy'] for r in rs), 4)} | "
                      f"{statistics.mean(r['sparsity'] for r in rs):.3f} | "
                      f"{_fmt(r['channel_sparsity'] for r in rs)} | {size} | {speed} | "
                      f"{statistics.mean(r['train_time_s'] for r in rs):.1f} |")
            log(f"(e) {ds} {method}")
    return runs, md


def _library_gaps(r):
    """(mean Ramanujan gap, mean weighted spectral gap) over a run's layers
    (the library's definitions; the Ramanujan gap NaN below degree 1)."""
    lays = r["layers"]
    ram = [x["ramanujan_gap"] for x in lays if x["ramanujan_gap"] == x["ramanujan_gap"]]
    return (statistics.mean(ram) if ram else float("nan"),
            statistics.mean(x["weighted_spectral_gap"] for x in lays))


def _spearman(xs, ys):
    """'rho (p-value, n = ...)' over the pairs where both are numbers."""
    from scipy.stats import spearmanr
    ok = [(x, y) for x, y in zip(xs, ys) if x == x and y == y]
    if len(ok) < 3:
        return f"- (n = {len(ok)})"
    rho, pv = spearmanr([x for x, _ in ok], [y for _, y in ok])
    return f"{rho:+.2f} ({pv:.2g}, n = {len(ok)})"


def spectral_gaps(runs_c):
    """(f) From table (c)'s runs, per method: the measured generalization gap
    beside Galanti et al.'s bound, Hoang et al.'s Delta_s / Delta_r (their
    definitions) and the library's Ramanujan and weighted spectral gaps; per
    data set and model the rank correlations of accuracy with each gap
    (sparse runs) and of the bound with the measured gap (all runs)."""
    md = ["#### (f) Mask topology and the norm-based bound over the runs of table (c)", "",
          "Per method, the mean over seeds of: the measured generalization gap (train minus "
          "test accuracy), `lpcore.generalization_bound` (>= 1 is vacuous), the authors' "
          "Delta_s and Delta_r (`lpcore.ramanujan_gaps`, mean over the layers they score: "
          "average degree >= 3), the library's Ramanujan gap (2 sqrt(d - 1) - sigma_2, d over "
          "both sides) and weighted spectral gap (sigma_1 - sigma_2 of |w| * mask). "
          "**Spearman** rows: rank correlation of test accuracy with each gap across the "
          "sparse runs, and of the bound with the measured gap across all runs (dense "
          "included), p-value and count in brackets.", "",
          "| data set | model | method | test accuracy | accuracy gap | bound | Delta_s | "
          "Delta_r | Ramanujan gap (library) | weighted spectral gap |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for model, ds in ((m, d) for m in ("mlp", "cnn") for d in DATASETS):
        rs = [r for r in runs_c if r["dataset"] == ds and r.get("model", "mlp") == model]
        if not rs:
            continue
        labels = list(dict.fromkeys(r["label"] for r in rs))
        for label in labels:
            grp = [r for r in rs if r["label"] == label]
            gen = [r["generalization"] for r in grp]
            ag = [_authors_gaps(r) for r in grp]
            lg = [_library_gaps(r) for r in grp]
            md.append(f"| {ds} | {model} | {label} | "
                      f"{_fmt((r['test_accuracy'] for r in grp), 4)} | "
                      f"{_fmt((g['accuracy_gap'] for g in gen), 4)} | "
                      f"{statistics.mean(g['bound'] for g in gen):.3g} | "
                      f"{_fmt(x[0] for x in ag)} | {_fmt(x[1] for x in ag)} | "
                      f"{_fmt(x[0] for x in lg)} | {_fmt(x[1] for x in lg)} |")
        sparse = [r for r in rs if r["method"] not in ("dense", "dense-lp")]
        acc = [r["test_accuracy"] for r in sparse]
        ag = [_authors_gaps(r) for r in sparse]
        lg = [_library_gaps(r) for r in sparse]
        bound = _spearman([r["generalization"]["bound"] for r in rs],
                          [r["generalization"]["accuracy_gap"] for r in rs])
        md.append(f"| {ds} | {model} | **Spearman** | | | bound vs measured gap {bound} | "
                  f"{_spearman(acc, [x[0] for x in ag])} | {_spearman(acc, [x[1] for x in ag])} | "
                  f"{_spearman(acc, [x[0] for x in lg])} | {_spearman(acc, [x[1] for x in lg])} |")
    return md


BOUND_METHODS = (("dense", "dense SGD"), ("magnitude", "magnitude (SGD)"),
                 ("lpss", f"lpss, p = {DEFAULT_P}"), ("scl", "scl (SGD)"))


def _authors_gaps(r):
    """(mean delta_s, mean delta_r) over the layers the authors' code scores."""
    got = [x["ramanujan_gaps"] for x in r["layers"] if x.get("ramanujan_gaps")]
    if not got:
        return float("nan"), float("nan")
    return (statistics.mean(g["delta_s"] for g in got),
            statistics.mean(g["delta_r"] for g in got))


def bound_vs_gap(seeds, env, log):
    """(h) Galanti et al.'s norm-based bound beside the measured generalization
    gap, and Hoang et al.'s gaps (their definitions) beside accuracy: dense,
    magnitude, LpSS and SCL MLPs at sparsity 0.9 on digits and mnist5k."""
    runs, md = [], [
        f"#### (h) The norm-based bound and the authors' Ramanujan gaps (MLP, seeds {seeds})",
        "", "Bound: `lpcore.generalization_bound` (Galanti et al. 2023 as their code computes "
        "it; >= 1 is vacuous for the 0-1 error). Measured gap: train minus test accuracy (and "
        "test minus train cross-entropy). Delta_s, Delta_r: `lpcore.ramanujan_gaps` (Hoang et "
        "al.'s definitions), mean over the layers they score (average degree >= 3; the dense "
        "network's complete layers have lambda_2 = 0).", "",
        "| data set | method | test accuracy | accuracy gap | loss gap | bound | Delta_s | "
        "Delta_r |", "|---|---|---|---|---|---|---|---|"]
    for ds in ("digits", "mnist5k"):
        rows = []
        for method, label in BOUND_METHODS:
            rs = [run(env.config(dataset=ds, method=method, epochs=EPOCHS[(ds, "mlp")], seed=s),
                      DEFAULT_P, env.data(ds, s), progress=False) for s in seeds]
            for r in rs:
                r["label"] = label
            runs += rs
            gen = [r["generalization"] for r in rs]
            ag = [_authors_gaps(r) for r in rs]
            rows.append((label, statistics.mean(g["accuracy_gap"] for g in gen),
                         statistics.mean(g["bound"] for g in gen)))
            md.append(f"| {ds} | {label} | {_fmt((r['test_accuracy'] for r in rs), 4)} | "
                      f"{_fmt((g['accuracy_gap'] for g in gen), 4)} | "
                      f"{_fmt((g['loss_gap'] for g in gen), 3)} | "
                      f"{statistics.mean(g['bound'] for g in gen):.3g} | "
                      f"{_fmt(x[0] for x in ag)} | {_fmt(x[1] for x in ag)} |")
            log(f"(h) {ds} {method}")
        by_gap = [lb for lb, _, _ in sorted(rows, key=lambda t: t[1])]
        by_bound = [lb for lb, _, _ in sorted(rows, key=lambda t: t[2])]
        rs = [r for r in runs if r["dataset"] == ds]
        cells = ["bound vs measured gap " + _spearman(
            [r["generalization"]["bound"] for r in rs],
            [r["generalization"]["accuracy_gap"] for r in rs])]
        sparse = [r for r in rs if r["method"] != "dense"]
        acc = [r["test_accuracy"] for r in sparse]
        ag = [_authors_gaps(r) for r in sparse]
        for i, name in ((0, "Delta_s"), (1, "Delta_r")):
            cells.append(f"{name} vs accuracy (sparse runs) "
                         + _spearman(acc, [x[i] for x in ag]))
        md.append(f"| {ds} | **Spearman** | {'; '.join(cells)} | | | | | |")
        md.append(f"| {ds} | **order** | smallest measured gap first: {', '.join(by_gap)}; "
                  f"smallest bound first: {', '.join(by_bound)} | | | | | |")
    return runs, md


LOTTERY_SIZES = (250, 500, 1000, 2000, 3750)
LOTTERY_HIDDEN = 256
LOTTERY_KEEP = 0.1


def _one_hidden(seed, n_in, n_out):
    import torch
    from torch import nn
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, LOTTERY_HIDDEN), nn.ReLU(), nn.Linear(LOTTERY_HIDDEN, n_out))


def _fit(net, X, y, mask=None, epochs=20, batch=50, lr=0.05, seed=0):
    """Plain SGD (momentum 0.9) on (X, y); ``mask``: the hidden layer's
    fixed 0/1 mask (masked weights zero and never updated)."""
    import torch
    from torch import nn
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    w = net[0].weight
    if mask is not None:
        with torch.no_grad():
            w.mul_(mask)
    g = torch.Generator().manual_seed(seed)
    steps = max(1, len(X) // batch)
    # the same number of steps for every subset size: small subsets take more epochs
    total = max(epochs * steps, 1000)
    for t in range(total):
        if t % steps == 0:
            perm = torch.randperm(len(X), generator=g)
        idx = perm[(t % steps) * batch:(t % steps + 1) * batch]
        opt.zero_grad()
        nn.functional.cross_entropy(net(X[idx]), y[idx]).backward()
        if mask is not None:
            w.grad.mul_(mask)
        opt.step()
        if mask is not None:
            with torch.no_grad():
                w.mul_(mask)
    return net


def sample_complexity(seeds, env, log, out):
    """*Why Lottery Ticket Wins* (Zhang et al. 2021): test accuracy against the
    number of training samples for a one-hidden-layer network, dense and
    pruned to a ticket (mnist5k)."""
    import torch

    import lpcore
    rows = {}
    for s in seeds:
        Xtr, ytr, Xte, yte, _ = env.data("mnist5k", s)
        Xtr, ytr = torch.from_numpy(Xtr), torch.from_numpy(ytr)
        Xte, yte = torch.from_numpy(Xte), torch.from_numpy(yte)
        n_out = int(ytr.max()) + 1
        # the ticket: a dense network trained on the whole training split, its hidden
        # layer cut to the largest 10% |w| (lpcore.drop_smallest), rewound to its init
        init = _one_hidden(s, Xtr.shape[1], n_out)
        full = _fit(_one_hidden(s, Xtr.shape[1], n_out), Xtr, ytr, seed=s)
        w = full[0].weight.detach().numpy()
        k = w.size - int(round(LOTTERY_KEEP * w.size))
        mask_np, _ = lpcore.drop_smallest(w, np.ones(w.shape, bool), k)
        mask = torch.from_numpy(mask_np.astype(np.float32))
        rng = np.random.default_rng(1000 + s)
        for n in LOTTERY_SIZES:
            sub = torch.from_numpy(np.sort(rng.choice(len(Xtr), size=n, replace=False)))
            for kind in ("dense", "ticket", "random"):
                net = _one_hidden(s, Xtr.shape[1], n_out)
                net.load_state_dict(init.state_dict())
                m = {"dense": None, "ticket": mask}.get(kind)
                if kind == "random":  # the same count of hidden weights, placed at random
                    m = torch.from_numpy(lpcore.random_mask(w.shape, 1 - LOTTERY_KEEP, rng)
                                         .astype(np.float32))
                _fit(net, Xtr[sub], ytr[sub], mask=m, seed=s)
                with torch.no_grad():
                    acc = (net(Xte).argmax(1) == yte).float().mean().item()
                rows.setdefault((kind, n), []).append(acc)
        log(f"(g) seed {s}")
    md = ["#### (g) Test accuracy vs training samples: dense vs pruned one-hidden-layer "
          f"network (mnist5k, {LOTTERY_HIDDEN} hidden units, seeds {seeds})", "",
          f"The ticket keeps the largest {LOTTERY_KEEP:.0%} |w| of the hidden layer of a "
          "dense network trained on the whole training split (3,750 images), rewound to the "
          "initialisation; 'random' keeps as many hidden weights at random.  Every network "
          "trains for max(20 epochs, 1,000 steps) of SGD on the subset.", "",
          "| training samples | dense | ticket (10% hidden weights) | random mask (10%) |",
          "|---|---|---|---|"]
    for n in LOTTERY_SIZES:
        md.append(f"| {n} | {_fmt(rows[('dense', n)], 4)} | {_fmt(rows[('ticket', n)], 4)} | "
                  f"{_fmt(rows[('random', n)], 4)} |")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for kind, label in (("dense", "dense"), ("ticket", "ticket (10%)"), ("random", "random mask (10%)")):
        mu = [statistics.mean(rows[(kind, n)]) for n in LOTTERY_SIZES]
        sd = [statistics.stdev(rows[(kind, n)]) if len(seeds) > 1 else 0.0 for n in LOTTERY_SIZES]
        ax.errorbar(LOTTERY_SIZES, mu, yerr=sd, marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xticks(LOTTERY_SIZES, [str(n) for n in LOTTERY_SIZES])
    ax.minorticks_off()
    ax.set_xlabel("training samples (mnist5k subset)")
    ax.set_ylabel("test accuracy")
    ax.set_title("one hidden layer: dense vs pruned")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "lottery_sample_complexity.png"), dpi=110)
    plt.close(fig)
    return {f"{k}:{n}": v for (k, n), v in rows.items()}, md


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.evidence", description=__doc__)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="evidence")
    ap.add_argument("--parts", default="a,b,c,d", help="which tables to regenerate")
    ap.add_argument("--tabulate-c", default=None, metavar="JSON",
                    help="tabulate (f) from table (c)'s runs saved in an earlier evidence.json")
    ap.add_argument("--tabulate-a", default=None, metavar="JSON",
                    help="tabulate (a) from the runs saved in an earlier evidence.json "
                         "(re-scoring the estimators without retraining)")
    ap.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                    help="where the runs train (as lpcore-train --device)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch's intra-op threads for this process (recorded with the tables; "
                         "the last digits of a run can depend on it)")
    a = ap.parse_args(argv)
    if a.threads < 1:
        ap.error("--threads must be >= 1")
    import torch
    torch.set_num_threads(a.threads)
    if a.device != "cpu":
        why = cuda_problem()
        if a.device == "cuda" and why:
            ap.error(f"--device cuda: {why}")
        a.device = "cpu" if why else "cuda"
    env = Setup(a.device)
    seeds = [int(s) for s in a.seeds.split(",")]
    parts = a.parts.split(",")
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()

    def log(msg):
        print(f"{msg} done, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)

    raw = {"seeds": seeds, "device": a.device, "torch_threads": torch.get_num_threads()}
    md = [f"(torch intra-op threads: {torch.get_num_threads()}; device: {a.device})", ""]
    saved_a = None
    if a.tabulate_a:
        with open(a.tabulate_a) as f:
            saved_a = json.load(f)
        saved_a = saved_a["a"] if isinstance(saved_a, dict) else saved_a
    for name, fn in (("a", hoyer_vs_p), ("b", sparsity_vs_target), ("c", accuracy_at_0_9),
                     ("d", controller_steps), ("e", chase_vs_rigl), ("g", sample_complexity),
                     ("h", bound_vs_gap)):
        if name in parts:
            extra = (a.out,) if name in ("b", "g") else (saved_a,) if name == "a" else ()
            raw[name], lines = fn(seeds, env, log, *extra)
            md += lines + [""]
    if "f" in parts:
        runs_c = raw.get("c")
        if runs_c is None:
            if not a.tabulate_c:
                ap.error("--parts f tabulates table (c)'s runs: with c, or --tabulate-c JSON")
            with open(a.tabulate_c) as f:
                runs_c = json.load(f)["c"]
        md += spectral_gaps(runs_c) + [""]
    text = "\n".join(md)
    print(text)
    with open(os.path.join(a.out, "evidence.md"), "w") as f:
        f.write(text)
    with open(os.path.join(a.out, "evidence.json"), "w") as f:
        json.dump(raw, f)
    print(f"\n{time.time() - t0:.0f} s in total", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
