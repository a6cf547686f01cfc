"""Where the GPU time of one LpSGD step goes: CUDA-event times of the three
kernels of ``lpcore.StepPlan`` (check, update, scale), launched apart, on
ResNet-18's constrained weights (float32, p = 1.3, dual, momentum 0.9),
beside torch's SGD over the same shapes and the device-to-device copy
bandwidth measured in the same run.

    python -m benchmarks.gpu_profile_step            # on a GPU
    python -m benchmarks.gpu_profile_step --sweep    # one row per launch geometry

Each kernel is timed twice:

* *alone*: two events around one launch, as the step runs it (the host's
  launch is inside the interval when the GPU waits for it);
* *queued*: ``--reps`` launches of the kernel between two events, so that the
  host runs ahead and the time is the GPU's.

Repeating the update or the scale alone moves the state further each time;
only the times are read (the guard is checked at the end: a step that found
a bad value would write nothing and time nothing).  The traffic floor is the
bytes the three kernels must move (check reads g, w, the momentum buffer and
v; update reads them and writes the buffer and v; scale reads v and writes v
and w: 13 passes of 4 bytes an entry) at the measured copy bandwidth.

``--sweep`` runs this script once per launch geometry
(``LPCORE_CUDA_THREADS`` x ``LPCORE_CUDA_ITEMS``, read at import: a fresh
process each) and prints one row each; the geometry to keep is the one
measured fastest on the GPU at hand.  Under ``NUMBA_ENABLE_CUDASIM=1``,
``--small`` runs three small tensors as a smoke test of the code path (the
simulator's event times are meaningless: -1 ms); CI runs ``--small --sweep
--geometries 4:2`` there.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

import lpcore
from lpcore.kernels.cuda import lpsgd as L

#: (threads per block, items per thread) tried by --sweep; the first is the default
GEOMETRIES = ((256, 16), (128, 32), (256, 8), (512, 8))
#: passes over 4-byte entries the three kernels make (see the module docstring)
PASSES = 13


def _shapes(small):
    if small:
        return [(4, 3, 2, 2), (6, 10), (2, 40)]
    from benchmarks.__main__ import resnet18_weight_shapes
    return resnet18_weight_shapes()


def _events_ms(cuda, fn, reps, queued):
    """Mean ms of ``fn`` between two events on the default stream."""
    e0, e1 = cuda.event(), cuda.event()  # timing events (the default)
    if queued:
        e0.record()
        for _ in range(reps):
            fn()
        e1.record()
        e1.synchronize()
        return e0.elapsed_time(e1) / reps
    tot = 0.0
    for _ in range(reps):
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        tot += e0.elapsed_time(e1)
    return tot / reps


def _copy_gbs(cuda, reps, n=1 << 26):
    """Device-to-device copy bandwidth (read + write), GB/s, of ``n`` float32."""
    a = cuda.to_device(np.ones(n, np.float32))
    b = cuda.device_array_like(a)
    b.copy_to_device(a)
    ms = _events_ms(cuda, lambda: b.copy_to_device(a), reps, True)
    return 2 * 4 * n / (ms * 1e-3) / 1e9 if ms > 0 else float("nan")


def _sgd_us(shapes, reps):
    """torch.optim.SGD (momentum 0.9, torch's default foreach path) over the
    same shapes, us a step; None without a CUDA torch."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    params = [torch.zeros(sh, device="cuda", requires_grad=True) for sh in shapes]
    for q in params:
        q.grad = torch.randn_like(q) * 1e-2
    sgd = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    for _ in range(3):
        sgd.step()
    torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    for _ in range(reps):
        sgd.step()
    e1.record()
    torch.cuda.synchronize()
    return e0.elapsed_time(e1) * 1e3 / reps


def profile(small=False, reps=20):
    """The kernels' times (us) and the run's facts, as a dict."""
    from numba import cuda
    from lpcore.kernels.cuda._launch import config
    shapes = _shapes(small)
    rng = np.random.default_rng(0)
    opt = lpcore.LpSGD(1.3, lr=0.01, momentum=0.9)
    ws = [cuda.to_device(rng.standard_normal(s).astype(np.float32)) for s in shapes]
    sts = [opt.init(w, axis=tuple(range(1, len(s)))) for w, s in zip(ws, shapes)]
    gs = [cuda.to_device((1e-2 * rng.standard_normal(s)).astype(np.float32)) for s in shapes]
    plan = opt.plan(ws, sts)
    for _ in range(3):
        plan.step(gs, check="deferred")
    plan.sync()
    ms = plan.classes[0][0]
    n = sum(int(np.prod(s)) for s in shapes)

    def check():
        ms.run("none", "phase1")

    def update():
        ms.launch_update(ms.blocks, ms.threads, 0, ms.itab, ms.btab, ms.ftab, ms.ctr, ms.S, ms.P,
                         ms.N, ms.cnt, ms.guard, ms.like, 0)

    def scale():
        L._scale_launch(ms.blocks, ms.threads, 0, ms.itab, ms.btab, ms.ftab, ms.ctr, ms.S, ms.N,
                        ms.guard, ms.like, ms.variant, ms.has_mom)

    out = {"threads": config.threads, "items": config.items, "tensors": len(shapes),
           "elements": n, "blocks": ms.blocks}
    for name, fn in (("check", check), ("update", update), ("scale", scale)):
        out[f"{name}_alone_us"] = _events_ms(cuda, fn, reps, False) * 1e3
        out[f"{name}_queued_us"] = _events_ms(cuda, fn, reps, True) * 1e3
    bad, _ = ms.check_now()
    out["guard_clear"] = bad == -1
    out["copy_gbs"] = _copy_gbs(cuda, 5, 1 << (10 if small else 26))
    out["floor_us"] = PASSES * 4 * n / (out["copy_gbs"] * 1e9) * 1e6
    out["sgd_us"] = _sgd_us(shapes, reps)
    return out


def _print(r):
    print(f"{r['tensors']} tensors, {r['elements'] / 1e6:.2f} M elements, {r['blocks']} blocks "
          f"of {r['threads']} threads, {r['items']} items a thread")
    for k in ("check", "update", "scale"):
        print(f"  {k:6s}  alone {r[f'{k}_alone_us']:9.1f} us   queued {r[f'{k}_queued_us']:9.1f} us")
    q = sum(r[f"{k}_queued_us"] for k in ("check", "update", "scale"))
    print(f"  sum of queued {q:.1f} us; traffic floor ({PASSES} passes at the measured copy "
          f"bandwidth, {r['copy_gbs']:.0f} GB/s) {r['floor_us']:.1f} us")
    if r["sgd_us"] is not None:
        print(f"  torch.optim.SGD step over the same shapes: {r['sgd_us']:.1f} us")
    if not r["guard_clear"]:
        print("  WARNING: the guard was set (a bad value): the times are not the step's")


def sweep(small, reps, geometries=GEOMETRIES):
    """One fresh process per geometry; a table row each.  (rows, failures)"""
    rows = []
    failed = 0
    for threads, items in geometries:
        env = dict(os.environ, LPCORE_CUDA_THREADS=str(threads), LPCORE_CUDA_ITEMS=str(items))
        with tempfile.TemporaryDirectory() as d:
            f = os.path.join(d, "r.json")
            cmd = [sys.executable, "-m", "benchmarks.gpu_profile_step", "--reps", str(reps),
                   "--json", f] + (["--small"] if small else [])
            p = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if p.returncode != 0:
                print(f"{threads} x {items}: failed\n{p.stderr[-2000:]}")
                failed += 1
                continue
            rows.append(json.load(open(f)))
    print("| threads | items | blocks | check us | update us | scale us | sum us (queued) "
          "| alone sum us | floor us |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        q = [r[f"{k}_queued_us"] for k in ("check", "update", "scale")]
        a = sum(r[f"{k}_alone_us"] for k in ("check", "update", "scale"))
        print(f"| {r['threads']} | {r['items']} | {r['blocks']} | {q[0]:.1f} | {q[1]:.1f} | "
              f"{q[2]:.1f} | {sum(q):.1f} | {a:.1f} | {r['floor_us']:.1f} |")
    return rows, failed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--small", action="store_true", help="three small tensors (smoke test)")
    ap.add_argument("--sweep", action="store_true", help="one process per launch geometry")
    ap.add_argument("--geometries", help="with --sweep: THREADS:ITEMS,... (default "
                    + ",".join(f"{t}:{i}" for t, i in GEOMETRIES) + ")")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    if a.sweep:
        geo = GEOMETRIES if not a.geometries else tuple(
            tuple(int(v) for v in g.split(":")) for g in a.geometries.split(","))
        res, failed = sweep(a.small, a.reps, geo)
    else:
        res = profile(a.small, a.reps)
        _print(res)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    if a.sweep and failed:
        sys.exit(f"{failed} of the geometries failed")


if __name__ == "__main__":
    main()
