#!/usr/bin/env bash
# One device-machine session in one command: environment, the GPU test suites,
# the GPU benchmark (table, launch-geometry sweep, start-up).  Run from the
# repository root on a machine with a CUDA GPU and numba-cuda, torch installed
# (no install step: the project is put on PYTHONPATH).  Writes logs under $OUT.
#
#     OUT=/tmp/gpu bash benchmarks/gpu_session.sh [tests|bench|sweep|profile|all]
#
# The device machines of this workplace cannot reach a package index; wheels
# they lack are carried in .gpu_carry/ (git-ignored), e.g. for NumPy < 2.5:
#     pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --platform manylinux_2_28_x86_64 -d .gpu_carry numpy==2.4.6
set -u
OUT=${OUT:-/tmp/lpcore-gpu}
mkdir -p "$OUT"
what=${1:-all}
export PYTHONPATH="$PWD:$PWD/bindings${PYTHONPATH:+:$PYTHONPATH}"
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-/tmp/lpcore-numba-cache}
PY=${PYTHON:-python3}
# numba-cuda 0.30 does not import under NumPy >= 2.5 (np.row_stack is gone):
# wheels carried in .gpu_carry/ (e.g. numpy 2.4) go first on the path
if ls .gpu_carry/*.whl > /dev/null 2>&1; then
    $PY -m pip install --quiet --no-deps --no-index --target /tmp/lpcore-site .gpu_carry/*.whl
    export PYTHONPATH="/tmp/lpcore-site:$PYTHONPATH"
fi

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv
    $PY - <<'PYEOF'
import sys, importlib.metadata as md
print("python", sys.version.split()[0])
for p in ("numpy", "numba", "numba-cuda", "llvmlite", "torch", "cupy-cuda13x", "hypothesis", "pytest"):
    try:
        print(p, md.version(p))
    except md.PackageNotFoundError:
        print(p, "-")
import numpy as np
from numba import cuda
print("cuda available", cuda.is_available(), "runtime", cuda.runtime.get_version())
d = cuda.get_current_device()
print("device", d.name, "cc", d.compute_capability, "SMs", d.MULTIPROCESSOR_COUNT)
import lpcore
print("lpcore smoke", lpcore.norm(cuda.to_device(np.ones((4, 5), np.float32)), 1.3, axis=1).copy_to_host())
PYEOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if [ "$what" = all ] || [ "$what" = tests ]; then
    HYPOTHESIS_PROFILE=sim LPCORE_CUDA_EXAMPLES=${LPCORE_CUDA_EXAMPLES:-100} LPCORE_REQUIRE_CUDA=1 \
        LPCORE_REQUIRE_GPU=1 timeout "${TEST_TIMEOUT:-280}" \
        $PY -m pytest tests -m cuda -q -p no:cacheprovider \
        --durations=15 > "$OUT/tests.txt" 2>&1
    echo "tests rc=$?" >> "$OUT/tests.txt"
    tail -n 40 "$OUT/tests.txt"
fi
if [ "$what" = all ] || [ "$what" = bench ]; then
    timeout "${BENCH_TIMEOUT:-240}" $PY -m benchmarks --device cuda --startup --repeat 7 \
        --json "$OUT/gpu.json" > "$OUT/bench.txt" 2>&1
    echo "bench rc=$?" >> "$OUT/bench.txt"
    cat "$OUT/bench.txt"
fi
if [ "$what" = all ] || [ "$what" = sweep ]; then
    timeout "${SWEEP_TIMEOUT:-150}" $PY -m benchmarks --device cuda --sweep --quick --repeat 5 \
        --json "$OUT/sweep.json" > "$OUT/sweep.txt" 2>&1
    echo "sweep rc=$?" >> "$OUT/sweep.txt"
fi
if [ "$what" = all ] || [ "$what" = profile ]; then
    $PY benchmarks/gpu_profile.py > "$OUT/profile.txt" 2>&1
fi
