"""GPU microbenchmarks: lpcore's CUDA kernels vs PyTorch CUDA eager expressions.

    python -m benchmarks --device cuda            # on a GPU
    python -m benchmarks --device cuda --quick    # smaller shapes
    NUMBA_ENABLE_CUDASIM=1 python -m benchmarks --device cuda --quick
                                                  # simulator smoke test (tiny shape)

Timing: CUDA events around each call, after warm-up calls (which also
compile), the median of ``repeat`` batches.  lpcore is called on numba device
arrays; the PyTorch columns (when torch has CUDA) time the same mathematics as
eager torch expressions on CUDA tensors of the same data.  Bandwidth: a
device-to-device copy of 256 MiB in the same run (bytes read + written);
each kernel's "% BW" is its minimal traffic (one read of the inputs, one
write of the outputs) over its time, relative to that copy.  Under the
simulator the numbers are wall-clock seconds of Python threads: a smoke test
of the code path, not a measurement.
"""
from __future__ import annotations

import statistics
import time

import numpy as np

import lpcore

SHAPES = [(4096, 4096), (512, 4608), (10_000_000,)]
SHAPES_QUICK = [(4096, 4096), (1_000_000,)]
SHAPES_SIM = [(4, 16)]


def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


class Timer:
    def __init__(self, cuda, sim):
        self.cuda, self.sim = cuda, sim

    def __call__(self, fn, repeat, warmup=2, sync=None):
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
    res = []
    for _ in range(repeat):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(10):
            fn()
        b.record()
        b.synchronize()
        res.append(a.elapsed_time(b) / 10)
    return statistics.median(res)


def copy_bandwidth(cuda, timer, repeat, sim):
    n = 16 if sim else 64 * 1024 * 1024  # float32 elements: 256 MiB
    a = cuda.to_device(np.ones(n, dtype=np.float32))
    b = cuda.device_array_like(a)
    ms = timer(lambda: b.copy_to_device(a), repeat)
    return {"bytes": 2 * a.nbytes, "ms": ms, "GBps": 2 * a.nbytes / (ms * 1e-3) / 1e9}


def _cases(x, d, p, axis, torch):
    """(name, bytes moved, lpcore call, torch call or None) for one input."""
    nb = x.nbytes
    G = 1 if axis is None else x.shape[0]
    red = x.itemsize * G
    cases = [
        (f"norm p={p}", nb + red, lambda: lpcore.norm(d, p, axis=axis)),
        (f"normalize p={p}", 2 * nb, lambda: lpcore.normalize(d, p, axis=axis)),
        ("hoyer", nb + red, lambda: lpcore.hoyer(d, axis=axis)),
        (f"to_dual p={p}", 2 * nb, lambda: lpcore.to_dual(d, p)),
    ]
    tcalls = [None] * len(cases)
    if torch is not None:
        xt = torch.as_tensor(x, device="cuda")
        dim = None if axis is None else axis
        kw = {} if dim is None else {"dim": dim, "keepdim": False}
        kwk = {} if dim is None else {"dim": dim, "keepdim": True}

        def hoyer():
            n = xt.numel() if dim is None else xt.shape[dim]
            r = torch.linalg.vector_norm(xt, 1, **kw) / torch.linalg.vector_norm(xt, 2, **kw)
            return (n ** 0.5 - r) / (n ** 0.5 - 1)

        tcalls = [lambda: torch.linalg.vector_norm(xt, p, **kw),
                  lambda: xt / torch.linalg.vector_norm(xt, p, **kwk),
                  hoyer,
                  lambda: torch.sign(xt) * torch.abs(xt) ** (p - 1)]
    return [(n, b, f, t) for (n, b, f), t in zip(cases, tcalls)]


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


def run(quick, repeat, results):
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
    shapes = SHAPES_SIM if sim else (SHAPES_QUICK if quick else SHAPES)
    head = (f"{'op':<18} {'shape':>14} {'dtype':>8} {'lpcore ms':>10} {'torch ms':>10} "
            f"{'x torch':>8} {'% copy BW':>10}")
    print("\n" + head + "\n" + "-" * len(head))
    rng = np.random.default_rng(0)
    for shape in shapes:
        x = rng.standard_normal(shape).astype(np.float32)
        axis = None if len(shape) == 1 else 1
        d = cuda.to_device(x)
        cases = _cases(x, d, 1.3, axis, torch)
        if len(shape) == 2:
            cases.append(_lpsgd_case(cuda, x, torch))
        for name, nbytes, call, tcall in cases:
            ms = timer(call, repeat)
            tms = _torch_timer(torch, tcall, repeat) if tcall is not None else None
            frac = (nbytes / (ms * 1e-3) / 1e9) / bw["GBps"]
            row = {"op": name, "shape": list(shape), "dtype": "float32", "lpcore_ms": ms,
                   "torch_ms": tms, "x_torch": None if tms is None else tms / ms,
                   "frac_copy_bw": frac}
            results["gpu"]["table"].append(row)
            print(f"{name:<18} {'x'.join(map(str, shape)):>14} {'float32':>8} {ms:>10.4f} "
                  f"{'' if tms is None else f'{tms:.4f}':>10} "
                  f"{'' if tms is None else f'{tms / ms:.2f}':>8} {100 * frac:>9.0f}%")
    if sim:
        print("\n(simulator: wall-clock of Python threads, a smoke test, not a measurement)")
    return 0
