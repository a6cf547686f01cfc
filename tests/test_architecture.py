"""The layout rules of the code, checked: no binding module over 400 lines,
no reading of LpSGD's private state from outside the optimizer (the trainer
and the command line ask through its API), one method table."""
import collections
import os
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

import lpcore_torch  # noqa: E402

BINDING = os.path.dirname(lpcore_torch.__file__)
#: the optimizer's own modules: the only code that may read LpSGD.state
OPTIMIZER = {os.path.join(BINDING, f) for f in ("optim.py", "_plan.py", "_plain.py",
                                                "_state.py")}


def test_no_binding_module_over_400_lines():
    long = {}
    for root, _, names in os.walk(BINDING):
        for n in names:
            if n.endswith(".py"):
                with open(os.path.join(root, n)) as f:
                    count = sum(1 for _ in f)
                if count > 400:
                    long[os.path.relpath(os.path.join(root, n), BINDING)] = count
    assert long == {}


class _Watched(collections.defaultdict):
    """LpSGD.state that notes every read from binding code outside the optimizer."""

    seen = []

    def _note(self):
        f = sys._getframe(2)
        path = os.path.abspath(f.f_code.co_filename)
        if path.startswith(BINDING) and path not in OPTIMIZER:
            self.seen.append(f"{os.path.relpath(path, BINDING)}:{f.f_lineno}")

    def __getitem__(self, k):
        self._note()
        return super().__getitem__(k)

    def get(self, *a):
        self._note()
        return super().get(*a)

    def values(self):
        self._note()
        return super().values()

    def items(self):
        self._note()
        return super().items()

    def __contains__(self, k):
        self._note()
        return super().__contains__(k)


def _watch(opt):
    opt.state = _Watched(dict, opt.state)
    _Watched.seen = []
    return opt


@pytest.mark.parametrize("method, pruning", [("lpss", "hard"), ("lpss", "semi"),
                                             ("imp", "semi"), ("magnitude", "semi")])
def test_the_trainer_uses_only_the_optimizers_api(method, pruning):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(),
                              torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    opt = _watch(lpcore_torch.LpSGD(lpcore_torch.lp_param_groups(net, p=1.5), lr=0.05,
                                    momentum=0.9))
    tr = lpcore_torch.SparseTrainer(net, opt, method=method, target_sparsity=0.7, begin=2,
                                    end=12, frequency=4 if method != "imp" else 6,
                                    pruning=pruning)
    x, y = torch.randn(32, 12), torch.randint(0, 3, (32,))
    first = [it.mask.clone() for it in tr.items]
    for _ in range(16):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        tr.step()
    assert any(not torch.equal(a, it.mask) for a, it in zip(first, tr.items))  # updates ran
    assert _Watched.seen == []


def test_the_watch_sees_a_read_from_the_trainer():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    opt = _watch(lpcore_torch.LpSGD(lpcore_torch.lp_param_groups(net), lr=0.1))
    code = compile("opt.state.get(net[0].weight)", os.path.join(BINDING, "sparse.py"), "exec")
    exec(code, {"opt": opt, "net": net})
    assert _Watched.seen == ["sparse.py:1"]


def test_the_command_line_uses_only_the_optimizers_api(tmp_path):
    from lpcore_torch import cli
    from lpcore_torch.data import load
    cfg = cli.RunConfig(epochs=2, all_estimators=True).checked()
    r = cli.Run(cfg, cli.DEFAULT_P, load(cfg.dataset, cfg.seed))
    _watch(r.opt)
    r.trainer.optimizer = r.opt
    while not r.done:
        r.epoch()
    m = r.finish()
    assert m["layers"][0]["hoyer_estimates"]["dual-mle"] is not None
    assert _Watched.seen == []
