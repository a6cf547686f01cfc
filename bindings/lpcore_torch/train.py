"""``lpcore-train``: train a sparse network on built-in real data.

    lpcore-train                                  # digits, MLP, LpSS, target sparsity 0.9
    lpcore-train --dataset mnist5k --model cnn --method rigl
    lpcore-train --sweep-p 1.1,1.3,1.5,2.0 --method dense-lp   # Hoyer vs p

Writes ``metrics.json`` and ``training.png`` (and ``hoyer_vs_p.png`` with
``--sweep-p``) into ``--out``; every file is written in a temporary folder and
moved into place only when the run has finished, so a failure or Ctrl-C
leaves nothing half-written.  Exit code 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

METHODS = ("lpss", "set", "rigl", "static", "magnitude", "dense", "dense-lp")


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


def build_parser():
    from .data import DATASETS
    ap = argparse.ArgumentParser(prog="lpcore-train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=DATASETS, default="digits")
    ap.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    ap.add_argument("--method", choices=METHODS, default="lpss",
                    help="lpss (LpSGD + semi-pruning), set, rigl, static, magnitude (SGD "
                         "baselines), dense (SGD), dense-lp (LpSGD, no pruning)")
    ap.add_argument("--p", type=_parse_p, default="auto",
                    help="'auto' (each layer's p from its fan-in, --h0 and --target-sparsity: "
                         "lpcore.p_for_sparsity), an exponent, or a comma list with one value per "
                         "constrained layer")
    ap.add_argument("--target-sparsity", type=float, default=0.9)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05, help="SGD step (plain parameters, baselines)")
    ap.add_argument("--lp-lr", type=float, default=0.02, help="LpSGD step of constrained weights")
    ap.add_argument("--lr-decay", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.9)
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
                    help="lpss: drop among active connections only (the reference lets latent "
                         "ones above the threshold come back)")
    ap.add_argument("--finalize", choices=("auto", "exact", "none"), default="auto",
                    help="adjust the masks to exactly the target at the end of pruning "
                         "(auto: not for lpss, yes for the baselines)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="only 'cpu' in this version")
    ap.add_argument("--out", default="lpcore-run", help="output folder")
    ap.add_argument("--sweep-p", type=_parse_sweep, default=None,
                    help="train once per p (comma list) and plot Hoyer vs p")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--all-estimators", action="store_true",
                    help="record the Hoyer prediction of every estimator in metrics.json")
    return ap


def _check(ap, a):
    if not 0.0 < a.target_sparsity < 1.0:
        ap.error(f"--target-sparsity must be in (0, 1), got {a.target_sparsity}")
    if not 0 <= a.h0 < 1:
        ap.error(f"--h0 must be in [0, 1), got {a.h0}")
    if a.epochs < 1 or a.batch_size < 1 or (a.frequency is not None and a.frequency < 1):
        ap.error("--epochs, --batch-size and --frequency must be >= 1")
    for name in ("lr", "lp_lr"):
        if not getattr(a, name) > 0:
            ap.error(f"--{name.replace('_', '-')} must be > 0")
    if not 0 < a.lp_lr <= 1:
        ap.error("--lp-lr must be in (0, 1]")
    if a.lr_decay < 0 or not 0 <= a.momentum < 1:
        ap.error("--lr-decay must be >= 0 and --momentum in [0, 1)")
    if a.device != "cpu":
        ap.error(f"--device {a.device!r}: this version of lpcore runs on the CPU only")
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


def _state_groups(st, key, n):
    t = st.get(key)
    return None if t is None else t.detach().float().numpy().reshape(-1, n)


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


def run(a, p, data, progress=True):
    """One training run; returns the metrics dict."""
    import torch
    from torch import nn

    import lpcore
    import lpcore_torch

    Xtr, ytr, Xte, yte, shape = data
    torch.manual_seed(a.seed)
    n_classes = int(max(ytr.max(), yte.max()) + 1)
    net = build_model(a.model, Xtr[0].size, shape, n_classes)
    view = (-1,) + tuple(shape) if a.model == "cnn" else (-1, Xtr[0].size)
    Xtr_t = torch.from_numpy(Xtr).reshape(view)
    Xte_t = torch.from_numpy(Xte).reshape(view)
    ytr_t, yte_t = torch.from_numpy(ytr), torch.from_numpy(yte)
    uses_lp = a.method in ("lpss", "dense-lp")
    if uses_lp:
        groups = lpcore_torch.lp_param_groups(net, p=p, target_sparsity=a.target_sparsity,
                                              h0=a.h0)
        for g in groups[:-1]:
            g["lr"] = a.lp_lr
        opt = lpcore_torch.LpSGD(groups, lr=a.lr, momentum=a.momentum, lr_decay=a.lr_decay)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=a.lr, momentum=a.momentum)
    steps_per_epoch = max(1, len(Xtr) // a.batch_size)
    total = a.epochs * steps_per_epoch
    trainer = None
    if a.method not in ("dense", "dense-lp"):
        begin, end = int(0.2 * total), max(int(0.8 * total), int(0.2 * total) + 1)
        freq = a.frequency or max(1, min(20, (end - begin) // 40))
        trainer = lpcore_torch.SparseTrainer(
            net, opt, method=a.method, target_sparsity=a.target_sparsity,
            begin=begin, end=end, frequency=freq, h0=a.h0, h_schedule=a.h_schedule, seed=a.seed,
            controller=a.controller, revive=not a.no_revive, finalize=a.finalize,
            adapt_h=not a.no_adapt_h)
    gen = torch.Generator().manual_seed(a.seed)
    history = []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=a.epochs, desc=f"{a.method} p={p}", unit="epoch", file=sys.stderr)

    def evaluate():
        net.eval()
        with torch.no_grad():
            acc = (net(Xte_t).argmax(1) == yte_t).float().mean().item()
        net.train()
        return acc

    def sparse_weights():
        if trainer is not None:
            return [(f"{it.name}.weight", it.weight) for it in trainer.items]
        names = {id(q): n for n, q in net.named_parameters()}
        if uses_lp:
            return [(names[id(w)], w) for g in opt.param_groups for w, _ in opt._constrained(g)]
        sel = lpcore_torch.lp_param_groups(net, p=2.0)
        return [(n, q) for g in sel[:-1] for n, q in zip(g["names"], g["params"])]

    def exact_sparsity():
        ws = sparse_weights()
        return sum(int((w == 0).sum()) for _, w in ws) / sum(w.numel() for _, w in ws)

    t0 = time.time()
    for ep in range(a.epochs):
        perm = torch.randperm(len(Xtr_t), generator=gen)
        tot = 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * a.batch_size:(i + 1) * a.batch_size]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(Xtr_t[idx]), ytr_t[idx])
            loss.backward()
            opt.step()
            if trainer is not None:
                trainer.step()
            tot += loss.item()
        rec = {"epoch": ep + 1, "train_loss": tot / steps_per_epoch,
               "test_accuracy": evaluate(), "sparsity": exact_sparsity()}
        if trainer is not None:
            rec["mask_sparsity"] = trainer.sparsity
            if a.method == "lpss":
                rec["h_gain"] = trainer.h_gain
        history.append(rec)
        if bar is not None:
            bar.set_postfix(acc=f"{rec['test_accuracy']:.4f}", sparsity=f"{rec['sparsity']:.3f}")
            bar.update(1)
    if bar is not None:
        bar.close()
    elapsed = time.time() - t0
    # full-batch gradient for the gamma-model prediction of each layer's Hoyer
    opt.zero_grad()
    nn.functional.cross_entropy(net(Xtr_t), ytr_t).backward()
    layers = []
    pmap = {}
    if uses_lp:
        for g in opt.param_groups:
            for w, lay in opt._constrained(g):
                pmap[id(w)] = (g["p"], lay)
    dense = {id(it.weight): it.dense_grad for it in trainer.items} if trainer is not None else {}
    for name, w in sparse_weights():
        p_l, lay = pmap.get(id(w), (None, None))
        if lay is None:
            lay = (tuple(w.shape), tuple(range(1, w.dim())))
        arr = w.detach().numpy().reshape(lay[0])
        n_in = int(np.prod([lay[0][ax] for ax in lay[1]]))
        h = float(np.mean(lpcore.hoyer(arr, axis=lay[1])))
        est = {}
        if p_l is not None:
            # the dense (unmasked) full-batch gradient: the trainer's hook keeps it
            gfull = dense.get(id(w), w.grad)
            st = opt.state[w]
            sources = {"gradient": (None if gfull is None else
                                    gfull.detach().numpy().reshape(lay[0]), lay[1]),
                       "momentum": (_state_groups(st, "momentum_buffer", n_in), 1),
                       "dual": (_state_groups(st, "dual", n_in), 1)}
            for e in (ESTIMATORS if a.all_estimators else (DEFAULT_ESTIMATOR, FALLBACK_ESTIMATOR)):
                est[e] = _predict(e, sources, n_in, p_l, a.seed)
        used = DEFAULT_ESTIMATOR if est.get(DEFAULT_ESTIMATOR, (None,))[0] is not None \
            else FALLBACK_ESTIMATOR
        pred, k = est.get(used, (None, None))
        layers.append({"name": name, "shape": list(w.shape), "fan_in": n_in,
                       "sparsity": float((w == 0).float().mean()), "hoyer": h,
                       "hoyer_predicted": pred, "gamma_shape": k, "p": p_l,
                       "estimator": used if pred is not None else None,
                       "hoyer_estimates": {e: v[0] for e, v in est.items()}})
    return {"dataset": a.dataset, "model": a.model, "method": a.method,
            "p": p, "target_sparsity": a.target_sparsity if trainer is not None else None,
            "test_accuracy": history[-1]["test_accuracy"], "sparsity": exact_sparsity(),
            "epochs": a.epochs, "seed": a.seed, "train_time_s": elapsed,
            "layers": layers, "history": history}


def _table(m):
    lines = [f"{m['dataset']} / {m['model']} / {m['method']}  p={m['p']}  "
             f"test accuracy {m['test_accuracy']:.4f}  exact sparsity {m['sparsity']:.4f}"
             + (f" (target {m['target_sparsity']})" if m['target_sparsity'] else "")
             + f"  train time {m['train_time_s']:.1f} s",
             f"{'layer':<14}{'fan-in':>8}{'p':>8}{'sparsity':>10}{'hoyer':>8}{'predicted':>11}"
             f"{'k':>7}"]
    for r in m["layers"]:
        pred = "-" if r["hoyer_predicted"] is None else f"{r['hoyer_predicted']:.4f}"
        k = "-" if r["gamma_shape"] is None else f"{r['gamma_shape']:.2f}"
        pl = "-" if r["p"] is None else f"{r['p']:.4f}"
        lines.append(f"{r['name']:<14}{r['fan_in']:>8}{pl:>8}{r['sparsity']:>10.4f}"
                     f"{r['hoyer']:>8.4f}{pred:>11}{k:>7}")
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
    ax.set_title(f"{m['dataset']} {m['model']} {m['method']} p={m['p']}")
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


def main(argv=None):
    ap = build_parser()
    a = ap.parse_args(argv)
    _check(ap, a)
    from .data import load
    try:
        data = load(a.dataset, a.seed)
    except RuntimeError as e:
        ap.error(str(e))
    out = os.path.abspath(a.out)
    parent = os.path.dirname(out) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".lpcore-train-", dir=parent)
    try:
        if a.sweep_p:
            runs = [run(a, p, data, progress=not a.quiet) for p in a.sweep_p]
            for r in runs:
                print(_table(r))
            metrics = dict(runs[-1], sweep=[{k: r[k] for k in ("p", "test_accuracy", "sparsity",
                                                                "layers")} for r in runs])
            _plot_sweep(runs, os.path.join(tmp, "hoyer_vs_p.png"))
        else:
            metrics = run(a, a.p, data, progress=not a.quiet)
            print(_table(metrics))
        with open(os.path.join(tmp, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=1)
        _plot_training(metrics, os.path.join(tmp, "training.png"))
        os.makedirs(out, exist_ok=True)
        for name in sorted(os.listdir(tmp)):
            os.replace(os.path.join(tmp, name), os.path.join(out, name))
        print(f"wrote {', '.join(sorted(os.listdir(out)))} to {out}")
    except KeyboardInterrupt:
        print("interrupted; nothing was written to --out", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
