"""Evidence on real data for the README (``python -m lpcore_torch.evidence``).

(a) Hoyer sparsity vs p (LpSGD without pruning, digits): measured per layer
    beside the gamma-model prediction from the fitted gradient shape.
(b) LpSS at target sparsities 0.5, 0.8, 0.9 (digits): exact zeros at the end,
    and the sparsity the controller alone had reached just before ``end``.
(c) Test accuracy at sparsity 0.9: LpSS vs dense SGD, SET, RigL, static and
    gradual magnitude pruning, on digits and mnist5k, mean +- std over seeds.

Prints markdown tables and writes them (and the raw runs as JSON) to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from .data import load
from .train import build_parser, run


def _args(**kw):
    a = build_parser().parse_args([])
    for k, v in kw.items():
        setattr(a, k, v)
    return a


def _ms(xs):
    return (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m lpcore_torch.evidence", description=__doc__)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="evidence")
    ap.add_argument("--datasets", default="digits,mnist5k")
    a = ap.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    os.makedirs(a.out, exist_ok=True)
    raw = {"seeds": seeds, "a": [], "b": [], "c": []}
    md = []
    t0 = time.time()
    data = {s: load("digits", s) for s in seeds}

    # (a) Hoyer vs p
    md += ["### (a) Hoyer sparsity vs p (digits, MLP 64-256-256-10, LpSGD dual, no pruning, "
           f"{len(seeds)} seeds)", "",
           "| p | layer | fan-in | Hoyer measured | Hoyer predicted | fitted k | test acc |",
           "|---|---|---|---|---|---|---|"]
    for p in (1.1, 1.3, 1.5, 2.0):
        runs = [run(_args(method="dense-lp", seed=s), p, data[s], progress=False) for s in seeds]
        raw["a"] += runs
        for li, layer in enumerate(runs[0]["layers"]):
            hm = _ms([r["layers"][li]["hoyer"] for r in runs])
            hp = _ms([r["layers"][li]["hoyer_predicted"] for r in runs])
            k = _ms([r["layers"][li]["gamma_shape"] for r in runs])
            acc = _ms([r["test_accuracy"] for r in runs])
            md.append(f"| {p} | {layer['name']} | {layer['fan_in']} | {hm[0]:.3f} +- {hm[1]:.3f} "
                      f"| {hp[0]:.3f} +- {hp[1]:.3f} | {k[0]:.2f} | {acc[0]:.4f} |")
        print(f"(a) p={p} done, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)

    # (b) targets
    md += ["", f"### (b) LpSS reaching the target (digits, p = 1.3, {len(seeds)} seeds)", "",
           "| target | exact zeros at the end | controller alone, just before `end` | test acc |",
           "|---|---|---|---|"]
    for target in (0.5, 0.8, 0.9):
        runs = [run(_args(method="lpss", target_sparsity=target, seed=s), 1.3, data[s],
                     progress=False) for s in seeds]
        raw["b"] += runs
        end_epoch = int(0.8 * len(runs[0]["history"]))
        fin = _ms([r["sparsity"] for r in runs])
        pre = _ms([r["history"][end_epoch - 2]["sparsity"] for r in runs])
        acc = _ms([r["test_accuracy"] for r in runs])
        md.append(f"| {target} | {fin[0]:.4f} +- {fin[1]:.4f} | {pre[0]:.3f} +- {pre[1]:.3f} | "
                  f"{acc[0]:.4f} +- {acc[1]:.4f} |")
        print(f"(b) target={target} done, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)

    # (c) methods at 0.9
    md += ["", f"### (c) Test accuracy at sparsity 0.9 (MLP, mean +- std over seeds {seeds})", "",
           "| data set | method | test accuracy | exact sparsity | train s/run |", "|---|---|---|---|---|"]
    for ds in a.datasets.split(","):
        dd = data if ds == "digits" else {s: load(ds, s) for s in seeds}
        epochs = 60 if ds == "digits" else 30
        for method in ("dense", "lpss", "set", "rigl", "static", "magnitude"):
            runs = [run(_args(dataset=ds, method=method, epochs=epochs, seed=s), 1.3, dd[s],
                         progress=False) for s in seeds]
            raw["c"] += runs
            acc = _ms([r["test_accuracy"] for r in runs])
            sp = _ms([r["sparsity"] for r in runs])
            tt = statistics.mean(r["train_time_s"] for r in runs)
            label = "dense SGD (no pruning)" if method == "dense" else method
            md.append(f"| {ds} | {label} | {acc[0]:.4f} +- {acc[1]:.4f} | {sp[0]:.3f} | {tt:.1f} |")
            print(f"(c) {ds} {method} done, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    text = "\n".join(md)
    print(text)
    with open(os.path.join(a.out, "evidence.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(a.out, "evidence.json"), "w") as f:
        json.dump(raw, f)
    print(f"\n{time.time() - t0:.0f} s in total", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
