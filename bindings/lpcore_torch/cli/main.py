"""``lpcore-train``'s main: parse, prepare the folder, train (resuming from
a checkpoint when asked), write the final files, say what happened.  Exit
codes: 0 done, 1 stopped by the library (diverged training, a failed
write), 2 bad arguments or destination, 130 Ctrl-C, 143 SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import sys

from . import files
from .arguments import parse
from .config import DEFAULT_P, LEARNED
from .outputs import label, plot_sweep, plot_training, table
from .run import STOP, Run, Terminated, cuda_problem, train, warm_kernels

def choose_threads(cfg, model):
    """torch's intra-op threads for this process (``--threads``): the number
    given; with "auto" 1 for a model without convolutions (the MLPs' matrix
    products are too small to gain: digits 2.3 s on one thread, 2.9 s on
    two; mnist5k 2.37 s, 2.43 s), else the cores other processes leave free,
    at most torch's default (the CNNs gain: mnist5k 5.7 s -> 3.8 s, mnist1d
    1.6 s -> 1.25 s; README, "Threads"), so 1 on a machine that other
    processes keep busy."""
    import torch
    from torch import nn

    from lpcore._threads import free_cores
    if cfg.threads != "auto":
        return cfg.threads
    convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    if not any(isinstance(m, convs) for m in model.modules()):
        return 1
    free = free_cores()
    most = torch.get_num_threads()
    return most if free is None else max(1, min(most, int(free)))


def _on_sigterm(signum, frame):
    STOP[0] = True
    raise Terminated()


def main(argv=None):
    ap, cfg = parse(argv, cuda_problem)
    from ..data import load
    try:
        data = load(cfg.dataset, cfg.seed)
    except RuntimeError as e:
        ap.error(str(e))
    ps = cfg.sweep_p or [DEFAULT_P if cfg.p is None else cfg.p]
    try:  # the model and groups now: a wrong --p count is an argument error
        first = Run(cfg, ps[0], data)
    except ValueError as e:
        ap.error(str(e))
    out, created, lock = files.prepare_out(ap.error, cfg.out)
    try:
        return _main(ap, cfg, data, ps, first, out, created)
    finally:
        lock.release()
        if os.path.isdir(out) and not os.listdir(out):
            files.remove_dirs(created)


def _main(ap, cfg, data, ps, first, out, created):
    import torch
    threads = choose_threads(cfg, first.net)
    torch.set_num_threads(threads)  # this process is the application's own
    ckpt = os.path.join(out, files.CHECKPOINT)
    done, state = [], None
    if os.path.exists(ckpt):
        if cfg.resume:
            ck = files.load_checkpoint(ap.error, ckpt, cfg)
            done, state = json.loads(ck["done"]), ck.get("run")
            print(f"resuming from {ckpt}: {len(done)} of {len(ps)} run(s) finished"
                  + ("" if state is None else
                     f", epoch {len(json.loads(state['meta'])['history'])} of "
                     f"{cfg.total_epochs()}"), file=sys.stderr)
        else:
            print(f"note: {ckpt} (an unfinished run) will be replaced; pass --resume to "
                  "continue it instead", file=sys.stderr)
    elif cfg.resume:
        print(f"--resume: no checkpoint in {out}; starting from the beginning", file=sys.stderr)
    if not cfg.quiet:
        print(f"lpcore-train: {cfg.dataset} / {cfg.model} / {label(cfg.method, first.p)} on "
              f"{cfg.device}, {threads} torch thread{'s' if threads > 1 else ''}",
              file=sys.stderr)
    args_json = json.dumps(cfg.run_args())

    def checkpoint(run):
        """The finished runs, and the one in progress (None between runs)."""
        ck = {"format": files.CKPT_FORMAT, "args": args_json, "done": json.dumps(done)}
        if run is not None:
            ck["run"] = run.state_dict()
        files.save_atomic(ck, ckpt)

    old_term = None
    STOP[0] = False
    try:
        old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: SIGTERM keeps its handler
        pass
    staging = r = None
    installed = False
    try:
        warm_kernels(first)
        for i, p in enumerate(ps):
            if i < len(done):
                continue
            r = first if i == 0 else Run(cfg, p, data)
            if state is not None:
                r.load_state_dict(state)
                state = None
            train(r, not cfg.quiet, lambda: checkpoint(r), label=label(cfg.method, r.p))
            done.append(dict(r.finish(), threads=threads))
            if i + 1 < len(ps):
                checkpoint(None)
        if cfg.sweep_p:
            metrics = dict(done[-1], sweep=[{k: m[k] for k in ("p", "test_accuracy", "sparsity",
                                                                "layers")} for m in done])
        else:
            metrics = done[0]
        # the final files: written aside, then moved in as one unit (files.install)
        staging = files.stage(out)
        names = _write_results(staging, metrics, done, cfg, r)
        for name in files.OUTPUTS:
            path = os.path.join(out, name)
            if files.not_a_file(path):
                results_dir, staging = staging, None  # the results stay where they are
                raise RuntimeError(f"{path} is no longer a regular file; nothing was replaced; "
                                   f"the results are in {results_dir} and the checkpoint in "
                                   f"{ckpt}")
        with files.signals_deferred():  # SIGTERM and Ctrl-C wait for the move
            files.install(out, staging, names)
            staging, installed = None, True
        # printed once the files are in place: a closed stdout loses nothing
        for m in done:
            print(table(m))
        print(f"wrote {', '.join(names)} to {out}")
    except (ValueError, OSError) as e:  # diverged training, NaN data, a failed write
        where = f"at epoch {len(r.history) + 1}" if r is not None and not r.done \
            else "after training"
        opts = "--lr, --lp-lr or --mask-lr" if cfg.method in LEARNED else "--lr or --lp-lr"
        hint = "" if isinstance(e, OSError) else f"a smaller {opts} may help; "
        print(f"lpcore-train: stopped {where}: {e}\n({hint}"
              + (f"{ckpt} holds the last finished epoch)" if os.path.exists(ckpt)
                 else "nothing was written)"), file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Terminated) as e:
        how = "interrupted" if isinstance(e, KeyboardInterrupt) else "terminated"
        if installed:
            print(f"{how} after the results were written to {out}", file=sys.stderr)
        elif os.path.exists(ckpt):
            print(f"{how}; no results were written; {ckpt} holds the last finished epoch "
                  "(run the same command with --resume to continue)", file=sys.stderr)
        else:
            print(f"{how}; nothing was written", file=sys.stderr)
        return 130 if isinstance(e, KeyboardInterrupt) else 143
    finally:
        if staging is not None:
            import shutil
            shutil.rmtree(staging, ignore_errors=True)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    return 0


def _write_results(staging, metrics, done, cfg, r):
    """metrics.json, the plots, model.pt and masks.pt into ``staging``;
    returns their names."""
    import torch

    from ..models import split_masks
    with open(os.path.join(staging, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    plot_training(metrics, os.path.join(staging, "training.png"))
    if cfg.sweep_p:
        plot_sweep(done, os.path.join(staging, "hoyer_vs_p.png"))
    model, masks = split_masks(r.net.state_dict())
    torch.save(model, os.path.join(staging, "model.pt"))
    if masks:
        torch.save(masks, os.path.join(staging, "masks.pt"))
    return sorted(os.listdir(staging))
