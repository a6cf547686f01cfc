"""Host-side cost of lpcore's GPU calls (where does the time of a small call go?).

    python benchmarks/gpu_profile.py      # on a GPU: per-piece microseconds, cProfile top entries
"""
import cProfile
import io
import pstats
import time

import numpy as np
from numba import cuda

import lpcore
from lpcore.kernels.cuda import norm as R
from lpcore.kernels.cuda._launch import flags


def us(fn, n=300):
    fn()
    cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e6


def main():
    x = np.random.default_rng(0).standard_normal((4096, 4096)).astype(np.float32)
    d = cuda.to_device(x)
    small = cuda.to_device(x[:64, :27].copy())
    G, n = d.shape
    Mb, Sb = cuda.device_array(G), cuda.device_array(G)
    fl = cuda.to_device(np.zeros(2, np.int64))
    cnt = cuda.to_device(np.zeros(G, np.int64))
    out = cuda.device_array(G)
    print(f"{'piece':<48}{'us/call':>10}")
    rows = {
        "cuda.device_array(4096)": lambda: cuda.device_array(G),
        "cuda.to_device(int64[2])": lambda: cuda.to_device(np.array([G, G], np.int64)),
        "flags() (scratch + memset)": flags,
        "flags.copy_to_host()": lambda: fl.copy_to_host(),
        "_k_norm launch (4096 blocks, dispatcher)":
            lambda: R._k_norm[G, 256](d, 3, 1.3, True, 1, Mb, Sb, cnt, out, fl),
        "lpcore.norm 4096x4096 p=1.3": lambda: lpcore.norm(d, 1.3, axis=1),
        "lpcore.norm 64x27 p=1.3": lambda: lpcore.norm(small, 1.3, axis=1),
        "lpcore.normalize 64x27 p=1.3": lambda: lpcore.normalize(small, 1.3, axis=1),
        "lpcore.hoyer 64x27": lambda: lpcore.hoyer(small, axis=1),
    }
    opt = lpcore.LpSGD(p=1.3, lr=0.1, momentum=0.9)
    w = cuda.to_device(x[:64, :27].copy())
    st = opt.init(w, axis=1)
    rows["LpSGD.step 64x27"] = lambda: opt.step(w, small, st)
    for k, f in rows.items():
        print(f"{k:<48}{us(f):>10.1f}", flush=True)
    for name, f in (("norm 64x27", rows["lpcore.norm 64x27 p=1.3"]),
                    ("LpSGD.step 64x27", rows["LpSGD.step 64x27"])):
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(300):
            f()
        cuda.synchronize()
        pr.disable()
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(22)
        print(f"\n=== cProfile {name} (300 calls), by own time")
        print("\n".join(s.getvalue().splitlines()[6:34]))


if __name__ == "__main__":
    main()
