"""One ``lpcore-train`` run (:class:`Run`): the model, optimizer and trainer
a :class:`~lpcore_torch.cli.config.RunConfig` asks for, trained an epoch at
a time with its whole state in a checkpointable dict, and its metrics (the
Hoyer predictions of the gamma model, spectral gaps, participation ratio)."""
from __future__ import annotations

import json
import sys
import time

import numpy as np

from lpcore.methods import training_schedule

from ..groups import sparse_layers
from ..models import build_model
from .metrics import compact_stats, generalization


class Terminated(BaseException):
    """SIGTERM, turned into an exception so that the clean-up runs."""


#: set by SIGTERM: an exception raised by the handler can be swallowed (it
#: lands in whatever runs then, e.g. a ``__del__`` while Numba compiles), so
#: the training loop also checks this flag after every step
STOP = [False]


def stop_requested():
    """Raise :class:`Terminated` if SIGTERM came."""
    if STOP[0]:
        raise Terminated()


# how the gamma model's shape is estimated for the Hoyer prediction: "<source>-<fit>"
# (source: final full-batch gradient, momentum buffer, LpSGD dual state; fit: maximum
# likelihood, the moment ratio mean|x|/rms(x), or none: the empirical plug-in
# Hoyer of |source|^(1/(p-1)); "dual-empirical" would be the weights themselves),
# or the Gaussian gradient model
ESTIMATORS = ("gradient-mle", "gradient-moments", "gradient-empirical", "momentum-mle",
              "momentum-moments", "momentum-empirical", "dual-mle", "dual-moments", "gaussian")
DEFAULT_ESTIMATOR = "momentum-empirical"  # smallest measured error: README table (a)
FALLBACK_ESTIMATOR = "gaussian"  # runs without a momentum buffer (momentum = 0)


def cuda_problem():
    """Why lpcore_torch cannot train on a CUDA device here, or None if it can."""
    import torch
    if not torch.cuda.is_available():
        return "no CUDA device was found (torch.cuda.is_available() is False)"
    try:
        from numba import cuda
    except ImportError:
        return "lpcore's CUDA kernels need numba-cuda: pip install 'lpcore[cuda]'"
    if not cuda.is_available():
        return "torch sees a CUDA device but numba.cuda does not (numba.cuda.detect() tells why)"
    return None


def _as_groups(t, n):
    """An optimizer state tensor as host float32 (G, n) groups (None stays None)."""
    return None if t is None else t.detach().float().cpu().numpy().reshape(-1, n)


def _predict(estimator, sources, n, p, seed):
    """(predicted Hoyer, fitted k) for one layer, or (None, None) without the source.

    The prediction is reported to 12 significant digits: it is a Monte Carlo
    estimate, and its last bits differ between a process that compiled the
    float64 Hoyer kernel and one that loaded it from numba's cache (seen on
    this machine, 2026-12-06; its fastmath reduction compiles to different
    code), which would make a resumed run differ from one that never stopped."""
    import lpcore
    if estimator == "gaussian":
        h, k = lpcore.predict_hoyer(None, n, p, gradient="gaussian", seed=seed)
    else:
        source, fit = estimator.split("-")
        x, axis = sources[source]
        if x is None or np.count_nonzero(x) < 2:
            return None, None
        h, k = lpcore.predict_hoyer(x, n, p, fit=fit, axis=axis, seed=seed)
    return (None if h is None else float(f"{h:.12g}")), k


class Run:
    """One training run, advanced an epoch at a time, with its whole state in
    :meth:`state_dict` (tensors and a JSON string: ``torch.load(...,
    weights_only=True)`` reads it back) so that a run continued from a
    checkpoint is bitwise identical to one that never stopped."""

    def __init__(self, cfg, p, data):
        import torch

        import lpcore_torch

        self.cfg, self.p = cfg, p
        Xtr, ytr, Xte, yte, shape = data
        torch.manual_seed(cfg.seed)
        n_classes = int(max(ytr.max(), yte.max()) + 1)
        # built on the CPU (the same initial weights for every device), then moved
        dev = torch.device(cfg.device)
        self.net = net = build_model(cfg.model, Xtr[0].size, shape, n_classes).to(dev)
        view = (-1,) + tuple(shape) if cfg.model == "cnn" else (-1, Xtr[0].size)
        self.Xtr = torch.from_numpy(Xtr).reshape(view).to(dev)
        self.Xte = torch.from_numpy(Xte).reshape(view).to(dev)
        self.ytr, self.yte = torch.from_numpy(ytr).to(dev), torch.from_numpy(yte).to(dev)
        self.uses_lp = cfg.uses_lpsgd
        reference = cfg.recipe == "reference"
        if not self.uses_lp:
            self.p = None
        elif reference:
            from lpcore.methods.lpss import reference_p
            n_lp = len(lpcore_torch.lp_param_groups(net)[0]["params"])
            self.p = p = reference_p(cfg.target_sparsity, n_lp)
        if self.uses_lp:
            groups = lpcore_torch.lp_param_groups(net, p=p, target_sparsity=cfg.target_sparsity,
                                                  h0=cfg.h0)
            for g in groups[:-1]:
                g["lr"] = cfg.lp_lr
            self.opt = lpcore_torch.LpSGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                                          nesterov=reference, lr_decay=0.0 if reference
                                          else cfg.lr_decay)
        else:
            self.opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum)
        # the reference's piecewise-linear learning rate scales every group's own rate
        self.base_lrs = [g["lr"] for g in self.opt.param_groups] if reference else None
        self.steps_per_epoch = max(1, len(Xtr) // cfg.batch_size)
        total = cfg.epochs * self.steps_per_epoch
        self.trainer = None
        schedule = training_schedule(cfg.method, total, cfg.frequency, cfg.imp_rounds)[1]
        if schedule is not None:
            begin, end, freq = schedule
            opts = dict(h_schedule=cfg.h_schedule, controller=cfg.controller,
                        revive=not cfg.no_revive, finalize=cfg.finalize, adapt_h=not cfg.no_adapt_h)
            if reference:
                from lpcore.methods.lpss import REFERENCE
                opts = {k: REFERENCE[k] for k in ("h_schedule", "controller", "revive",
                                                  "finalize", "adapt_h", "pruning",
                                                  "mask_classifier", "init_sparsity", "delta")}
                opts["count_all_parameters"] = REFERENCE["count_all_parameters"]
                freq = REFERENCE["frequency"]
            self.trainer = lpcore_torch.SparseTrainer(
                net, self.opt, method=cfg.topology,
                target_sparsity=cfg.target_sparsity, begin=begin, end=end, frequency=freq,
                h0=cfg.h0, seed=cfg.seed, mask_lr=cfg.mask_lr, lam=cfg.lam, penalty=cfg.penalty,
                channel_sparsity=cfg.channel_sparsity, **opts)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.history = []
        self.elapsed = 0.0

    @property
    def done(self):
        return len(self.history) >= self.cfg.total_epochs()

    def evaluate(self):
        import torch
        self.net.eval()
        with torch.no_grad():
            acc = (self.net(self.Xte).argmax(1) == self.yte).float().mean().item()
        self.net.train()
        return acc

    def sparse_weights(self):
        if self.trainer is not None:
            return [(f"{it.name}.weight", it.weight) for it in self.trainer.items]
        names = {id(q): n for n, q in self.net.named_parameters()}
        if self.uses_lp:
            return [(names[id(w)], w) for w, _ in self.opt.constrained_weights()]
        return [(f"{n}.weight", m.weight) for n, m in sparse_layers(self.net)]

    def exact_sparsity(self):
        ws = self.sparse_weights()
        return sum(int((w == 0).sum()) for _, w in ws) / sum(w.numel() for _, w in ws)

    def epoch(self):
        """Train one epoch; returns its history record."""
        import torch
        from torch import nn
        cfg, net, opt, trainer = self.cfg, self.net, self.opt, self.trainer
        t0 = time.time()
        perm = torch.randperm(len(self.Xtr), generator=self.gen)
        tot = 0.0
        total = cfg.total_epochs() * self.steps_per_epoch
        for i in range(self.steps_per_epoch):
            if self.base_lrs is not None:
                from lpcore.methods.lpss import reference_lr_factor
                f = reference_lr_factor(len(self.history) * self.steps_per_epoch + i, total)
                for g, lr in zip(opt.param_groups, self.base_lrs):
                    g["lr"] = lr * f
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size].to(self.Xtr.device)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(self.Xtr[idx]), self.ytr[idx])
            loss.backward()
            opt.step()
            if trainer is not None:
                trainer.step()
            tot += loss.item()
            stop_requested()
        rec = {"epoch": len(self.history) + 1, "train_loss": tot / self.steps_per_epoch,
               "test_accuracy": self.evaluate(), "sparsity": self.exact_sparsity()}
        self.elapsed += time.time() - t0
        if trainer is not None:
            rec["mask_sparsity"] = trainer.sparsity
            if cfg.method == "lpss":
                rec["h_gain"] = trainer.h_gain
        self.history.append(rec)
        return rec

    # ------------------------------------------------------------------
    def state_dict(self):
        import torch
        meta = {"history": self.history, "elapsed": self.elapsed,
                "trainer": None if self.trainer is None else self.trainer.state_dict()}
        return {"model": self.net.state_dict(), "optimizer": self.opt.state_dict(),
                "generator": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
                "trainer_tensors": {} if self.trainer is None else self.trainer.tensor_state(),
                "meta": json.dumps(meta)}

    def load_state_dict(self, st):
        import torch
        meta = json.loads(st["meta"])
        # the model first: the optimizer takes the weights it finds as its state's
        self.net.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        if self.trainer is not None:
            self.trainer.load_state_dict(meta["trainer"])
            self.trainer.load_tensor_state(st.get("trainer_tensors", {}))
        self.gen.set_state(st["generator"])
        torch.set_rng_state(st["torch_rng"])
        self.history, self.elapsed = meta["history"], float(meta["elapsed"])

    # ------------------------------------------------------------------
    def finish(self):
        """The metrics dict (with the Hoyer predictions from a full-batch gradient)."""
        import lpcore
        from torch import nn
        cfg, net, opt, trainer = self.cfg, self.net, self.opt, self.trainer
        # full-batch gradient for the gamma-model prediction of each layer's Hoyer
        opt.zero_grad()
        train_loss = nn.functional.cross_entropy(net(self.Xtr), self.ytr)
        train_loss.backward()
        layers = []
        pmap = {}
        if self.uses_lp:
            p_of = {id(w): g["p"] for g in opt.param_groups for w in g["params"]}
            pmap = {id(w): (p_of[id(w)], lay) for w, lay in opt.constrained_weights()}
        dense = {id(it.weight): it.dense_grad for it in trainer.items} if trainer else {}
        for name, w in self.sparse_weights():
            p_l, lay = pmap.get(id(w), (None, None))
            if lay is None:
                lay = (tuple(w.shape), tuple(range(1, w.dim())))
            arr = w.detach().cpu().numpy().reshape(lay[0])
            n_in = int(np.prod([lay[0][ax] for ax in lay[1]]))
            h = float(np.mean(lpcore.hoyer(arr, axis=lay[1])))
            est = {}
            if p_l is not None:
                # the dense (unmasked) full-batch gradient: the trainer's hook keeps it
                gfull = dense.get(id(w), w.grad)
                st = opt.grouped_state(w)
                sources = {"gradient": (None if gfull is None else
                                        gfull.detach().cpu().numpy().reshape(lay[0]), lay[1]),
                           "momentum": (_as_groups(st.get("momentum_buffer"), n_in), 1),
                           "dual": (_as_groups(st.get("dual"), n_in), 1)}
                for e in (ESTIMATORS if cfg.all_estimators else
                          (DEFAULT_ESTIMATOR, FALLBACK_ESTIMATOR)):
                    est[e] = _predict(e, sources, n_in, p_l, cfg.seed)
            used = DEFAULT_ESTIMATOR if est.get(DEFAULT_ESTIMATOR, (None,))[0] is not None \
                else FALLBACK_ESTIMATOR
            pred, k = est.get(used, (None, None))
            from ..report import spectral_gaps
            active = int(np.count_nonzero(arr))
            pr = lpcore.participation_ratio(arr)
            layers.append({"name": name, "shape": list(w.shape), "fan_in": n_in,
                           "sparsity": float((w == 0).float().mean()), "hoyer": h,
                           # how many connections really carry weight: (sum |w|)^2 / sum w^2
                           # over the active ones, and that count over the active count
                           "participation_ratio": pr,
                           "participation_fraction": pr / active if active else 0.0,
                           **spectral_gaps(arr, lay[1]),
                           # Hoang et al.'s gaps as their code computes them (None: degree < 3)
                           "ramanujan_gaps": lpcore.ramanujan_gaps(arr != 0, axis=lay[1]),
                           "hoyer_predicted": pred, "gamma_shape": k, "p": p_l,
                           "estimator": used if pred is not None else None,
                           "hoyer_estimates": {e: v[0] for e, v in est.items()}})
        out = {"dataset": cfg.dataset, "model": cfg.model, "method": cfg.method,
               "p": self.p, "recipe": cfg.recipe,
               "target_sparsity": cfg.target_sparsity if trainer is not None else None,
               "device": cfg.device,
               "test_accuracy": self.history[-1]["test_accuracy"],
               "sparsity": self.exact_sparsity(),
               "sparsity_all_parameters": sum(int((q == 0).sum()) for q in net.parameters())
               / sum(q.numel() for q in net.parameters()),
               "epochs": cfg.total_epochs(), "seed": cfg.seed,
               "train_time_s": self.elapsed, "layers": layers, "history": self.history,
               "generalization": generalization(self, float(train_loss.detach()))}
        if trainer is not None:
            out["channel_sparsity"] = trainer.channel_sparsity
        if cfg.method == "concave":
            out["penalty"] = cfg.penalty or trainer.policy.penalty
        if cfg.method == "chase":
            out["compact"] = compact_stats(self)
        return out


def warm_kernels(r, out=None):
    """Compile (or load from Numba's cache) the LpSGD step kernels a CPU run
    will use, on scratch copies of its constrained weights, before training;
    if that takes longer than a second, say so (the first run on a machine
    compiles for a while, later ones load in milliseconds).  Returns the
    seconds it took."""
    import threading

    import lpcore
    if not r.uses_lp or r.cfg.device != "cpu":
        return 0.0
    out = sys.stderr if out is None else out
    t0 = time.time()
    said = threading.Event()

    def notice():
        said.set()
        print("lpcore: compiling its kernels for this machine (the first run only; later runs "
              "load them from Numba's cache) ...", file=out, flush=True)
    timer = threading.Timer(1.0, notice)
    timer.start()
    try:
        ws, states, masks, cores = [], [], [], {}
        group_of = {id(q): g for g in r.opt.param_groups for q in g["params"]}
        for w, (view, axis) in r.opt.constrained_weights():
            g = group_of[id(w)]
            core = cores.setdefault(id(g), lpcore.LpSGD(
                g["p"], min(g["lr"], 1.0), momentum=g["momentum"], nesterov=g["nesterov"],
                weight_decay=g["weight_decay"], lr_decay=g["lr_decay"], variant=g["variant"]))
            scratch = np.ones(view, dtype=w.detach().cpu().numpy().dtype)
            ws.append((core, scratch))
            states.append(core.init(scratch, axis=axis))
            masks.append(np.ones(view, dtype=bool))
        for core in {id(c): c for c, _ in ws}.values():
            idx = [i for i, (c, _) in enumerate(ws) if c is core]
            plan = core.plan([ws[i][1] for i in idx], [states[i] for i in idx],
                             masks=[masks[i] for i in idx])
            for _ in range(2):  # the first momentum step, then the others
                plan.step([np.zeros_like(ws[i][1]) for i in idx])
    finally:
        timer.cancel()
    dt = time.time() - t0
    if said.is_set():
        print(f"lpcore: kernels ready in {dt:.1f} s", file=out, flush=True)
    return dt


def train(r, progress, after_epoch=None, label=None):
    """Train ``r`` to its last epoch (from wherever it is), with a progress bar
    if ``progress`` (described as ``label``); ``after_epoch()`` runs after
    each epoch."""
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=r.cfg.total_epochs(), initial=len(r.history), desc=label,
                   unit="epoch", file=sys.stderr)
    while not r.done:
        rec = r.epoch()
        if after_epoch is not None:
            after_epoch()
        if bar is not None:
            bar.set_postfix(acc=f"{rec['test_accuracy']:.4f}", sparsity=f"{rec['sparsity']:.3f}")
            bar.update(1)
    if bar is not None:
        bar.close()


def run(cfg, p, data, progress=False):
    """One training run from start to end; returns the metrics dict."""
    r = Run(cfg, p, data)
    train(r, progress)
    return r.finish()
