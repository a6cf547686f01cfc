"""Fingerprints of ``lpcore-train``'s outputs, to show that a refactoring
changed nothing: the default run and one short run per method, each reduced
to its metrics without timings and the SHA-256 of every tensor it saved.

    python tests/cli_fingerprint.py --write    # record this CPU vendor's fingerprints

``tests/test_cli_identity.py`` runs the same commands and compares.  Record
anew (and say why in the commit) only when a change is meant to change
results.  Runs use one torch thread: the last digits depend on the count.
They also depend on the instruction set: a float sum vectorised 16 float32
wide (AVX-512) rounds differently from one 8 wide (AVX2), in numba's kernels,
in ATen's and in OpenBLAS's.  So every run compiles and dispatches for
x86-64-v3 (AVX2 and FMA, :data:`PINNED_ISA`) whatever the machine has; the
fingerprints were recorded on an AVX2 machine and reproduced bit for bit,
pinned, on an AVX-512 one (2026-12-06).  Elsewhere (no AVX2, not x86-64) the
comparison is skipped: :func:`isa_supported`.

Pinned, they still depend on the CPU's vendor: torch's BLAS is Intel's MKL,
whose kernels differ on Intel and AMD processors whatever the settings (on
an Intel Xeon with AVX-512, 2026-12-06, even ``--method dense`` differed
from the AMD recording with ``MKL_CBWR`` set to AVX2, "AVX2,STRICT", AVX,
SSE4_2 or COMPATIBLE).  So there is one recording per vendor,
``tests/data/cli_fingerprints-<vendor_id>.json`` (:func:`record_path`); a
machine of a vendor without one skips the comparison.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_vendor():
    """The CPU's ``vendor_id`` (``/proc/cpuinfo``: GenuineIntel, AuthenticAMD),
    or None where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return None


def record_path(vendor=None):
    """The recording of this machine's CPU vendor (or of ``vendor``)."""
    return os.path.join(HERE, "data", f"cli_fingerprints-{vendor or cpu_vendor()}.json")


#: name -> lpcore-train arguments (besides --out and --quiet)
RUNS = {"default": []}
for _m in ("lpss", "set", "rigl", "static", "magnitude", "magnitude-lp", "imp", "scl", "scl-lp",
           "concave", "chase", "dense", "dense-lp"):
    RUNS[_m] = ["--method", _m, "--epochs", "2"] + (["--rounds", "1"] if _m == "imp" else [])
RUNS["reference"] = ["--recipe", "reference", "--epochs", "3"]
RUNS["cnn-sweep"] = ["--model", "cnn", "--dataset", "mnist1d", "--method", "dense-lp",
                     "--epochs", "1", "--sweep-p", "1.5,2"]

#: environment of every run: the x86-64-v3 instruction set for numba (with no
#: extra features: the host's would bring AVX-512 back), ATen, OpenBLAS, MKL
#: and oneDNN
PINNED_ISA = {"NUMBA_CPU_NAME": "x86-64-v3", "NUMBA_CPU_FEATURES": "",
              "ATEN_CPU_CAPABILITY": "avx2", "OPENBLAS_CORETYPE": "Haswell",
              "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}

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


def isa_supported():
    """Whether this machine runs x86-64-v3 code (x86-64 with AVX2 and FMA)."""
    import platform

    import llvmlite.binding as ll
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    features = ll.get_host_cpu_features()
    return all(features.get(f, False) for f in ("avx2", "fma", "bmi2"))


def run(name, workdir):
    """Run one of :data:`RUNS` with one torch thread, pinned to
    :data:`PINNED_ISA`; returns its fingerprint."""
    out = os.path.join(workdir, name)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **PINNED_ISA)
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
    with open(record_path(), "w") as f:
        json.dump(rec, f, indent=1, sort_keys=True)
