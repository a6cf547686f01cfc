"""GPU microbenchmarks: lpcore's CUDA kernels vs PyTorch CUDA eager expressions.

    python -m benchmarks --device cuda            # on a GPU: 4096x4096 and 1e8, float32+float64
    python -m benchmarks --device cuda --quick    # smaller shapes, float32
    python -m benchmarks --device cuda --sweep    # also time launch geometries per kernel
    python -m benchmarks --device cuda --startup  # first-call compile and cached start-up
    NUMBA_ENABLE_CUDASIM=1 python -m benchmarks --device cuda --quick
                                                  # simulator smoke test (tiny shape)

Timing: CUDA events around each call, after warm-up calls (which also
compile), the median of ``repeat`` batches.  lpcore is called on numba device
arrays; the PyTorch columns (when torch has CUDA) time the same mathematics as
eager torch expressions on CUDA tensors of the same data.  Bandwidth: a
device-to-device copy of 1 GiB in the same run (bytes read + written); each
kernel's "% BW" is its minimal traffic (one read of the inputs, one write of
the outputs) over its time, relative to that copy.  "allocs" counts numba
device allocations (``cuMemAlloc``) per call in steady state and "syncs" the
device-to-host copies per call (the integers that decide whether to raise).
Under the simulator the numbers are wall-clock seconds of Python threads: a
smoke test of the code path, not a measurement.
"""
from __future__ import annotations

import contextlib
import statistics
import time

import numpy as np

import lpcore

from . import fresh_process_runs

SHAPES = [(4096, 4096), (100_000_000,)]
SHAPES_QUICK = [(4096, 4096), (1_000_000,)]
SHAPES_SIM = [(4, 16)]
DTYPES = ["float32", "float64"]


def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


class Timer:
    def __init__(self, cuda, sim):
        self.cuda, self.sim = cuda, sim

    def __call__(self, fn, repeat, warmup=2):
        """Median milliseconds per call."""
        for _ in range(warmup):
            fn()
        if self.sim:
            res = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                fn()
                res.append((time.perf_counter() - t0) * 1e3)
            return statistics.median(res)
        self.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        self.cuda.synchronize()
        one = max(time.perf_counter() - t0, 1e-6)
        inner = max(1, min(100, int(0.05 / one)))
        res = []
        for _ in range(repeat):
            a, b = self.cuda.event(), self.cuda.event()
            a.record()
            for _ in range(inner):
                fn()
            b.record()
            b.synchronize()
            res.append(a.elapsed_time(b) / inner)
        return statistics.median(res)


def _torch_timer(torch, fn, repeat, warmup=2):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    inner = max(1, min(100, int(0.05 / max(time.perf_counter() - t0, 1e-6))))
    res = []
    for _ in range(repeat):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(inner):
            fn()
        b.record()
        b.synchronize()
        res.append(a.elapsed_time(b) / inner)
    return statistics.median(res)


@contextlib.contextmanager
def count_driver_calls():
    """Count numba's device allocations and device-to-host copies in the block."""
    from numba.cuda.cudadrv import driver
    counts = {"allocs": 0, "syncs": 0}
    ma, d2h = driver.Context.memalloc, driver.device_to_host

    def memalloc(self, *a, **k):
        counts["allocs"] += 1
        return ma(self, *a, **k)

    def device_to_host(*a, **k):
        counts["syncs"] += 1
        return d2h(*a, **k)

    driver.Context.memalloc, driver.device_to_host = memalloc, device_to_host
    try:
        yield counts
    finally:
        driver.Context.memalloc, driver.device_to_host = ma, d2h


def per_call_counts(fn, calls=10):
    fn()
    with count_driver_calls() as c:
        for _ in range(calls):
            fn()
    return c["allocs"] / calls, c["syncs"] / calls


def copy_bandwidth(cuda, timer, repeat, sim):
    n = 16 if sim else 256 * 1024 * 1024  # float32 elements: 1 GiB
    a = cuda.to_device(np.ones(n, dtype=np.float32))
    b = cuda.device_array_like(a)
    ms = timer(lambda: b.copy_to_device(a), repeat)
    return {"bytes": 2 * a.nbytes, "ms": ms, "GBps": 2 * a.nbytes / (ms * 1e-3) / 1e9}


def _cases(x, d, axis, torch):
    """(name, bytes moved, lpcore call, torch call or None) for one input."""
    nb = x.nbytes
    G = 1 if axis is None else x.shape[0]
    red = x.itemsize * G
    cases = []
    for p in (1.0, 2.0, np.inf, 1.3):
        cases.append((f"norm p={p:g}", nb + red, (lambda p=p: lpcore.norm(d, p, axis=axis)), p))
    for p in (2.0, 1.3):
        cases.append((f"normalize p={p:g}", 2 * nb,
                      (lambda p=p: lpcore.normalize(d, p, axis=axis)), p))
    cases.append(("hoyer", nb + red, lambda: lpcore.hoyer(d, axis=axis), None))
    cases.append(("to_dual p=1.3", 2 * nb, lambda: lpcore.to_dual(d, 1.3), 1.3))
    if torch is None:
        return [(n, b, f, None) for n, b, f, _ in cases]
    xt = torch.as_tensor(x, device="cuda")
    kw = {} if axis is None else {"dim": axis}
    kwk = {} if axis is None else {"dim": axis, "keepdim": True}
    n_ = xt.numel() if axis is None else xt.shape[axis]

    def hoyer():
        r = torch.linalg.vector_norm(xt, 1, **kw) / torch.linalg.vector_norm(xt, 2, **kw)
        return (n_ ** 0.5 - r) / (n_ ** 0.5 - 1)

    out = []
    for name, b, f, p in cases:
        if name.startswith("norm "):
            t = (lambda p=p: torch.linalg.vector_norm(xt, p, **kw))
        elif name.startswith("normalize"):
            t = (lambda p=p: xt / torch.linalg.vector_norm(xt, p, **kwk))
        elif name == "hoyer":
            t = hoyer
        else:
            t = (lambda: torch.sign(xt) * torch.abs(xt) ** 0.3)
        out.append((name, b, f, t))
    return out


def _lpsgd_case(cuda, x, torch, p=1.3, lr=0.1, mu=0.9):
    opt = lpcore.LpSGD(p=p, lr=lr, momentum=mu)
    dw = cuda.to_device(x)
    st = opt.init(dw, axis=1)
    dg = cuda.to_device(np.random.default_rng(1).standard_normal(x.shape).astype(x.dtype))
    opt.step(dw, dg, st)  # creates the momentum buffer
    call = (lambda: opt.step(dw, dg, st))
    name, traffic = "LpSGD dual step", 7 * x.nbytes  # read g, buf, v, w; write buf, v, w
    if torch is None:
        return (name, traffic, call, None)
    q = p / (p - 1)
    w = torch.as_tensor(x, device="cuda")
    g = torch.as_tensor(dg.copy_to_host(), device="cuda")
    buf = torch.zeros_like(w)
    v = torch.sign(w) * w.abs() ** (p - 1)

    def tcall():
        buf.mul_(mu).add_(g)
        gh = buf / torch.linalg.vector_norm(buf, q, dim=1, keepdim=True)
        v.mul_(1 - lr).sub_(lr * gh)
        v.div_(torch.linalg.vector_norm(v, q, dim=1, keepdim=True))
        w.copy_(torch.sign(v) * v.abs() ** (1 / (p - 1)))
    return (name, traffic, call, tcall)


HEAD = (f"{'op':<18} {'shape':>12} {'dtype':>8} {'lpcore ms':>10} {'torch ms':>10} "
        f"{'x torch':>8} {'% copy BW':>10} {'allocs':>7} {'syncs':>6}")


def _row(name, shape, dtype, ms, tms, frac, allocs, syncs):
    tm = "" if tms is None else f"{tms:.4f}"
    xt = "" if tms is None else f"{tms / ms:.2f}"
    return (f"{name:<18} {'x'.join(map(str, shape)):>12} {dtype:>8} {ms:>10.4f} {tm:>10} "
            f"{xt:>8} {100 * frac:>9.0f}% {allocs:>7.1f} {syncs:>6.1f}")


def run(quick, repeat, results, sweep=False, startup=False):
    from numba import config, cuda
    sim = bool(config.ENABLE_CUDASIM)
    if not sim and not cuda.is_available():
        print("no CUDA GPU found (and NUMBA_ENABLE_CUDASIM is not set)")
        return 1
    torch = None if sim else _torch_cuda()
    timer = Timer(cuda, sim)
    repeat = 1 if sim else repeat
    dev_name = "CUDA simulator" if sim else cuda.get_current_device().name
    if isinstance(dev_name, bytes):
        dev_name = dev_name.decode()
    print(f"device: {dev_name}; PyTorch CUDA: {'yes' if torch is not None else 'no'}")
    bw = copy_bandwidth(cuda, timer, repeat, sim)
    print(f"device-to-device copy bandwidth (read + write): {bw['GBps']:.1f} GB/s")
    results["gpu"] = {"device": dev_name, "simulator": sim, "bandwidth": bw, "table": []}
    if startup and not sim:
        results["gpu"]["startup"] = run_startup()
    shapes = SHAPES_SIM if sim else (SHAPES_QUICK if quick else SHAPES)
    dtypes = ["float32"] if (sim or quick) else DTYPES
    print("\n" + HEAD + "\n" + "-" * len(HEAD))
    rng = np.random.default_rng(0)
    for dtype in dtypes:
        for shape in shapes:
            x = rng.standard_normal(shape).astype(dtype)
            axis = None if len(shape) == 1 else 1
            d = cuda.to_device(x)
            cases = _cases(x, d, axis, torch)
            if len(shape) == 2:
                cases.append(_lpsgd_case(cuda, x, torch))
            for name, nbytes, call, tcall in cases:
                ms = timer(call, repeat)
                allocs, syncs = (0.0, 0.0) if sim else per_call_counts(call)
                tms = _torch_timer(torch, tcall, repeat) if tcall is not None else None
                frac = (nbytes / (ms * 1e-3) / 1e9) / bw["GBps"]
                results["gpu"]["table"].append(
                    {"op": name, "shape": list(shape), "dtype": dtype, "lpcore_ms": ms,
                     "torch_ms": tms, "x_torch": None if tms is None else tms / ms,
                     "frac_copy_bw": frac, "allocs_per_call": allocs, "syncs_per_call": syncs})
                print(_row(name, shape, dtype, ms, tms, frac, allocs, syncs), flush=True)
            del d, cases
            if torch is not None:
                torch.cuda.empty_cache()
    if sweep and not sim:
        results["gpu"]["sweep"] = run_sweep(cuda, timer, repeat)
    if sim:
        print("\n(simulator: wall-clock of Python threads, a smoke test, not a measurement)")
    return 0


def run_sweep(cuda, timer, repeat):
    """Time each kernel family over launch geometries (threads x items)."""
    from lpcore.kernels.cuda import launch_config
    rows = []
    print(f"\nlaunch geometry sweep (float32)\n{'op':<18} {'shape':>12} {'threads':>8} "
          f"{'items':>6} {'ms':>9}")
    rng = np.random.default_rng(3)
    for shape in [(4096, 4096), (100_000_000,)]:
        x = rng.standard_normal(shape).astype(np.float32)
        d = cuda.to_device(x)
        axis = None if len(shape) == 1 else 1
        ops = {"norm p=2": lambda: lpcore.norm(d, 2.0, axis=axis),
               "norm p=1.3": lambda: lpcore.norm(d, 1.3, axis=axis),
               "hoyer": lambda: lpcore.hoyer(d, axis=axis),
               "normalize p=2": lambda: lpcore.normalize(d, 2.0, axis=axis)}
        if len(shape) == 2:
            ops["LpSGD dual step"] = _lpsgd_case(cuda, x, None)[2]
        for name, f in ops.items():
            for threads in (128, 256, 512, 1024):
                for items in (4, 8, 16, 32):
                    with launch_config(threads=threads, items=items):
                        ms = timer(f, repeat)
                    rows.append({"op": name, "shape": list(shape), "threads": threads,
                                 "items": items, "ms": ms})
                    print(f"{name:<18} {'x'.join(map(str, shape)):>12} {threads:>8} {items:>6} "
                          f"{ms:>9.4f}", flush=True)
        d = None  # free the device copy before the next shape (the lambdas are done)
    return rows


_STARTUP = r"""
import time, json
t0 = time.perf_counter()
import numpy as np, lpcore
from numba import cuda
t1 = time.perf_counter()
x = np.random.default_rng(0).standard_normal((64, 27)).astype(np.float32)
d = cuda.to_device(x)
cuda.synchronize()
t2 = time.perf_counter()
def step():
    o = lpcore.LpSGD(1.3, 0.1, momentum=0.9)
    w = cuda.to_device(x)
    o.step(w, d, o.init(w, axis=1))
calls = {
    "norm(p=1.3)": lambda: lpcore.norm(d, 1.3, axis=1),
    "normalize(p=1.3)": lambda: lpcore.normalize(d, 1.3, axis=1),
    "hoyer": lambda: lpcore.hoyer(d, axis=1),
    "project_tangent": lambda: lpcore.project_tangent(d, d, 1.3, axis=1),
    "to_dual": lambda: lpcore.to_dual(d, 1.3),
    "project_ball(p=1.3)": lambda: lpcore.project_ball(d, 1.3, axis=1),
    "LpSGD.step(dual)": step,
}
first = {}
for k, f in calls.items():
    s = time.perf_counter(); f(); cuda.synchronize(); first[k] = time.perf_counter() - s
print(json.dumps({"import_s": t1 - t0, "context_s": t2 - t1, "first_call_s": first,
                  "total_s": time.perf_counter() - t0}))
"""


def run_startup():
    """Fresh processes: once with an empty Numba cache (compile), once cached."""
    res = fresh_process_runs(_STARTUP, ("compile (empty cache)", "cached (2nd process)"))
    print("\nGPU start-up (float32 64x27, fresh processes)")
    for label, r in res.items():
        calls = ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in r["first_call_s"].items())
        print(f"  {label:<22} import {r['import_s']:.2f} s, context {r['context_s']:.2f} s, "
              f"total {r['total_s']:.2f} s; first calls: {calls}")
    return res
