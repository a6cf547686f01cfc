"""Fingerprints of ``lpcore-train``'s outputs, to show that a refactoring
changed nothing: the default run and one short run per method, each reduced
to its metrics without timings and the SHA-256 of every tensor it saved.

    python tests/cli_fingerprint.py --write    # record tests/data/cli_fingerprints.json

``tests/test_cli_identity.py`` runs the same commands and compares.  Record
anew (and say why in the commit) only when a change is meant to change
results.  Runs use one torch thread: the last digits depend on the count.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
RECORD = os.path.join(HERE, "data", "cli_fingerprints.json")

#: name -> lpcore-train arguments (besides --out and --quiet)
RUNS = {"default": []}
for _m in ("lpss", "set", "rigl", "static", "magnitude", "magnitude-lp", "imp", "scl", "scl-lp",
           "concave", "chase", "dense", "dense-lp"):
    RUNS[_m] = ["--method", _m, "--epochs", "2"] + (["--rounds", "1"] if _m == "imp" else [])
RUNS["reference"] = ["--recipe", "reference", "--epochs", "3"]
RUNS["cnn-sweep"] = ["--model", "cnn", "--dataset", "mnist1d", "--method", "dense-lp",
                     "--epochs", "1", "--sweep-p", "1.5,2"]

#: metrics that measure time (they differ from run to run) or name the environment
UNSTABLE = {"train_time_s", "inference_s_masked", "inference_s_compact", "threads"}


def _stable(obj):
    if isinstance(obj, dict):
        return {k: _stable(v) for k, v in obj.items() if k not in UNSTABLE}
    if isinstance(obj, list):
        return [_stable(v) for v in obj]
    return obj


def _tensor_hashes(path):
    import torch
    state = torch.load(path, weights_only=True)
    return {k: hashlib.sha256(v.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
            + f" {v.dtype} {tuple(v.shape)}" for k, v in sorted(state.items())}


def fingerprint(out):
    """The stable part of one finished run's folder."""
    with open(os.path.join(out, "metrics.json")) as f:
        fp = {"metrics": _stable(json.load(f))}
    for name in ("model.pt", "masks.pt"):
        path = os.path.join(out, name)
        fp[name] = _tensor_hashes(path) if os.path.exists(path) else None
    return fp


def run(name, workdir):
    """Run one of :data:`RUNS` with one torch thread; returns its fingerprint."""
    out = os.path.join(workdir, name)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "lpcore_torch", "--quiet", "--out", out] + RUNS[name]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=600)
    return fingerprint(out)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    with tempfile.TemporaryDirectory() as d:
        rec = {}
        for name in RUNS:
            rec[name] = run(name, d)
            print(name, rec[name]["metrics"]["test_accuracy"], file=sys.stderr)
    with open(RECORD, "w") as f:
        json.dump(rec, f, indent=1, sort_keys=True)
