"""Where the GPU time of one LpSGD step goes: CUDA-event time of each of the
three kernels of ``lpcore.StepPlan`` (by launching the phases apart) and of
torch's SGD, on ResNet-18's constrained weights (float32, p = 1.3, dual,
momentum 0.9).  ``python benchmarks/gpu_profile_step.py`` on a GPU."""
import numpy as np
import torch

import lpcore
from lpcore.kernels.cuda import lpsgd as L

from benchmarks.__main__ import resnet18_weight_shapes


def main():
    from numba import cuda
    shapes = resnet18_weight_shapes()
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
    print(f"{len(shapes)} tensors, {n / 1e6:.2f} M elements, {ms.blocks} blocks of {ms.threads}")
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
    reps = 20
    tot = np.zeros(3)
    s = 0
    for _ in range(reps):
        ev[0].record()
        ms.run("none", "phase1")
        ev[1].record()
        ms.launch_update(ms.blocks, ms.threads, s, ms.itab, ms.ftab, ms.ctr, ms.S, ms.P, ms.N,
                         ms.cnt, ms.guard, ms.like, 0)
        ev[2].record()
        L._scale_launch(ms.blocks, ms.threads, s, ms.itab, ms.ftab, ms.ctr, ms.S, ms.N,
                        ms.guard, ms.like, ms.variant, ms.has_mom)
        ev[3].record()
        torch.cuda.synchronize()
        tot += [ev[i].elapsed_time(ev[i + 1]) for i in range(3)]
    print("us per kernel (host launch included):",
          ", ".join(f"{k} {v * 1e3 / reps:.1f}" for k, v in zip(("check", "update", "scale"), tot)))
    bytes_ = n * 4 * 9  # g, buf, v read twice (check and update), buf, v, w written
    print(f"traffic floor at 4.2 TB/s: {bytes_ / 4.2e12 * 1e6:.1f} us")
    # the anchor: torch.optim.SGD (momentum 0.9, torch's default foreach path)
    # over the same shapes, timed the same way
    params = [torch.zeros(sh, device="cuda", requires_grad=True) for sh in shapes]
    for q in params:
        q.grad = torch.randn_like(q) * 1e-2
    sgd = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    for _ in range(3):
        sgd.step()
    torch.cuda.synchronize()
    ev[0].record()
    for _ in range(reps):
        sgd.step()
    ev[1].record()
    torch.cuda.synchronize()
    print(f"torch.optim.SGD step over the same shapes: {ev[0].elapsed_time(ev[1]) * 1e3 / reps:.1f} us")


if __name__ == "__main__":
    main()
