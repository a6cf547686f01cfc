"""The PyTorch binding: zero-copy exchange, the optimizer, layer selection, DDP."""
import copy
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import lpcore  # noqa: E402
import lpcore_torch  # noqa: E402
from ddp import run_on_two_ranks  # noqa: E402
from naive import norm_ref  # noqa: E402


def _mlp(seed=0, d_in=64, h=32, out=10):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(),
                         nn.Linear(h, out))


def _on_sphere(t, p, view, axis):
    a = t.detach().double().numpy().reshape(view)
    kept = [i for i in range(a.ndim) if i not in axis]
    rows = np.moveaxis(a, kept, list(range(len(kept)))).reshape(
        int(np.prod([a.shape[i] for i in kept])), -1)
    n = norm_ref(rows, p, 1)
    live = n > 0
    rtol = {torch.float64: 1e-12, torch.float32: 1e-5}.get(t.dtype, 2e-2)  # bf16/fp16 storage
    np.testing.assert_allclose(n[live], 1.0, rtol=rtol)


def test_zero_copy_views():
    t = torch.randn(5, 7)
    a = lpcore_torch.to_numpy(t)
    assert a.__array_interface__["data"][0] == t.data_ptr()
    a[2, 3] = 42.0
    assert t[2, 3].item() == 42.0
    tr = torch.randn(4, 3, requires_grad=True)
    assert lpcore_torch.to_numpy(tr).__array_interface__["data"][0] == tr.data_ptr()
    for bad, err in [(torch.randn(3, 3).to_sparse(), TypeError),
                     (torch.randn(3, dtype=torch.complex64), TypeError),
                     (torch.arange(3), TypeError),
                     (torch.randn(3, dtype=torch.float16), TypeError)]:
        with pytest.raises(err):
            lpcore_torch.to_numpy(bad)


def test_tensors_on_other_devices_are_refused_by_name():
    net = torch.nn.Linear(4, 3, device="meta")
    with pytest.raises(NotImplementedError, match="on meta; lpcore runs on CPU and CUDA"):
        lpcore_torch.LpSGD(lpcore_torch.lp_param_groups(net, p=1.5, include_classifier=True),
                           lr=0.1)
    with pytest.raises(NotImplementedError, match="on meta"):
        lpcore_torch.to_numpy(torch.empty(2, device="meta"))


def test_parameters_updated_in_place_and_equal_core_step():
    net = _mlp()
    ref = copy.deepcopy(net)
    groups = lpcore_torch.lp_param_groups(net, p=1.3)
    ptrs = {id(q): q.data_ptr() for q in net.parameters()}
    opt = lpcore_torch.LpSGD(groups, lr=0.1, momentum=0.9, weight_decay=1e-4)
    # the core on the same data
    core = lpcore.LpSGD(1.3, 0.1, momentum=0.9, weight_decay=1e-4)
    ws = [ref[0].weight.detach().numpy(), ref[2].weight.detach().numpy()]
    states = [core.init(w, axis=1) for w in ws]
    x = torch.randn(16, 64)
    for _ in range(4):
        opt.zero_grad()
        net(x).square().mean().backward()
        g_core = [net[0].weight.grad.numpy().copy(), net[2].weight.grad.numpy().copy()]
        opt.step()
        for w, g, s in zip(ws, g_core, states):
            core.step(w, g, s)
        np.testing.assert_array_equal(net[0].weight.detach().numpy(), ws[0])
        np.testing.assert_array_equal(net[2].weight.detach().numpy(), ws[1])
    assert all(q.data_ptr() == ptrs[id(q)] for q in net.parameters())


@pytest.mark.parametrize("kw", [dict(), dict(momentum=0.9), dict(momentum=0.9, nesterov=True),
                                dict(momentum=0.5, dampening=0.3, weight_decay=1e-2)])
def test_plain_groups_bit_identical_to_torch_sgd(kw):
    a, b = _mlp(1), _mlp(1)
    oa = lpcore_torch.LpSGD(a.parameters(), lr=0.05, p=None, **kw)
    ob = torch.optim.SGD(b.parameters(), lr=0.05, **kw)
    x = torch.randn(8, 64)
    for _ in range(5):
        for net, opt in ((a, oa), (b, ob)):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    for qa, qb in zip(a.parameters(), b.parameters()):
        assert torch.equal(qa, qb)


def test_riemannian_p2_equals_geoopt_sphere():
    geoopt = pytest.importorskip("geoopt")
    torch.manual_seed(0)
    w0 = torch.randn(6, 9, dtype=torch.float64)
    w0 = w0 / w0.norm(dim=1, keepdim=True)
    a = nn.Parameter(w0.clone())
    b = geoopt.ManifoldParameter(w0.clone(), manifold=geoopt.Sphere())
    oa = lpcore_torch.LpSGD([a], lr=0.1, p=2.0, variant="riemannian")
    ob = geoopt.optim.RiemannianSGD([b], lr=0.1)
    target = torch.randn(6, 9, dtype=torch.float64)
    for _ in range(10):
        for q, opt in ((a, oa), (b, ob)):
            opt.zero_grad()
            ((q - target) ** 2).sum().backward()
            opt.step()
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-12, atol=1e-14)


def _digits():
    sklearn = pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    return torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y), sklearn


def _train_digits(p, steps=150, seed=0):
    X, y, _ = _digits()
    net = _mlp(seed, d_in=64, h=64, out=10)
    groups = lpcore_torch.lp_param_groups(net, p=p)
    opt = lpcore_torch.LpSGD(groups, lr=0.05, momentum=0.9)
    losses = []
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(X), (128,), generator=g)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(X[idx]), y[idx])
        loss.backward()
        opt.step()
        losses.append(loss.item())
        for grp in groups[:-1]:
            for q, (view, axis) in zip(grp["params"], grp["fan_in"]):
                _on_sphere(q, p, view, axis)
    acc = (net(X).argmax(1) == y).float().mean().item()
    return net, losses, acc


def test_mlp_on_digits_trains_and_p_controls_sparsity():
    net11, l11, acc11 = _train_digits(1.1)
    net2, l2, acc2 = _train_digits(2.0)
    assert np.mean(l11[-20:]) < 0.5 * np.mean(l11[:5])
    assert np.mean(l2[-20:]) < 0.5 * np.mean(l2[:5])
    assert acc11 > 0.8 and acc2 > 0.8
    h11 = lpcore_torch.hoyer_report(net11)
    h2 = lpcore_torch.hoyer_report(net2)
    # the constrained hidden layers are sparser at p = 1.1
    for r11, r2 in zip(h11[:2], h2[:2]):
        assert r11["hoyer"] > r2["hoyer"] + 0.05, (r11, r2)
    assert "network" in str(h11)


def test_state_dict_resume_is_bit_identical(tmp_path):
    x = torch.randn(16, 64)

    def run(net, opt, n):
        for _ in range(n):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()

    a = _mlp(3)
    oa = lpcore_torch.LpSGD(lpcore_torch.lp_param_groups(a, p=1.2), lr=0.1, momentum=0.9,
                            nesterov=True, lr_decay=0.1)
    run(a, oa, 3)
    torch.save({"model": a.state_dict(), "opt": oa.state_dict()}, tmp_path / "ck.pt")
    run(a, oa, 4)
    b = _mlp(99)
    ob = lpcore_torch.LpSGD(lpcore_torch.lp_param_groups(b, p=1.2), lr=0.1, momentum=0.9,
                            nesterov=True, lr_decay=0.1)
    ck = torch.load(tmp_path / "ck.pt")
    b.load_state_dict(ck["model"])
    ob.load_state_dict(ck["opt"])
    run(b, ob, 4)
    for qa, qb in zip(a.parameters(), b.parameters()):
        assert torch.equal(qa, qb)


def test_lr_scheduler_and_closure():
    net = _mlp()
    opt = lpcore_torch.LpSGD(lpcore_torch.lp_param_groups(net, p=1.5), lr=0.2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x = torch.randn(8, 64)

    def closure():
        opt.zero_grad()
        loss = net(x).square().mean()
        loss.backward()
        return loss

    l0 = opt.step(closure)
    assert isinstance(l0, torch.Tensor)
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    opt.step(closure)


@pytest.mark.parametrize("one_call", [True, False], ids=["one-call-check", "per-tensor-check"])
def test_nonfinite_gradient_leaves_every_parameter_unchanged(one_call, monkeypatch):
    if not one_call:  # the plain gradients' check without torch's private found-inf op
        monkeypatch.delattr(torch, "_amp_foreach_non_finite_check_and_unscale_")
    net = _mlp()
    opt = lpcore_torch.LpSGD(lpcore_torch.lp_param_groups(net, p=1.3), lr=0.1, momentum=0.9)
    x = torch.randn(8, 64)
    opt.zero_grad()
    net(x).square().mean().backward()
    opt.step()
    before = [q.detach().clone() for q in net.parameters()]
    opt.zero_grad()
    net(x).square().mean().backward()
    net[2].weight.grad[3, 5] = float("nan")  # the second constrained layer
    with pytest.raises(ValueError, match=r"2\.weight.*grad contains NaN or Inf in group \(3,\)"):
        opt.step()
    for q, b in zip(net.parameters(), before):
        assert torch.equal(q, b)
    net[2].weight.grad[3, 5] = 0.0
    net[4].bias.grad[0] = float("inf")  # an unconstrained parameter
    with pytest.raises(ValueError, match="4.bias"):
        opt.step()
    for q, b in zip(net.parameters(), before):
        assert torch.equal(q, b)


def test_lp_param_groups_selection_and_layouts():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.ConvTranspose2d(8, 6, 2, groups=2), nn.Flatten(),
                        nn.Linear(6 * 7 * 7, 1), nn.Linear(1, 5), nn.Linear(5, 4))
    groups = lpcore_torch.lp_param_groups(net, p=[1.2, 1.4, 1.5])
    names = [n for g in groups[:-1] for n in g["names"]]
    # the final classifier (7) and the fan-in-1 layer (6) are not constrained
    assert names == ["0.weight", "3.weight", "5.weight"]
    assert [g["p"] for g in groups] == [1.2, 1.4, 1.5, None]
    plain = groups[-1]["names"]
    assert "1.weight" in plain and "0.bias" in plain and "7.weight" in plain and "6.weight" in plain
    with pytest.raises(ValueError, match="3 constrained layers"):
        lpcore_torch.lp_param_groups(net, p=[1.2, 1.4])
    g2 = lpcore_torch.lp_param_groups(net, p=lambda n, m: 1.3 if isinstance(m, nn.Conv2d) else None)
    assert [g["names"] for g in g2[:-1]] == [["0.weight"]]
    assert lpcore_torch.lp_param_groups(net, p=1.3, exclude=["3"])[0]["names"] == ["0.weight", "5.weight"]
    # ConvTranspose (in, out/groups, kh, kw) with groups=2: each output channel's fan-in
    # is weight[g*4:(g+1)*4, o] - after construction exactly those have unit norm
    opt = lpcore_torch.LpSGD(groups, lr=0.1)
    w = net[3].weight.detach().numpy()  # (8, 3, 2, 2)
    for gi in range(2):
        for o in range(3):
            assert norm_ref(w[gi * 4:(gi + 1) * 4, o], 1.4) == pytest.approx(1.0, rel=1e-5)
    assert norm_ref(w[0], 1.4) != pytest.approx(1.0, rel=1e-3)
    assert opt.param_groups[1]["fan_in"][0] == ((2, 4, 3, 2, 2), (1, 3, 4))


def test_half_precision_parameter():
    lin = nn.Linear(16, 8).to(torch.bfloat16)
    opt = lpcore_torch.LpSGD([{"params": [lin.weight], "p": 1.5}], lr=0.1, momentum=0.9)
    _on_sphere(lin.weight, 1.5, (8, 16), (1,))
    lin.weight.grad = torch.randn(8, 16).to(torch.bfloat16)
    opt.step()
    assert lin.weight.dtype == torch.bfloat16
    assert opt.state[lin.weight]["momentum_buffer"].dtype == torch.float32
    a = lin.weight.detach().double().numpy()
    np.testing.assert_allclose(norm_ref(a, 1.5, 1), 1.0, rtol=2e-2)


def test_bad_arguments():
    net = _mlp()
    with pytest.raises(ValueError, match="p"):
        lpcore_torch.LpSGD(lpcore_torch.lp_param_groups(net, p=0.5), lr=0.1)
    with pytest.raises(TypeError, match="model"):
        lpcore_torch.lp_param_groups([1, 2], p=1.3)
    with pytest.raises(TypeError, match="complex"):
        lpcore_torch.LpSGD([nn.Parameter(torch.randn(3, 3, dtype=torch.complex64))], lr=0.1)


def _ddp_body(rank, out_dir):
    torch.manual_seed(0)
    net = _mlp(0)
    ddp = nn.parallel.DistributedDataParallel(net)
    opt = lpcore_torch.LpSGD(lpcore_torch.lp_param_groups(net, p=1.3), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(100 + rank)  # different data per replica
    for _ in range(5):
        x = torch.randn(8, 64, generator=g)
        opt.zero_grad()
        ddp(x).square().mean().backward()
        opt.step()
    torch.save([q.detach() for q in net.parameters()], os.path.join(out_dir, f"r{rank}.pt"))


def test_ddp_replicas_stay_identical(tmp_path):
    run_on_two_ranks(_ddp_body, tmp_path)
    a = torch.load(tmp_path / "r0.pt")
    b = torch.load(tmp_path / "r1.pt")
    for qa, qb in zip(a, b):
        assert torch.equal(qa, qb)
    # and the replicas did move
    assert not torch.equal(a[0], _mlp(0)[0].weight.detach())


def test_reset_state_by_mask_equals_reset_by_index():
    """LpSGD.reset_state takes a boolean tensor of the weight's shape (the GPU
    trainer's form, no read-back) with the same effect as the flat indices, through
    the weight -> state positions of a conv weight."""
    opts = []
    for _ in range(2):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(4, 3, 2, 1))
        b = torch.nn.Parameter(torch.randn(6))
        opt = lpcore_torch.LpSGD([{"params": [w], "p": 1.3}, {"params": [b], "p": None}],
                                 lr=0.1, momentum=0.9)
        w.grad, b.grad = torch.ones(4, 3, 2, 1), torch.ones(6)
        opt.step()
        opts.append((opt, w, b))
    m = torch.rand(4, 3, 2, 1, generator=torch.Generator().manual_seed(3)) > 0.6
    (o1, w1, b1), (o2, w2, b2) = opts
    o1.reset_state(w1, np.flatnonzero(m.numpy().reshape(-1)), dual=True)
    o2.reset_state(w2, m, dual=True)
    o1.reset_state(b1, [1, 4])
    o2.reset_state(b2, torch.tensor([False, True, False, False, True, False]))
    for k in ("dual", "momentum_buffer"):
        assert torch.equal(o1.state[w1][k], o2.state[w2][k])
        assert 0 < int((o2.state[w2][k] == 0).sum()) == int(m.sum())
    assert torch.equal(o1.state[b1]["momentum_buffer"], o2.state[b2]["momentum_buffer"])
    latent = o2.latent(w2)
    assert isinstance(latent, np.ndarray) and latent.shape == (4, 3, 2, 1)
    assert np.all(latent[m.numpy()] == 0) and np.all(latent[~m.numpy()] != 0)
