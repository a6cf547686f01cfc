"""The sparse-training methods of lpcore.methods: host-only policy, no torch."""
import numpy as np
import pytest

import lpcore
from lpcore.methods import METHODS, Layer, Method


def _layers(masks, rng, latent=False):
    return [Layer(mask=m, weight=np.where(m, rng.standard_normal(m.shape), 0.0),
                  latent=rng.standard_normal(m.shape) if latent else None,
                  grad=rng.standard_normal(m.shape), axis=(1,)) for m in masks]


def _learn_layers(masks, rng):
    """A learned method's step input: the dense gradient and theta (latent)."""
    return [Layer(mask=m, weight=np.where(m, th, 0.0), latent=th,
                  grad=0.1 * rng.standard_normal(m.shape), axis=(1,))
            for m, th in ((m, rng.standard_normal(m.shape)) for m in masks)]


def _run(method, steps, seed=0):
    """Drive a method the way a binding does; returns its mask history."""
    rng = np.random.default_rng(seed)
    masks = method.init_masks([(8, 12), (6, 8)])
    hist = []
    for t in range(steps):
        if method.learns and method.learning(t):
            gates = method.learn(t, _learn_layers(masks, rng))
            for i, g in enumerate(gates):
                assert g.shape == masks[i].shape and np.all((g >= 0) & (g <= 1))
                masks[i] = g != 0
        if method.due(t):
            for i, d in enumerate(method.update(t, _layers(masks, rng, method.uses_latent))):
                if d is not None:
                    new, grown = d
                    assert new.dtype == np.bool_ and new.shape == masks[i].shape
                    assert np.all(new.reshape(-1)[grown])  # grown ones are active
                    masks[i] = new
        if method.finalizes(t):
            for i, d in enumerate(method.adjust(_layers(masks, rng))):
                if d is not None:
                    masks[i] = d[0]
        hist.append([m.copy() for m in masks])
    return hist


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_starts_at_its_sparsity_and_ends_at_the_target(name):
    sched = dict(begin=1, end=18, frequency=6) if name == "imp" else \
        dict(begin=2, end=20, frequency=3)
    m = lpcore.make_method(name, target_sparsity=0.75, init_sparsity=0.25, finalize="exact",
                           seed=1, **sched)
    start = m.init_masks([(8, 12), (6, 8)])
    assert lpcore.mask_sparsity(start) == pytest.approx(m.start_sparsity(), abs=0.01)
    hist = _run(m, 25, seed=1)
    assert lpcore.mask_sparsity(hist[-1]) == pytest.approx(0.75, abs=1 / 144)
    after_end = hist[m.end:]
    assert all(all(np.array_equal(a, b) for a, b in zip(h, after_end[0])) for h in after_end)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_restored_state_repeats_the_decisions(name):
    """state_dict/load_state_dict carry the RNG and the controller: a method
    restored mid-run makes the same decisions as the one that went on."""
    kw = dict(target_sparsity=0.8, begin=0, end=30, frequency=2, seed=3)
    a = lpcore.make_method(name, **kw)
    _run(a, 10)
    b = lpcore.make_method(name, **{**kw, "seed": 99})
    b.load_state_dict(a.state_dict())
    rng = np.random.default_rng(5)
    masks = [rng.random((8, 12)) < 0.5, rng.random((6, 8)) < 0.5]
    if a.learns:  # the scores are arrays: array_state travels next to state_dict
        b.load_array_state(a.array_state())
        ga = a.learn(12, _learn_layers(masks, np.random.default_rng(7)))
        gb = b.learn(12, _learn_layers(masks, np.random.default_rng(7)))
        for x, y in zip(ga, gb):
            np.testing.assert_array_equal(x, y)
        return
    la = _layers(masks, np.random.default_rng(7), a.uses_latent)
    lb = _layers(masks, np.random.default_rng(7), b.uses_latent)
    for da, db in zip(a.update(12, la), b.update(12, lb)):
        assert (da is None) == (db is None)
        if da is not None:
            np.testing.assert_array_equal(da[0], db[0])
            np.testing.assert_array_equal(da[1], db[1])


def test_methods_refuse_bad_options_naming_them():
    for kw, match in [(dict(target_sparsity=1.0), "target_sparsity"),
                      (dict(frequency=0), "frequency"),
                      (dict(begin=5, end=5), "begin < end"), (dict(h0=float("nan")), "h0"),
                      (dict(controller="pid"), "controller"), (dict(pruning="soft"), "pruning"),
                      (dict(finalize="round"), "finalize"), (dict(h_schedule="linear"), "kind")]:
        with pytest.raises(ValueError, match=match):
            lpcore.make_method("set", **kw)
    with pytest.raises(ValueError, match="one of"):
        lpcore.make_method("foo")


def test_a_new_method_is_one_class_and_one_table_entry(monkeypatch):
    class DropOnePerRow(Method):
        """Drops the smallest active |w| of each row once per update."""
        name = "drop-one"

        def start_sparsity(self):
            return 0.0

        def update(self, t, layers):
            out = []
            for ly in layers:
                new = ly.mask.copy()
                for i in range(new.shape[0]):
                    act = np.flatnonzero(new[i])
                    if act.size > 1:
                        new[i, act[np.argmin(np.abs(ly.weight[i, act]))]] = False
                out.append((new, np.zeros(0, np.intp)))
            return out

    monkeypatch.setitem(METHODS, "drop-one", DropOnePerRow)
    m = lpcore.make_method("drop-one", target_sparsity=0.5, begin=0, end=4, frequency=1,
                           finalize="none")
    hist = _run(m, 3)
    assert [int((~h[0]).sum()) for h in hist] == [0, 8, 16]  # one per row of 8 per update


def test_imp_prunes_the_same_fraction_of_the_remaining_weights_each_round():
    m = lpcore.make_method("imp", target_sparsity=0.875, begin=3, end=30, frequency=10)
    assert m.rounds == 3 and m.rewind_step == 3
    assert [m.round_sparsity(r) for r in (1, 2, 3)] == pytest.approx([0.5, 0.75, 0.875])
    assert [t for t in range(40) if m.due(t)] == [10, 20, 30]
    assert all(m.rewinds(t) == m.due(t) for t in range(40))
    rng = np.random.default_rng(0)
    w = [rng.standard_normal((8, 8)), rng.standard_normal((4, 16))]
    masks = m.init_masks([x.shape for x in w])
    for t in (10, 20, 30):
        for i, d in enumerate(m.update(t, [Layer(mask=k, weight=x * k) for k, x in zip(masks, w)])):
            if d is not None:
                assert not np.any(d[0] & ~masks[i])  # nothing regrows
                masks[i] = d[0]
        assert lpcore.mask_sparsity(masks) == m.round_sparsity(t // 10)
    # global magnitude: what survives is the largest |w| over both layers
    kept = np.concatenate([np.abs(x)[k] for x, k in zip(w, masks)])
    dropped = np.concatenate([np.abs(x)[~k] for x, k in zip(w, masks)])
    assert kept.min() >= dropped.max()
    for bad, match in [(dict(end=25), "multiple"), (dict(begin=10), "first round")]:
        with pytest.raises(ValueError, match=match):
            lpcore.make_method("imp", **{**dict(begin=3, end=30, frequency=10), **bad})


def test_reference_p_is_the_references_per_depth_table_interpolated_between_targets():
    from lpcore.methods.lpss import reference_p
    assert reference_p(0.9, 6) == [1.2] * 4 + [1.07] * 2
    assert reference_p(0.8, 5) == [1.3] * 4 + [1.15]
    assert reference_p(0.5, 2) == [1.4, 1.4]
    assert reference_p(0.3, 5) == reference_p(0.5, 5) and reference_p(0.99, 5) == reference_p(0.9, 5)
    assert reference_p(0.85, 5) == pytest.approx([1.25] * 4 + [1.11])
    for bad in ((1.0, 2), (0.9, -1), (0.9, 2.5)):
        with pytest.raises(ValueError, match="reference_p"):
            reference_p(*bad)


def test_reference_lr_factor_warms_up_over_a_sixth_then_decays_towards_zero():
    from lpcore.methods.lpss import reference_lr_factor
    f = [reference_lr_factor(t, 600) for t in range(600)]
    assert all(0 < x <= 1 for x in f)
    assert f[99] == 1.0 and np.all(np.diff(f[:100]) > 0) and np.all(np.diff(f[100:]) < 0)
    assert f[-1] == pytest.approx(1 / 501)
    with pytest.raises(ValueError, match="step"):
        reference_lr_factor(600, 600)


def test_reference_settings_never_revive_and_aim_the_grow_ratio_at_the_final_target():
    """The reference's LpSS (DESIGN section 5): a latent value above the threshold
    does not come back; only gradient-ranked regrowth activates connections, and
    phi = (1 -+ delta) s/s* with s over all parameters and s* the final target."""
    from lpcore.methods.lpss import REFERENCE
    opts = {k: REFERENCE[k] for k in ("revive", "pruning", "controller", "h_schedule",
                                      "adapt_h", "finalize", "init_sparsity", "delta")}
    m = lpcore.make_method("lpss", target_sparsity=0.8, begin=10, end=100, frequency=10,
                           h0=0.3, dense_params=50, seed=0, **opts)
    rng = np.random.default_rng(3)
    masks = m.init_masks([(8, 12), (6, 8)])
    layers = _layers(masks, rng, latent=True)
    for ly in layers:  # masked connections with huge latent values
        ly.latent[~ly.mask] = 100.0
    out = m.update(10, layers)
    zeros = sum(int((~ly.mask).sum()) for ly in layers)
    s_all = zeros / (144 + 50)
    h = m.h(10)
    assert m.phi == pytest.approx(lpcore.grow_ratio(s_all, 0.8, h, 0.1))
    for ly, (new, grown) in zip(layers, out):
        came_back = np.flatnonzero((new & ~ly.mask).reshape(-1))
        assert set(came_back) <= set(grown)  # nothing by the threshold
        dropped_now, _ = lpcore.drop_by_threshold(ly.latent, ly.mask, h, axis=1)
        assert np.all(new[~dropped_now & ~np.isin(np.arange(new.size), grown).reshape(new.shape)]
                      == False)  # noqa: E712
