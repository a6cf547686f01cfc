"""The learned-mask methods (scl, concave) through SparseTrainer and lpcore-train."""
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
nn = torch.nn

import lpcore  # noqa: E402
import lpcore_torch  # noqa: E402
from lpcore_torch import cli  # noqa: E402
from ddp import run_on_two_ranks  # noqa: E402
from naive import norm_ref  # noqa: E402
from loop import assert_resumes_identically, train_steps  # noqa: E402


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(),
                         nn.Linear(48, 4))


def _setup(method, seed=0, lp=False, end=60, **kw):
    net = _net(seed)
    if lp:
        groups = lpcore_torch.lp_param_groups(net, p=1.3, target_sparsity=0.8)
        opt = lpcore_torch.LpSGD(groups, lr=0.05, momentum=0.9)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    kw.setdefault("begin", 3 if method == "concave" else 10)
    tr = lpcore_torch.SparseTrainer(net, opt, method=method, target_sparsity=0.8, end=end,
                                    seed=seed, **kw)
    return net, opt, tr


def _batch(g):
    x = torch.randn(32, 20, generator=g)
    # a learnable rule, so that the loss has something to say about the masks
    y = (x[:, :4].argmax(1) + (x[:, 4] > 0).long()) % 4
    return x, y


def _steps(net, opt, tr, n, seed=0, after=None):
    train_steps(net, opt, tr, n, seed=seed, after=after, batch=_batch)


def test_identity_ste_score_gradient_equals_autograd():
    """dL/dm of w_eff = theta * u(m) with du/dm := 1 (autograd through
    u(m) + m - m.detach()) is lpcore.ste_mask_grad(dL/dw_eff, theta)."""
    torch.manual_seed(0)
    theta = torch.randn(6, 5, dtype=torch.float64)
    m = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    x = torch.randn(9, 5, dtype=torch.float64)
    u = (m > 0).to(m.dtype)
    w_eff = theta * (u + m - m.detach())
    w_eff.retain_grad()
    (torch.tanh(x @ w_eff.T) ** 2).sum().backward()
    want = m.grad.numpy()
    got = lpcore.ste_mask_grad(w_eff.grad.numpy(), theta.numpy(), normalize=False)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_scl_trainer_takes_the_normalised_ste_step():
    """One trainer step: the scores move by -mask_lr (N(dL/dw_eff * theta) + lam),
    the dense gradient from autograd."""
    net, opt, tr = _setup("scl", lam=0.3, mask_lr=0.05)
    before = [s.copy() for s in tr.policy.scores]
    thetas = [it.weight.detach().clone() for it in tr.items]
    g = torch.Generator().manual_seed(0)
    x, y = _batch(g)
    opt.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    dense = [it.weight.grad.clone() for it in tr.items]  # all active: the hook's mask is 1
    opt.step()
    tr.step()
    for s0, s1, th, d in zip(before, tr.policy.scores, thetas, dense):
        want = s0 - 0.05 * (lpcore.ste_mask_grad(d.numpy().astype(np.float64), th.numpy()) + 0.3)
        np.testing.assert_allclose(s1, want, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("lp", [False, True])
def test_scl_lands_on_the_target_with_masked_zeros(lp):
    net, opt, tr = _setup("scl", lp=lp, end=60)
    hist = []
    _steps(net, opt, tr, 80, after=lambda t: hist.append(tr.sparsity))
    assert tr.sparsity == pytest.approx(0.8, abs=0.02)
    assert hist[60:] == [hist[60]] * len(hist[60:])  # fixed after `end`
    for it in tr.items:
        m = it.mask.numpy()
        w = it.weight.detach().numpy()
        assert np.all(w[~m] == 0) and it.gate is None
        if lp:
            live = m.any(axis=1)
            np.testing.assert_allclose(norm_ref(w[live], 1.3, 1), 1.0, rtol=1e-5)


def test_scl_inactive_connections_keep_theta_and_can_come_back():
    net, opt, tr = _setup("scl", end=200, mask_lr=0.05)
    prev = {}
    revived = []

    def watch(t):
        now = ([it.mask.numpy().copy() for it in tr.items], [it.theta.clone() for it in tr.items])
        if prev:
            for a, b, t0, t1 in zip(prev["m"], now[0], prev["th"], now[1]):
                off = torch.from_numpy(~a)
                # a step in which a connection is inactive leaves its theta alone
                assert torch.equal(t0[off], t1[off]), t
                revived.append(int((~a & b).sum()))
        prev["m"], prev["th"] = now
    _steps(net, opt, tr, 80, after=watch)
    assert sum(revived) > 0  # the dense score gradient brings connections back


def test_the_forward_pass_computes_with_theta_times_gate():
    net, opt, tr = _setup("concave", end=40, lam=0.02, mask_lr=2.0)
    _steps(net, opt, tr, 20)
    for it in tr.items:
        assert it.gate is not None and float(it.gate.min()) < 1.0
        torch.testing.assert_close(it.weight.detach(), it.theta * it.gate, rtol=0, atol=0)
        assert torch.all(it.weight[~it.mask] == 0)


def test_concave_searches_thresholds_exactly_rewinds_and_trains_the_ticket():
    net, opt, tr = _setup("concave", end=40, begin=3)
    names = {id(q): n for n, q in net.named_parameters()}
    snap = {}

    def check(t):
        if t == 3:
            snap.update({n: q.detach().clone() for n, q in net.named_parameters()})
            for it in tr.items:  # the ticket rewinds to theta, not theta * m
                snap[names[id(it.weight)]] = it.theta.clone()
        if t == 40:
            masks = {f"{it.name}.weight": it.mask for it in tr.items}
            for n, q in net.named_parameters():
                want = snap[n] * masks[n] if n in masks else snap[n]
                assert torch.equal(q.detach(), want), n
            assert not opt.state
            assert all(it.gate is None and it.theta is None for it in tr.items)
    _steps(net, opt, tr, 60, after=check)
    total = sum(it.weight.numel() for it in tr.items)
    assert tr.sparsity == pytest.approx(0.8, abs=0.5 / total)
    assert tr.weight_sparsity() >= tr.sparsity


def test_scl_on_lpsgd_resumes_identically(tmp_path):
    assert_resumes_identically(lambda seed: _setup("scl", end=40, lp=True, seed=seed), _steps,
                               tmp_path)


def _ddp_body(rank, out_dir, method="scl"):
    net, opt, tr = _setup(method, end=30)
    ddp = nn.parallel.DistributedDataParallel(net)
    # different data per replica
    train_steps(ddp, opt, tr, 35, seed=100 + rank, batch=_batch)
    torch.save({k: v.clone() for k, v in net.state_dict().items()},
               os.path.join(out_dir, f"r{rank}.pt"))


def _ddp_concave(rank, out_dir):
    _ddp_body(rank, out_dir, "concave")


@pytest.mark.parametrize("body", [_ddp_body, _ddp_concave], ids=["scl", "concave"])
def test_ddp_learned_masks_identical(body, tmp_path):
    run_on_two_ranks(body, tmp_path)
    a = torch.load(tmp_path / "r0.pt")
    b = torch.load(tmp_path / "r1.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert any(k.endswith("weight_mask") and not a[k].all() for k in a)


def test_trainer_refuses_options_a_method_does_not_take():
    net = _net()
    sgd = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="mask_lr"):
        lpcore_torch.SparseTrainer(net, sgd, method="set", mask_lr=0.1)
    with pytest.raises(ValueError, match="penalty"):
        lpcore_torch.SparseTrainer(net, sgd, method="concave", penalty="l0")
    assert not any(k.endswith("weight_mask") for k in net.state_dict())


@pytest.mark.parametrize("method, want, tol", [("scl", 0.9, 0.02), ("concave", 0.9, 0.01)])
def test_cli_learned_methods_on_digits_reach_the_target(method, want, tol, tmp_path):
    out = tmp_path / "run"
    assert cli.main(["--dataset", "digits", "--method", method, "--epochs", "8",
                     "--target-sparsity", str(want), "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["sparsity"] == pytest.approx(want, abs=tol)
    assert len(m["history"]) == (16 if method == "concave" else 8)
    assert m["test_accuracy"] > 0.8


@pytest.mark.parametrize("bad", [["--method", "set", "--mask-lr", "0.1"],
                                 ["--method", "scl", "--penalty", "l1"],
                                 ["--method", "concave", "--lam", "auto"],
                                 ["--method", "scl", "--lam", "x"],
                                 ["--method", "scl", "--mask-lr", "-1"]])
def test_cli_refuses_learned_options_where_they_do_not_apply(bad, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(bad + ["--out", str(tmp_path / "r"), "--quiet"])
    assert e.value.code == 2


def test_a_one_step_training_is_refused_not_left_dense(tmp_path, capsys):
    """--method scl --dataset breast_cancer --epochs 1 --batch-size 1000 ran
    one step and ended dense (sparsity 0, target 0.9) with exit 0."""
    with pytest.raises(SystemExit) as e:
        cli.main(["--method", "scl", "--dataset", "breast_cancer", "--epochs", "1",
                  "--batch-size", "1000", "--quiet", "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    assert "at least 2 steps" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
