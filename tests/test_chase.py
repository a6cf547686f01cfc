"""Chase (channel removal by unmasked mean magnitude) and lpcore_torch.compact."""
import json

import numpy as np
import pytest

import lpcore
from lpcore.methods import Layer


def _umm_ref(w, m):
    rows = (np.abs(w) * m).reshape(w.shape[0], -1)
    return rows.mean(axis=1)


def test_unmasked_mean_magnitude_and_channel_sparsity_match_a_plain_loop():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 3, 2, 2))
    m = rng.random(w.shape) < 0.4
    m[2] = False
    before = w.copy()
    np.testing.assert_allclose(lpcore.unmasked_mean_magnitude(w, m), _umm_ref(w, m))
    np.testing.assert_array_equal(w, before)
    dead = int((~m.reshape(5, -1).any(axis=1)).sum())
    assert dead >= 1
    assert lpcore.channel_sparsity([m, np.ones((4, 6), bool)]) == pytest.approx(dead / 9)
    # another fan-in axis: channels along axis 1 (a transposed layout)
    np.testing.assert_allclose(lpcore.unmasked_mean_magnitude(w, m, axis=(0, 2, 3)),
                               _umm_ref(np.moveaxis(w, 1, 0), np.moveaxis(m, 1, 0)))
    with pytest.raises(ValueError, match="mask has shape"):
        lpcore.unmasked_mean_magnitude(w, m[:2])
    with pytest.raises(ValueError, match="axes has 1 entries for 2 masks"):
        lpcore.channel_sparsity([m, m], axes=[None])


def _drive(method, steps, shapes=((16, 12), (8, 16)), seed=0):
    rng = np.random.default_rng(seed)
    masks = method.init_masks(shapes)
    ws = [rng.standard_normal(s) for s in shapes]
    hist = []
    for t in range(steps):
        if method.due(t):
            layers = [Layer(mask=m, weight=np.where(m, w, 0.0), grad=rng.standard_normal(m.shape),
                            axis=(1,)) for m, w in zip(masks, ws)]
            for i, (new, grown) in enumerate(method.update(t, layers)):
                dead_before = ~masks[i].any(axis=1)
                assert not new[dead_before].any()  # a removed channel never regrows
                assert new.reshape(-1)[grown].all()
                masks[i] = new
        if method.finalizes(t):
            masks = [d[0] if d is not None else m for d, m in
                     zip(method.adjust([Layer(mask=m, weight=np.where(m, w, 0.0), axis=(1,))
                                        for m, w in zip(masks, ws)]), masks)]
        hist.append([m.copy() for m in masks])
    return hist


def test_chase_removes_channels_on_its_schedule_at_the_same_budget():
    m = lpcore.make_method("chase", target_sparsity=0.7, begin=0, end=30, frequency=3,
                           channel_sparsity=0.25, seed=2)
    hist = _drive(m, 31)
    for t, masks in enumerate(hist):
        total = sum(x.size for x in masks)
        assert lpcore.mask_sparsity(masks) == pytest.approx(0.7, abs=1.5 / total)  # the budget
        if m.due(t):
            for x in masks:
                dead = int((~x.any(axis=1)).sum())
                assert dead >= int(round(m.channel_fraction(t) * x.shape[0]))
    assert lpcore.channel_sparsity(hist[-1]) >= 0.25
    assert all((~x.any(axis=1)).sum() < x.shape[0] for x in hist[-1])  # never all


def test_chase_removes_the_channels_with_the_smallest_umm():
    m = lpcore.make_method("chase", target_sparsity=0.5, begin=0, end=10, frequency=10,
                           channel_sparsity=0.25, h0=0.0)
    mask = np.ones((4, 6), bool)
    mask[:, 3:] = False  # 50%
    w = np.array([[5.0] * 6, [0.1] * 6, [3.0] * 6, [2.0] * 6])
    new, _ = m.update(10, [Layer(mask=mask, weight=np.where(mask, w, 0.0),
                                 grad=np.ones((4, 6)), axis=(1,))])[0]
    assert not new[1].any() and new[[0, 2, 3]].any(axis=1).all()
    assert int(new.sum()) == int(mask.sum())  # the freed connections regrew elsewhere


torch = pytest.importorskip("torch")
nn = torch.nn
import lpcore_torch  # noqa: E402
from lpcore_torch import cli  # noqa: E402


def _kill(layer, rows):
    with torch.no_grad():
        layer.weight[rows] = 0
        if layer.bias is not None:
            layer.bias[rows] = 0


@pytest.mark.parametrize("kind", ["mlp", "cnn2d", "cnn1d", "bn"])
def test_compact_gives_identical_outputs_with_fewer_parameters(kind):
    torch.manual_seed(0)
    if kind == "mlp":
        net = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Dropout(0.0),
                            nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
        x = torch.randn(7, 12)
        _kill(net[1], [0, 5, 6])
        _kill(net[4], [2])
    elif kind == "cnn2d":
        net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Flatten(), nn.Linear(8 * 2 * 2, 10), nn.ReLU(), nn.Linear(10, 4))
        x = torch.randn(5, 1, 8, 8)
        _kill(net[0], [1, 4])
        _kill(net[3], [0, 3, 7])
        _kill(net[7], [9])
    elif kind == "cnn1d":
        net = nn.Sequential(nn.Conv1d(1, 5, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
                            nn.Flatten(), nn.Linear(5 * 6, 3))
        x = torch.randn(4, 1, 12)
        _kill(net[0], [2])
    else:  # BatchNorm between: a channel whose shift survives the ReLU stays
        net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4),
                            nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))
        with torch.no_grad():
            net[1].running_mean.copy_(torch.tensor([0.5, -0.2, 0.3, 0.0]))
            net[1].bias.copy_(torch.tensor([0.1, -0.5, 0.5, 0.0]))
        x = torch.randn(3, 2, 5, 5)
        _kill(net[0], [0, 1, 2])  # ReLU(BN(0)): 0.1 - 0.5, -0.5 + 0.2 -> 0 (removed); 0.5 - 0.3 > 0
        net.eval()
    small = lpcore_torch.compact(net).eval()
    net.eval()
    torch.testing.assert_close(small(x), net(x), rtol=1e-5, atol=1e-6)
    n_small = sum(p.numel() for p in small.parameters())
    n_full = sum(p.numel() for p in net.parameters())
    assert n_small < n_full
    if kind == "bn":
        assert small[0].out_channels == 2 and small[1].num_features == 2  # channel 2 kept
    for p in net.parameters():
        assert p.requires_grad  # the original is untouched
    with pytest.raises(TypeError, match="nn.Sequential"):
        lpcore_torch.compact(nn.Linear(3, 2))


def test_cli_chase_cnn_removes_channels_at_the_target(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["--dataset", "digits", "--model", "cnn", "--method", "chase", "--epochs", "2",
                     "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["sparsity"] == pytest.approx(0.9, abs=0.01)
    assert m["channel_sparsity"] > 0.25
    c = m["compact"]
    assert c["params_compact"] < c["params_masked_model"]
    assert c["max_output_difference"] < 1e-4
    for layer in m["layers"]:
        assert np.isfinite(layer["weighted_spectral_gap"])


def test_an_infeasible_channel_sparsity_is_refused_up_front(tmp_path, capsys):
    """--channel-sparsity 0.999 at target 0.9 used to end at channel sparsity
    0.529 with exit 0 (the exact adjustment regrew removed channels)."""
    with pytest.raises(ValueError, match="channel_sparsity=0.999"):
        lpcore.make_method("chase", target_sparsity=0.9, channel_sparsity=0.999).init_masks(
            [(64, 32), (32, 64)])
    with pytest.raises(SystemExit) as e:
        cli.main(["--method", "chase", "--channel-sparsity", "0.999", "--quiet",
                  "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and "channel_sparsity=0.999" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_the_exact_adjustment_never_grows_a_removed_channel():
    rng = np.random.default_rng(0)
    m = lpcore.make_method("chase", target_sparsity=0.5, channel_sparsity=0.4, end=10)
    mask = rng.random((10, 8)) < 0.3  # sparser than the target: the adjustment grows
    mask[:4] = False                  # four removed channels
    layer = lpcore.methods.Layer(mask=mask, weight=rng.standard_normal((10, 8)) * mask,
                                 grad=rng.standard_normal((10, 8)), axis=(1,))
    (new, grown), = m.adjust([layer])
    assert not new[:4].any()                           # removed channels stay removed
    assert int((~new).sum()) == 40                     # the target, exactly, among the rest
    assert set(grown.tolist()) == set(np.flatnonzero(new.reshape(-1) & ~mask.reshape(-1)))


def test_a_non_finite_weight_is_named_with_its_channel():
    w = np.ones((3, 2, 5))
    w[2, 1, 3] = np.inf
    with pytest.raises(ValueError, match=r"active weights in group \(1,\)"):
        lpcore.unmasked_mean_magnitude(w, np.ones(w.shape, bool), axis=(0, 2))
    m = lpcore.make_method("chase", target_sparsity=0.5, channel_sparsity=0.5, begin=0, end=4,
                           frequency=1)
    w2 = np.ones((4, 6))
    w2[3, 2] = np.nan
    layer = lpcore.methods.Layer(mask=np.ones((4, 6), bool), weight=w2, axis=(1,))
    with pytest.raises(ValueError, match=r"layer 0's weights contain NaN or Inf .* group \(3,\)"):
        m.update(4, [layer])
