"""lpcore CPU kernel microbenchmarks.

Everything in one run, side by side: lpcore vs a NumPy expression vs the best
PyTorch CPU expression (when torch is installed), plus this machine's memory
bandwidth measured by a large array copy (bytes read + written; the better of
NumPy's single-threaded copy and a multi-threaded Numba copy).

    python -m benchmarks                 # full table (a few minutes)
    python -m benchmarks --quick         # small table (~30 s)
    python -m benchmarks --scaling       # time vs size, 1e3 .. 1e8 elements
    python -m benchmarks --startup       # first-call compile and cached start-up
    python -m benchmarks --optim         # the fused LpSGD step vs NumPy and PyTorch eager
    python -m benchmarks --torch-step    # lpcore_torch.LpSGD vs torch.optim.SGD: 8 x Linear(64, 64), ResNet-18
    python -m benchmarks --torch-step --device cuda   # the same on CUDA tensors
    python -m benchmarks --topology      # adjust_to_sparsity over ResNet-18's 11 M weights
    python -m benchmarks --device cuda   # the CUDA kernels vs PyTorch CUDA (benchmarks/gpu.py)
    python -m benchmarks --json out.json # also write the results as JSON
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

import lpcore

from . import fresh_process_runs

try:
    import torch
except ImportError:  # torch is an optional comparator
    torch = None

SHAPES_FULL = [(4096, 4096), (512, 4608), (64, 27), (10_000_000,)]
SHAPES_QUICK = [(4096, 4096), (64, 27), (1_000_000,)]
PS = [1.0, 1.3, 2.0]


def timeit(fn, repeat, min_time=0.2):
    """Median seconds per call over ``repeat`` batches (after a warm-up call)."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(min_time / repeat / one))
    res = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        res.append((time.perf_counter() - t0) / inner)
    return statistics.median(res)


def timeit_interleaved(fns, repeat, min_time=0.2):
    """Seconds per call of each of ``fns``, timed in turn: each of ``repeat``
    rounds runs one batch of every function, so a machine that slows down
    during the run slows all of them alike.  Returns (the median seconds per
    call of each, the median over rounds of each one's time divided by the
    first one's in the same round)."""
    inner = []
    for fn in fns:
        fn()
        t0 = time.perf_counter()
        fn()
        one = max(time.perf_counter() - t0, 1e-7)
        inner.append(max(1, int(min_time / repeat / one)))
    res = [[] for _ in fns]
    for _ in range(repeat):
        for fn, n, r in zip(fns, inner, res):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            r.append((time.perf_counter() - t0) / n)
    ratios = [statistics.median(a / b for a, b in zip(r, res[0])) for r in res]
    return [statistics.median(r) for r in res], ratios


def copy_bandwidth(repeat):
    from numba import njit, prange

    @njit(parallel=True, cache=True)
    def pcopy(a, b):
        for i in prange(a.size):
            b[i] = a[i]

    a = np.random.default_rng(0).standard_normal(32_000_000).astype(np.float32)
    b = np.empty_like(a)
    t_np = timeit(lambda: np.copyto(b, a), repeat)
    t_nb = timeit(lambda: pcopy(a, b), repeat)
    nbytes = 2 * a.nbytes
    return {"numpy_copy_GBps": nbytes / t_np / 1e9, "numba_parallel_copy_GBps": nbytes / t_nb / 1e9,
            "GBps": max(nbytes / t_np, nbytes / t_nb) / 1e9}


def _axis(shape):
    return None if len(shape) == 1 else 1


def np_norm(x, p, axis):
    a = np.abs(x)
    if p == 1:
        return a.sum(axis=axis)
    if p == 2:
        return np.sqrt((x * x).sum(axis=axis))
    return (a ** p).sum(axis=axis) ** (1 / p)


def np_hoyer(x, axis):
    n = x.size if axis is None else x.shape[axis]
    l1 = np.abs(x).sum(axis=axis)
    l2 = np.sqrt((x * x).sum(axis=axis))
    return (np.sqrt(n) - l1 / l2) / (np.sqrt(n) - 1)


def torch_cases(xt, p, axis):
    dim = None if axis is None else axis
    n = xt.numel() if axis is None else xt.shape[axis]
    sn = n ** 0.5

    def nrm():
        return torch.linalg.vector_norm(xt, p, dim=dim)

    def nz():
        if dim is None:
            return xt / torch.linalg.vector_norm(xt, p)
        return xt / torch.linalg.vector_norm(xt, p, dim=dim, keepdim=True)

    def hoyer_a():
        return (sn - torch.linalg.vector_norm(xt, 1, dim=dim)
                / torch.linalg.vector_norm(xt, 2, dim=dim)) / (sn - 1)

    def hoyer_b():
        return (sn - xt.abs().sum(dim=dim) / xt.square().sum(dim=dim).sqrt()) / (sn - 1)

    return {"norm": [nrm], "normalize": [nz], "hoyer": [hoyer_a, hoyer_b]}


def run_table(shapes, repeat, bw):
    rows = []
    for shape in shapes:
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        axis = _axis(shape)
        xt = torch.from_numpy(x) if torch is not None else None
        for op in ("norm", "normalize", "hoyer"):
            for p in (PS if op != "hoyer" else [None]):
                if op == "norm":
                    f_lp = lambda: lpcore.norm(x, p, axis=axis)  # noqa: E731
                    f_np = lambda: np_norm(x, p, axis)  # noqa: E731
                    moved = x.nbytes
                elif op == "normalize":
                    out = np.empty_like(x)
                    f_lp = lambda: lpcore.normalize(x, p, axis=axis, out=out)  # noqa: E731
                    f_np = lambda: np.divide(x, np.expand_dims(np_norm(x, p, axis), axis or 0)  # noqa: E731
                                             if axis is not None else np_norm(x, p, axis), out=out)
                    moved = 2 * x.nbytes  # read + write, the minimum
                else:
                    f_lp = lambda: lpcore.hoyer(x, axis=axis)  # noqa: E731
                    f_np = lambda: np_hoyer(x, axis)  # noqa: E731
                    moved = x.nbytes
                t_lp = timeit(f_lp, repeat)
                t_np = timeit(f_np, repeat)
                t_th = None
                if xt is not None:
                    t_th = min(timeit(f, repeat) for f in torch_cases(xt, p if p else 2, axis)[op])
                rows.append({
                    "op": op, "shape": list(shape), "p": p, "dtype": "float32",
                    "lpcore_ms": t_lp * 1e3, "numpy_ms": t_np * 1e3,
                    "torch_ms": None if t_th is None else t_th * 1e3,
                    "speedup_vs_numpy": t_np / t_lp,
                    "speedup_vs_torch": None if t_th is None else t_th / t_lp,
                    "bandwidth_fraction": moved / t_lp / 1e9 / bw,
                })
                print(_fmt_row(rows[-1]), flush=True)
    return rows


OPT_SHAPES_FULL = [(4096, 4096), (512, 4608), (256, 784)]
OPT_SHAPES_QUICK = [(4096, 4096)]


def np_lpsgd_dual(w, g, buf, v, p, lr, mu):
    """NumPy transcription of one dual LpSGD step with momentum (no scaling)."""
    q = p / (p - 1)
    buf *= mu
    buf += g
    gh = buf / (np.abs(buf) ** q).sum(axis=1, keepdims=True) ** (1 / q)
    v *= 1 - lr
    v -= lr * gh
    v /= (np.abs(v) ** q).sum(axis=1, keepdims=True) ** (1 / q)
    np.multiply(np.sign(v), np.abs(v) ** (1 / (p - 1)), out=w)


def torch_lpsgd_dual(w, g, buf, v, p, lr, mu):
    """PyTorch eager transcription of the same step (the reference code's style)."""
    q = p / (p - 1)
    buf.mul_(mu).add_(g)
    gh = buf / torch.linalg.vector_norm(buf, q, dim=1, keepdim=True)
    v.mul_(1 - lr).add_(gh, alpha=-lr)
    v.div_(torch.linalg.vector_norm(v, q, dim=1, keepdim=True))
    w.copy_(v.sign() * v.abs().pow(1 / (p - 1)))


class TorchDualStep:
    """The dual LpSGD step of ``lpcore_torch.LpSGD`` in PyTorch eager ops, as
    a user without lpcore would write it: :func:`torch_lpsgd_dual` per
    constrained tensor (its fan-in rows), ``torch.optim.SGD`` for the rest.
    It does less than LpSGD: no finiteness guard, no max scaling, no care
    for a row whose direction is zero (a dead unit's row becomes NaN where
    LpSGD leaves it as it is), and momentum from its first step (the state
    after LpSGD's first step)."""

    def __init__(self, param_groups, lr, momentum):
        self.lr, self.mu = lr, momentum
        self.rows, plain = [], []
        with torch.no_grad():
            for group in param_groups:
                p = group.get("p")
                for w in group["params"]:
                    if p is None:
                        plain.append(w)
                        continue
                    w2 = w.data.view(w.shape[0], -1)
                    w2.div_(torch.linalg.vector_norm(w2, p, dim=1, keepdim=True))
                    v = w2.sign() * w2.abs().pow(p - 1)  # D_p(w): unit in Lq
                    self.rows.append((p, w2, w.grad.view(w.shape[0], -1),
                                      w.grad.view(w.shape[0], -1).clone(), v))
        self.sgd = torch.optim.SGD(plain, lr=lr, momentum=momentum) if plain else None

    @torch.no_grad()
    def step(self):
        for p, w, g, buf, v in self.rows:
            torch_lpsgd_dual(w, g, buf, v, p, self.lr, self.mu)
        if self.sgd is not None:
            self.sgd.step()


def run_optim(shapes, repeat):
    """Time per step of the fused LpSGD dual update with momentum 0.9, float32."""
    p, lr, mu = 1.3, 0.05, 0.9
    rows = []
    print(f"\nLpSGD step, variant=dual, momentum={mu}, p={p}, float32")
    print(f"{'shape':>12}{'lpcore ms':>11}{'numpy ms':>10}{'torch ms':>10}{'x numpy':>9}{'x torch':>9}")
    for shape in shapes:
        rng = np.random.default_rng(3)
        w = rng.standard_normal(shape).astype(np.float32)
        g = rng.standard_normal(shape).astype(np.float32)
        opt = lpcore.LpSGD(p, lr, momentum=mu)
        st = opt.init(w, axis=1)
        opt.step(w, g, st)
        t_lp = timeit(lambda: opt.step(w, g, st), repeat)
        buf, v = st.momentum_buffer.copy(), st.dual.copy()
        t_np = timeit(lambda: np_lpsgd_dual(w, g, buf, v, p, lr, mu), repeat)
        t_th = None
        if torch is not None:
            tw, tg, tb, tv = (torch.from_numpy(a.copy()) for a in (w, g, buf, v))
            t_th = timeit(lambda: torch_lpsgd_dual(tw, tg, tb, tv, p, lr, mu), repeat)
        r = {"op": "lpsgd_dual_momentum", "shape": list(shape), "p": p,
             "lpcore_ms": t_lp * 1e3, "numpy_ms": t_np * 1e3,
             "torch_ms": None if t_th is None else t_th * 1e3,
             "speedup_vs_numpy": t_np / t_lp,
             "speedup_vs_torch": None if t_th is None else t_th / t_lp}
        rows.append(r)
        th = "-" if t_th is None else f"{t_th * 1e3:.3f}"
        sth = "-" if t_th is None else f"{t_th / t_lp:.2f}"
        print(f"{'x'.join(map(str, shape)):>12}{t_lp * 1e3:>11.3f}{t_np * 1e3:>10.3f}{th:>10}"
              f"{t_np / t_lp:>9.2f}{sth:>9}", flush=True)
    return rows


def _resnet18(num_classes=1000):
    """A ResNet-18-shaped model (torchvision's layout, no torchvision needed)."""
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.b2(self.c2(self.b1(self.c1(x)).relu()))
            return (y + (x if self.down is None else self.down(x))).relu()

    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
              nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)


def run_torch_step(repeat, device="cpu"):
    """lpcore_torch.LpSGD vs torch.optim.SGD, one step on all parameters of 8
    Linear(64, 64) layers (per-step overhead) and of a ResNet-18 (bandwidth)."""
    if torch is None:
        print("torch not installed: skipping the optimizer-step comparison")
        return None
    from torch import nn

    mlp = nn.Sequential(*[nn.Linear(64, 64) for _ in range(8)])
    return _torch_step_table("8 x Linear(64, 64)", mlp, 10 * repeat, device) + \
        _torch_step_table("ResNet-18", _resnet18(), repeat, device)


def _core_step(net, p, lr, momentum):
    """The step of ``lpcore_torch.LpSGD``'s constrained weights alone, through
    the core (one :class:`lpcore.StepPlan` over NumPy views of the weights
    and gradients, no torch call): the kernel's share of the optimizer step."""
    import lpcore_torch

    opt = lpcore.LpSGD(p, lr, momentum=momentum)
    ws, gs = [], []
    for group in lpcore_torch.lp_param_groups(net, p=p):
        if group.get("p") is None:
            continue
        for w in group["params"]:
            ws.append(w.detach().numpy().reshape(w.shape[0], -1))
            gs.append(w.grad.numpy().reshape(w.shape[0], -1))
    for w in ws:
        w /= lpcore.norm(w, p, axis=1)[:, None]
    plan = opt.plan(ws, [opt.init(w, axis=1) for w in ws])
    return lambda: plan.step(gs)


def _torch_step_table(model, net, repeat, device="cpu"):
    """One row per optimizer, each on its own copy of ``net`` (same weights,
    same gradients), timed in turn (:func:`timeit_interleaved`)."""
    import copy

    import lpcore_torch

    net = net.to(device)
    n_params = sum(q.numel() for q in net.parameters())
    gen = torch.Generator().manual_seed(0)
    for q in net.parameters():
        q.grad = (torch.randn(q.shape, generator=gen) * 1e-2).to(device)

    def fresh():
        m = copy.deepcopy(net)
        for q, q0 in zip(m.parameters(), net.parameters()):
            q.grad = q0.grad.clone()
        return m

    print(f"\noptimizer step on {model} ({n_params / 1e6:.2f} M parameters, float32, "
          f"{device.upper()}, momentum 0.9, torch threads {torch.get_num_threads()}, "
          f"numba threads {__import__('numba').get_num_threads()}; the cases timed in turn, "
          f"{repeat} rounds)")
    cases = [("torch.optim.SGD", lambda m: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)),
             ("lpcore_torch.LpSGD p=None", lambda m: lpcore_torch.LpSGD(
                 m.parameters(), lr=0.01, momentum=0.9)),
             ("lpcore_torch.LpSGD p=2 dual", lambda m: lpcore_torch.LpSGD(
                 lpcore_torch.lp_param_groups(m, p=2.0), lr=0.01, momentum=0.9)),
             ("lpcore_torch.LpSGD p=1.3 dual", lambda m: lpcore_torch.LpSGD(
                 lpcore_torch.lp_param_groups(m, p=1.3), lr=0.01, momentum=0.9)),
             # exponents 1/(p-1) and p/(p-1) that are not multiples of 1/2 or 1/3:
             # the general float32 power, where p = 1.3 takes cube roots
             ("lpcore_torch.LpSGD p=1.37 dual", lambda m: lpcore_torch.LpSGD(
                 lpcore_torch.lp_param_groups(m, p=1.37), lr=0.01, momentum=0.9))]
    steps = []
    with torch.no_grad():
        for name, make in cases:
            opt = make(fresh())
            if device == "cuda":
                def step(opt=opt):  # the step's GPU work included
                    opt.step()
                    torch.cuda.synchronize()
            else:
                step = opt.step
            steps.append((name, step))
        if device == "cpu":
            # the same p = 1.3 step in PyTorch eager ops, the floor of a torch version
            opt = TorchDualStep(lpcore_torch.lp_param_groups(fresh(), p=1.3), lr=0.01,
                                momentum=0.9)
            steps.append(("torch eager, same step p=1.3", opt.step))
            # the kernel's share: the constrained weights alone, through the core
            steps.append(("lpcore core step p=1.3 (weights)", _core_step(fresh(), 1.3, 0.01, 0.9)))
        times, ratios = timeit_interleaved([f for _, f in steps], repeat)
        rows = []
        for (name, _), t, r in zip(steps, times, ratios):
            rows.append({"model": model, "optimizer": name, "step_ms": t * 1e3,
                         "ratio_to_torch_sgd": r, "params": n_params, "device": device,
                         "torch_threads": torch.get_num_threads()})
            print(f"  {name:<34}{t * 1e3:>10.3f} ms/step{r:>8.2f}x", flush=True)
        if device == "cuda":
            # the optimizer step captured in a CUDA graph (after warm-up steps on a
            # side stream, as torch's docs ask), replayed
            for name, make in (cases[0], cases[3]):
                opt = make(fresh())
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(3):
                        opt.step()
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    opt.step()

                def replay(graph=graph):
                    graph.replay()
                    torch.cuda.synchronize()
                t = timeit(replay, repeat)
                if hasattr(opt, "check"):
                    opt.check()  # a bad step in the replays would raise here
                r = t * 1e3 / rows[0]["step_ms"]
                rows.append({"model": model, "optimizer": name + " (CUDA graph)",
                             "step_ms": t * 1e3, "ratio_to_torch_sgd": r, "params": n_params,
                             "device": device, "torch_threads": torch.get_num_threads()})
                print(f"  {name + ' (CUDA graph)':<34}{t * 1e3:>10.3f} ms/step{r:>8.2f}x",
                      flush=True)
    print("  (x: the median over rounds of the step's time over torch.optim.SGD's in the "
          "same round)")
    return rows


def resnet18_weight_shapes():
    """The conv and linear weight shapes of ResNet-18 (torchvision's layout)."""
    shapes = [(64, 3, 7, 7)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for k in range(2):
            c = cin if k == 0 else cout
            shapes += [(cout, c, 3, 3), (cout, cout, 3, 3)]
            if k == 0 and (stride != 1 or c != cout):
                shapes.append((cout, c, 1, 1))
        cin = cout
    return shapes + [(1000, 512)]


def _np_adjust(masks, drop, grow, target):
    """The NumPy baseline: one stable global argsort of the candidates' scores."""
    total = sum(m.size for m in masks)
    want = round(target * total)
    zeros = total - sum(int(m.sum()) for m in masks)
    flat_m = np.concatenate([m.reshape(-1) for m in masks])
    if zeros < want:
        cand = np.flatnonzero(flat_m)
        sc = np.abs(np.concatenate([d.reshape(-1) for d in drop]))[cand]
        pick = cand[np.argsort(sc, kind="stable")[:want - zeros]]
        flat_m[pick] = False
    elif zeros > want:
        cand = np.flatnonzero(~flat_m)
        sc = np.abs(np.concatenate([g.reshape(-1) for g in grow]))[cand]
        pick = cand[np.argsort(-sc, kind="stable")[:zeros - want]]
        flat_m[pick] = True
    return flat_m


def run_topology(repeat):
    """``lpcore.adjust_to_sparsity`` over ResNet-18's weights (11.2 M), dropping
    (masks at 85% zeros to 90%) and growing (95% to 90%), against one global
    argsort in NumPy; the two agree on the number of zeros."""
    shapes = resnet18_weight_shapes()
    rng = np.random.default_rng(0)
    ws = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    gs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    n = sum(w.size for w in ws)
    rows = []
    print(f"\nadjust_to_sparsity over ResNet-18's {len(shapes)} weights ({n / 1e6:.1f} M), "
          "to exactly 90% zeros")
    print(f"{'case':<24}{'lpcore s':>10}{'numpy argsort s':>17}{'x numpy':>9}")
    for case, start in (("drop (85% -> 90%)", 0.85), ("grow (95% -> 90%)", 0.95)):
        masks = [rng.random(s) >= start for s in shapes]
        new, _ = lpcore.adjust_to_sparsity(masks, ws, gs, 0.9)
        ref = _np_adjust(masks, ws, gs, 0.9)
        assert sum(int((~m).sum()) for m in new) == int((~ref).sum()) == round(0.9 * n)
        t_lp = timeit(lambda: lpcore.adjust_to_sparsity(masks, ws, gs, 0.9), repeat)
        t_np = timeit(lambda: _np_adjust(masks, ws, gs, 0.9), repeat)
        rows.append({"case": case, "weights": n, "lpcore_s": t_lp, "numpy_argsort_s": t_np,
                     "speedup_vs_numpy": t_np / t_lp})
        print(f"{case:<24}{t_lp:>10.3f}{t_np:>17.3f}{t_np / t_lp:>9.2f}", flush=True)
    return rows


HEADER = (f"{'op':<10}{'shape':>14}{'p':>5}{'lpcore ms':>11}{'numpy ms':>10}{'torch ms':>10}"
          f"{'x numpy':>9}{'x torch':>9}{'% of copy BW':>14}")


def _fmt_row(r):
    shape = "x".join(str(s) for s in r["shape"])
    p = "" if r["p"] is None else f"{r['p']:g}"
    th = "-" if r["torch_ms"] is None else f"{r['torch_ms']:.3f}"
    sth = "-" if r["speedup_vs_torch"] is None else f"{r['speedup_vs_torch']:.2f}"
    return (f"{r['op']:<10}{shape:>14}{p:>5}{r['lpcore_ms']:>11.3f}{r['numpy_ms']:>10.3f}{th:>10}"
            f"{r['speedup_vs_numpy']:>9.2f}{sth:>9}{100 * r['bandwidth_fraction']:>13.0f}%")


def run_scaling(repeat, bw):
    rows = []
    print(f"\n{'op':<10}{'n':>12}{'lpcore ms':>11}{'numpy ms':>10}{'ns/elem':>9}{'% BW':>7}")
    for n in [10 ** k for k in range(3, 9)]:
        x = np.random.default_rng(2).standard_normal(n).astype(np.float32)
        for op, f_lp, f_np in (("hoyer", lambda: lpcore.hoyer(x), lambda: np_hoyer(x, None)),
                               ("norm1.3", lambda: lpcore.norm(x, 1.3), lambda: np_norm(x, 1.3, None))):
            t_lp = timeit(f_lp, repeat)
            t_np = timeit(f_np, max(1, repeat // 2))
            r = {"op": op, "n": n, "lpcore_ms": t_lp * 1e3, "numpy_ms": t_np * 1e3,
                 "ns_per_element": t_lp / n * 1e9, "bandwidth_fraction": x.nbytes / t_lp / 1e9 / bw}
            rows.append(r)
            print(f"{op:<10}{n:>12}{r['lpcore_ms']:>11.3f}{r['numpy_ms']:>10.3f}"
                  f"{r['ns_per_element']:>9.3f}{100 * r['bandwidth_fraction']:>6.0f}%", flush=True)
    return rows


_STARTUP = r"""
import time, json
t0 = time.perf_counter()
import numpy as np, lpcore
t1 = time.perf_counter()
x = np.random.default_rng(0).standard_normal((64, 27)).astype(np.float32)
calls = {
    "norm(p=1.3)": lambda: lpcore.norm(x, 1.3, axis=1),
    "normalize(p=1.3)": lambda: lpcore.normalize(x, 1.3, axis=1),
    "hoyer": lambda: lpcore.hoyer(x, axis=1),
    "project_tangent": lambda: lpcore.project_tangent(x, x, 1.3, axis=1),
    "to_dual": lambda: lpcore.to_dual(x, 1.3),
    "project_ball(p=1.3)": lambda: lpcore.project_ball(x, 1.3, axis=1),
    "LpSGD.step(dual)": lambda: (lambda o, w: o.step(w, x, o.init(w, axis=1)))(
        lpcore.LpSGD(1.3, 0.1, momentum=0.9), x.copy()),
}
first = {}
for k, f in calls.items():
    s = time.perf_counter(); f(); first[k] = time.perf_counter() - s
print(json.dumps({"import_s": t1 - t0, "first_call_s": first, "total_s": time.perf_counter() - t0}))
"""


def run_startup():
    """Fresh processes: once with an empty Numba cache (compile), once cached."""
    res = fresh_process_runs(_STARTUP)
    print("\nstart-up (float32 64x27, serial kernels; each lpcore kernel also has a parallel "
          "twin compiled on first large input)")
    for label, r in res.items():
        calls = ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in r["first_call_s"].items())
        print(f"  {label:<22} import {r['import_s']:.2f} s, total {r['total_s']:.2f} s; first calls: {calls}")
    return res


def run_spectral(quick, repeat):
    """Ramanujan and weighted spectral gaps of one layer at 90% sparsity (lpcore:
    dense mask in, SciPy CSR + ARPACK inside) beside a dense SVD where that is
    affordable and SciPy's svds alone on a prebuilt CSR matrix."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import svds
    sides = (512, 1024) if quick else (1024, 4096)
    rng = np.random.default_rng(0)
    rows = []
    print("\nspectral gaps, 90% sparse square layer (seconds, median of "
          f"{min(repeat, 3)}):")
    print(f"{'side':>6} {'nnz':>10} {'ramanujan_gap':>14} {'weighted_gap':>13} "
          f"{'scipy svds':>11} {'dense svd':>10}")
    for side in sides:
        mask = rng.random((side, side)) >= 0.9
        w = rng.standard_normal((side, side))
        lpcore.ramanujan_gap(mask)  # compile outside the timing

        def best(f):
            ts = []
            for _ in range(min(repeat, 3)):
                t0 = time.perf_counter()
                f()
                ts.append(time.perf_counter() - t0)
            return float(np.median(ts))
        t_r = best(lambda: lpcore.ramanujan_gap(mask))
        t_w = best(lambda: lpcore.weighted_spectral_gap(w, mask))
        csr = sp.csr_matrix(np.abs(w) * mask)
        v0 = np.random.default_rng(0).standard_normal(side)
        t_s = best(lambda: svds(csr, k=2, v0=v0, tol=1e-10, return_singular_vectors=False))
        t_d = best(lambda: np.linalg.svd(np.abs(w) * mask, compute_uv=False)) \
            if side <= 1024 else None
        rows.append({"side": side, "nnz": int(mask.sum()), "ramanujan_gap_s": t_r,
                     "weighted_gap_s": t_w, "scipy_svds_s": t_s, "dense_svd_s": t_d})
        print(f"{side:>6} {int(mask.sum()):>10} {t_r:>14.3f} {t_w:>13.3f} {t_s:>11.3f} "
              f"{'-' if t_d is None else f'{t_d:.3f}':>10}")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    ap.add_argument("--scaling", action="store_true", help="time vs size from 1e3 to 1e8")
    ap.add_argument("--startup", action="store_true", help="compile and cached start-up times")
    ap.add_argument("--optim", action="store_true", help="only the LpSGD step table")
    ap.add_argument("--torch-step", action="store_true",
                    help="lpcore_torch.LpSGD vs torch.optim.SGD on 8 Linear(64, 64) layers and a ResNet-18-shaped model")
    ap.add_argument("--topology", action="store_true",
                    help="adjust_to_sparsity over ResNet-18's 11 M weights vs a NumPy argsort")
    ap.add_argument("--spectral", action="store_true",
                    help="Ramanujan / weighted spectral gap of a 90%%-sparse layer")
    ap.add_argument("--all", action="store_true", help="table, scaling and start-up")
    ap.add_argument("--sweep", action="store_true",
                    help="with --device cuda: also time launch geometries per kernel")
    ap.add_argument("--repeat", type=int, default=None, help="timing batches per case")
    ap.add_argument("--json", default=None, help="write results to this JSON file")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cuda: the GPU kernels vs PyTorch CUDA (NUMBA_ENABLE_CUDASIM=1: "
                         "simulator smoke test)")
    a = ap.parse_args(argv)
    repeat = a.repeat or (3 if a.quick else 7)
    if a.device == "cuda" and a.torch_step:
        results = {"torch_step": run_torch_step(repeat, "cuda")}
        if a.json:
            _write_json(a.json, results)
        return 0
    if a.device == "cuda":
        from . import gpu
        results = {"info": {"lpcore": lpcore.__version__, "numba": __import__("numba").__version__}}
        rc = gpu.run(a.quick, repeat, results, sweep=a.sweep, startup=a.startup or a.all)
        if a.json and rc == 0:
            _write_json(a.json, results)
        return rc

    info = {"python": platform.python_version(), "numpy": np.__version__,
            "numba": __import__("numba").__version__, "lpcore": lpcore.__version__,
            "torch": None if torch is None else torch.__version__,
            "cpus": os.cpu_count(), "numba_threads": __import__("numba").get_num_threads(),
            "torch_threads": None if torch is None else torch.get_num_threads(),
            "machine": platform.machine(),
            # torch's OpenMP workers spin after each parallel region unless this says
            # PASSIVE, and share the cores with lpcore's threads meanwhile: the
            # ResNet-18 step rows move with it (README, "Performance")
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "unset")}
    print("lpcore benchmarks:", ", ".join(f"{k}={v}" for k, v in info.items()))
    results = {"info": info}
    bw = copy_bandwidth(repeat)
    results["bandwidth"] = bw
    print(f"memory copy bandwidth (read + write): {bw['GBps']:.1f} GB/s "
          f"(numpy {bw['numpy_copy_GBps']:.1f}, numba parallel {bw['numba_parallel_copy_GBps']:.1f})")
    if torch is None:
        print("torch not installed: PyTorch columns are empty (pip install 'lpcore[bench]')")
    only_extra = a.scaling or a.startup or a.optim or a.torch_step or a.spectral or a.topology
    if a.all or not only_extra:
        print("\n" + HEADER)
        results["table"] = run_table(SHAPES_QUICK if a.quick else SHAPES_FULL, repeat, bw["GBps"])
    if a.all or a.optim or not only_extra:
        results["lpsgd"] = run_optim(OPT_SHAPES_QUICK if a.quick else OPT_SHAPES_FULL, repeat)
    if a.all or a.scaling:
        results["scaling"] = run_scaling(repeat, bw["GBps"])
    if a.all or a.torch_step:
        results["torch_step"] = run_torch_step(repeat)
    if a.all or a.spectral:
        results["spectral"] = run_spectral(a.quick, repeat)
    if a.all or a.topology:
        results["topology"] = run_topology(repeat)
    if a.all or a.startup:
        results["startup"] = run_startup()
    if a.json:
        _write_json(a.json, results)
    return 0


def _write_json(path, results):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1)
    os.replace(tmp, path)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    sys.exit(main())
