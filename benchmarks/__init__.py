"""Kernel microbenchmarks for lpcore (``python -m benchmarks --help``)."""
import json
import os
import subprocess
import sys
import tempfile


def fresh_process_runs(script, labels=("compile (empty cache)", "cached")):
    """Run ``script`` once per label, each in a fresh Python process, all sharing
    one new Numba cache (so the first compiles, the later ones load); returns
    {label: the JSON object the script printed last}."""
    res = {}
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, NUMBA_CACHE_DIR=d)
        for label in labels:
            out = subprocess.run([sys.executable, "-c", script], env=env, check=True,
                                 capture_output=True, text=True).stdout
            res[label] = json.loads(out.strip().splitlines()[-1])
    return res
