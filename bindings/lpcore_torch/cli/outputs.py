"""What ``lpcore-train`` shows and draws: the layer table with its legend,
the run's label, ``training.png`` and ``hoyer_vs_p.png``."""
from __future__ import annotations

import textwrap


#: what the layer table's columns are (printed under it)
LEGEND = ("fan-in: connections per output unit; p: its LpSGD exponent (- : not on the "
          "sphere); sparsity: exact zeros; hoyer: Hoyer sparsity of the weights, mean over "
          "units (0 flat, 1 one connection); predicted: the gamma model's Hoyer at this p "
          "(momentum buffer, README table (a); masked connections count as zeros, so a unit "
          "with one active connection predicts 1); PR/active: participation ratio "
          "(sum|w|)^2/sum w^2 over the active count (1: all active weights equal); ram-gap / "
          "w-gap: Ramanujan and weighted spectral gap of the mask (lpcore.ramanujan_gap, "
          "weighted_spectral_gap)")


def label(method, p):
    """The method, and its p for the LpSGD methods (the others have none)."""
    if p is None:
        return method
    if isinstance(p, list):
        p = ",".join(f"{v:g}" for v in p)
    return f"{method} p={p}"


def table(m):
    lines = [f"{m['dataset']} / {m['model']} / {label(m['method'], m['p'])}  "
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
    g = m.get("generalization")
    if g:
        lines.append(f"generalization: train accuracy {g['train_accuracy']:.4f}, gap "
                     f"{g['accuracy_gap']:.4f} (loss gap {g['loss_gap']:.4f}); norm-based bound "
                     f"{g['bound']:.3g}" + (" (vacuous: >= 1)" if g["bound_vacuous"] else ""))
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


def plot_training(m, path):
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
    ax.set_title(f"{m['dataset']} {m['model']} {label(m['method'], m['p'])}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweep(runs, path):
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
