"""Run-level metrics of ``lpcore-train`` beside the per-layer ones of
:meth:`~lpcore_torch.cli.run.Run.finish`: the generalization gap and the
norm-based bound, and for Chase the compacted model's size and speed."""
from __future__ import annotations


def generalization(r, train_loss):
    """The measured generalization gap beside the norm-based bound of
    Galanti et al. (``lpcore_torch.generalization_bound``; a bound of 1
    or more says nothing about the 0-1 error: vacuous)."""
    import torch
    from torch import nn

    from ..bound import generalization_bound
    with torch.no_grad():
        r.net.eval()
        train_acc = (r.net(r.Xtr).argmax(1) == r.ytr).float().mean().item()
        test_loss = nn.functional.cross_entropy(r.net(r.Xte), r.yte).item()
        r.net.train()
    test_acc = r.history[-1]["test_accuracy"]
    n_classes = int(max(r.ytr.max(), r.yte.max()) + 1)
    b = generalization_bound(r.net, r.Xtr, n_classes)
    return {"train_accuracy": train_acc, "test_accuracy": test_acc,
            "accuracy_gap": train_acc - test_acc, "train_loss": train_loss,
            "test_loss": test_loss, "loss_gap": test_loss - train_loss,
            "bound": b["bound"], "bound_rho": b["rho"], "bound_vacuous": b["bound"] >= 1.0}

def compact_stats(r):
    """Parameters and CPU inference time (the test set, best of 20) of the
    masked model and of :func:`lpcore_torch.compact`'s copy, and the
    largest difference of their outputs."""
    import copy

    import torch

    from ..compact import compact, inference_seconds, parameter_count
    net = copy.deepcopy(r.net).cpu() if r.Xte.is_cuda else r.net
    X = r.Xte.cpu()
    small = compact(net)
    with torch.no_grad():
        net.eval()
        diff = float((net(X) - small.eval()(X)).abs().max())
        net.train()
    (n_full, nz_full), (n_small, nz_small) = parameter_count(net), parameter_count(small)
    return {"params_masked_model": n_full, "nonzero_masked_model": nz_full,
            "params_compact": n_small, "nonzero_compact": nz_small,
            "inference_s_masked": inference_seconds(net, X),
            "inference_s_compact": inference_seconds(small, X),
            "max_output_difference": diff}
