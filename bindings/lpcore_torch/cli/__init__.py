"""``lpcore-train``: train a sparse network on built-in real data.

    lpcore-train                                  # digits, MLP, LpSS, target sparsity 0.9
    lpcore-train --dataset mnist5k --model cnn --method rigl
    lpcore-train --sweep-p 1.1,1.3,1.5,2.0 --method dense-lp   # Hoyer vs p

Writes ``metrics.json``, ``training.png``, ``model.pt`` (the final
``state_dict`` of the plain model, masked weights zero: it loads into
``lpcore_torch.build_model(...)`` with ``load_state_dict``) and, for sparse
methods, ``masks.pt`` (the masks by weight name; ``hoyer_vs_p.png`` with
``--sweep-p``) into ``--out``, only when the run has finished, as one unit.
One run owns ``--out`` at a time: a second one is refused (exit 2).  After
every epoch ``--out/checkpoint.pt`` is replaced atomically (model, masks,
optimizer and trainer state, RNG states, history; readable with
``torch.load(weights_only=True)``); ``--resume`` continues from it, bitwise
identical to a run that never stopped, and it is removed when the run ends.
Ctrl-C and SIGTERM keep it and write nothing else.  Every argument and the
destination are checked before training: exit code 2 for bad ones.
"""
from .config import DEFAULT_P, RunConfig
from .main import main
from .run import Run, cuda_problem, run

__all__ = ["DEFAULT_P", "Run", "RunConfig", "cuda_problem", "main", "run"]
