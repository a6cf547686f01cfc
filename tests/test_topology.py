import numpy as np
import pytest
from hypothesis import given, strategies as st

import lpcore
from lpcore.testing import assert_unchanged
from lpcore.testing import strategies as lst


def drop_ref(w, m, h, revive=False):
    """Per row of 2-D arrays; ``revive``: the reference's semantics (new mask over all)."""
    out = m.copy()
    for i in range(w.shape[0]):
        act = m[i]
        if act.any():
            tau = h * np.abs(w[i][act].astype(np.float64)).mean()
            keep = np.abs(w[i].astype(np.float64)) >= tau
            out[i] = keep if revive else act & keep
    return out


def grow_ref(score, m, k):
    """Per row normalisation by the row's mean |score|, global top-k, ties to lower index."""
    a = np.abs(score.astype(np.float64))
    mean = a.mean(axis=1, keepdims=True)
    s = np.where(mean > 0, a / np.where(mean > 0, mean, 1), 0.0).reshape(-1)
    cand = [(-s[j], j) for j in np.flatnonzero(~m.reshape(-1))]
    idx = sorted(j for _, j in sorted(cand)[:k])
    out = m.copy().reshape(-1)
    out[idx] = True
    return out.reshape(m.shape), np.array(idx, dtype=np.intp)


@st.composite
def weight_and_mask(draw):
    w = draw(lst.float_arrays(shape=(draw(st.integers(1, 6)), draw(st.integers(1, 9)))))
    m = draw(st.lists(st.booleans(), min_size=w.size, max_size=w.size))
    return w, np.array(m, dtype=bool).reshape(w.shape)


@given(weight_and_mask(), st.floats(0.0, 2.0))
def test_drop_by_threshold_matches_reference(wm, h):
    w, m = wm
    new, nd = lpcore.drop_by_threshold(w, m, h, axis=1)
    np.testing.assert_array_equal(new, drop_ref(w, m, h))
    assert nd == m.sum() - new.sum()
    assert not np.any(new & ~m)  # drop never activates
    # non-trailing axis: same result through the transposed layout
    newt, _ = lpcore.drop_by_threshold(w.T, m.T, h, axis=0)
    np.testing.assert_array_equal(newt, new.T)


@given(weight_and_mask(), st.floats(0.0, 2.0))
def test_drop_with_revival_matches_the_reference_semantics(wm, h):
    w, m = wm
    new, nd = lpcore.drop_by_threshold(w, m, h, axis=1, revive=True)
    np.testing.assert_array_equal(new, drop_ref(w, m, h, revive=True))
    assert nd == np.count_nonzero(m & ~new)
    # without revival the same drop, and nothing comes back
    plain, nd0 = lpcore.drop_by_threshold(w, m, h, axis=1)
    assert nd0 == nd and np.array_equal(plain, new & m)


def test_drop_with_revival_checks_latent_values_and_skips_empty_groups():
    w = np.array([[1.0, np.nan, 2.0], [0.5, 0.7, np.inf]])
    m = np.array([[True, False, True], [False, False, False]])
    new, nd = lpcore.drop_by_threshold(w, m, 0.5, axis=1)  # latent NaN is not read
    assert nd == 0 and np.array_equal(new, m)
    with pytest.raises(ValueError, match=r"among the weights of group \(0,\)"):
        lpcore.drop_by_threshold(w, m, 0.5, axis=1, revive=True)
    w[0, 1] = 3.0
    new, nd = lpcore.drop_by_threshold(w, m, 0.5, axis=1, revive=True)
    assert new[0].tolist() == [True, True, True] and not new[1].any() and nd == 0


def test_regrow_ratio_puts_the_mask_on_the_schedule():
    assert lpcore.regrow_ratio(600, 200, 500) == 0.5
    assert lpcore.regrow_ratio(450, 100, 500) == 0.0
    assert lpcore.regrow_ratio(700, 100, 500) == 2.0  # sparser than scheduled: regrow more
    assert lpcore.regrow_ratio(700, 0, 500) == 0.0
    for bad in [dict(zeros_after_drop=-1), dict(n_dropped=1.5), dict(target_zeros=True)]:
        args = dict(zeros_after_drop=1, n_dropped=1, target_zeros=1) | bad
        with pytest.raises(ValueError, match=next(iter(bad))):
            lpcore.regrow_ratio(**args)


@given(weight_and_mask(), st.data())
def test_grow_by_score_matches_reference(wm, data):
    g, m = wm
    k = data.draw(st.integers(0, int((~m).sum())))
    new, idx = lpcore.grow_by_score(g, m, k, axis=1)
    want, widx = grow_ref(g, m, k)
    np.testing.assert_array_equal(new, want)
    np.testing.assert_array_equal(idx, widx)
    assert new.sum() == m.sum() + k and np.all(new[m])


def test_grow_ranks_by_magnitude_not_sign():
    g = np.array([[-10.0, 1.0, 0.5, 0.2]])
    m = np.array([[False, False, True, True]])
    _, idx = lpcore.grow_by_score(g, m, 1, axis=1)
    assert idx.tolist() == [0]


def test_drop_smallest_and_grow_random(rng):
    w = rng.standard_normal((5, 8))
    m = lpcore.random_mask(w.shape, 0.5, rng)
    assert m.sum() == 20
    new, idx = lpcore.drop_smallest(w, m, 6)
    act = np.flatnonzero(m.reshape(-1))
    want = act[np.argsort(np.abs(w.reshape(-1)[act]), kind="stable")[:6]]
    np.testing.assert_array_equal(idx, np.sort(want))
    assert new.sum() == 14
    g1, i1 = lpcore.grow_random(new, 6, np.random.default_rng(1))
    g2, i2 = lpcore.grow_random(new, 6, np.random.default_rng(1))
    np.testing.assert_array_equal(i1, i2)
    assert g1.sum() == 20 and not np.any(new.reshape(-1)[i1])
    with pytest.raises(ValueError, match="exceeds"):
        lpcore.grow_random(new, 100, rng)
    with pytest.raises(ValueError, match="exceeds"):
        lpcore.drop_smallest(w, m, 21)


def test_mask_sparsity_and_schedules():
    assert lpcore.mask_sparsity([np.ones(3, bool), np.zeros(1, bool)]) == 0.25
    with pytest.raises(ValueError):
        lpcore.mask_sparsity([])
    hs = [lpcore.drop_threshold_schedule(t, 0.2, 10, 20) for t in range(0, 25)]
    assert hs[0] == hs[10] == 0.2 and hs[20] == pytest.approx(0.0, abs=1e-15) and hs[24] == 0.0
    assert all(a >= b for a, b in zip(hs, hs[1:]))
    he = [lpcore.drop_threshold_schedule(t, 0.2, 0, 10, kind="exponential") for t in (0, 10)]
    assert he == [0.2, pytest.approx(0.002)]
    assert lpcore.drop_threshold_schedule(5, 0.2, 0, 10, kind="constant") == 0.2
    ss = [lpcore.sparsity_schedule(t, 0.2, 0.9, 10, 20) for t in range(30)]
    assert ss[0] == pytest.approx(0.2) and ss[20] == 0.9 and ss[29] == 0.9
    assert all(a <= b for a, b in zip(ss, ss[1:]))
    for bad in (dict(kind="linearish"),):
        with pytest.raises(ValueError):
            lpcore.sparsity_schedule(1, 0.2, 0.9, 0, 10, **bad)
    with pytest.raises(ValueError, match="begin < end"):
        lpcore.drop_threshold_schedule(1, 0.2, 10, 10)


def test_grow_ratio_branches():
    assert lpcore.grow_ratio(0.5, 0.9, 0.2) == pytest.approx(0.9 * 0.5 / 0.9)
    assert lpcore.grow_ratio(0.89, 0.9, 0.2) == pytest.approx(1.1 * 0.89 / 0.9)
    with pytest.raises(ValueError):
        lpcore.grow_ratio(0.5, 0.0, 0.2)


def test_bad_inputs_leave_inputs_alone():
    w = np.ones((2, 3))
    w[1, 2] = np.nan
    m = np.ones((2, 3), bool)
    w0, m0 = w.copy(), m.copy()
    with pytest.raises(ValueError, match=r"group \(1,\)"):
        lpcore.drop_by_threshold(w, m, 0.5, axis=1)
    with pytest.raises(ValueError, match="NaN or Inf"):
        lpcore.grow_by_score(w, ~m, 0, axis=1)
    with pytest.raises(TypeError, match="boolean"):
        lpcore.drop_by_threshold(w, m.astype(int), 0.5, axis=1)
    with pytest.raises(ValueError, match="shape"):
        lpcore.drop_by_threshold(w, m[:, :2], 0.5, axis=1)
    with pytest.raises(ValueError, match="h"):
        lpcore.drop_by_threshold(np.ones((2, 3)), m, -1.0, axis=1)
    with pytest.raises(ValueError, match="k"):
        lpcore.grow_by_score(np.ones((2, 3)), m, -1)
    assert_unchanged(w0, w)
    assert_unchanged(m0, m)


# ------------------------------------------------------------ adjust_to_sparsity
def adjust_ref(masks, drops, grows, target):
    """The trainer's former exact adjustment: one Python list of (key, layer,
    index) over every candidate connection, sorted."""
    total = sum(m.size for m in masks)
    diff = int(round(target * total)) - sum(int((~m).sum()) for m in masks)
    flat = []
    for i, m in enumerate(masks):
        mf = m.reshape(-1)
        if diff > 0:
            key = np.abs(drops[i].reshape(-1).astype(np.float64))
        else:
            key = (np.zeros(m.size) if grows[i] is None
                   else np.abs(grows[i].reshape(-1).astype(np.float64)))
        for j in np.flatnonzero(mf if diff > 0 else ~mf):
            flat.append((float(key[j]) if diff > 0 else -float(key[j]), i, int(j)))
    flat.sort()
    new = [m.copy() for m in masks]
    for _, i, j in flat[:abs(diff)]:
        new[i].reshape(-1)[j] = diff < 0
    return new


@st.composite
def layers(draw):
    out = []
    for _ in range(draw(st.integers(1, 4))):
        shape = (draw(st.integers(1, 5)), draw(st.integers(1, 7)))
        # few distinct magnitudes, so that ties across layers are common
        vals = st.sampled_from([0.0, -0.5, 0.5, 1.0, 2.0, -3.0, 1e-30])
        size = shape[0] * shape[1]
        w = np.array(draw(st.lists(vals, min_size=size, max_size=size))).reshape(shape)
        g = np.array(draw(st.lists(vals, min_size=size, max_size=size))).reshape(shape)
        m = np.array(draw(st.lists(st.booleans(), min_size=size, max_size=size))).reshape(shape)
        out.append((m, w.astype(draw(st.sampled_from([np.float32, np.float64]))),
                    None if draw(st.booleans()) else g))
    return out


@given(layers(), st.floats(0.0, 1.0))
def test_adjust_to_sparsity_matches_the_sorted_reference(ls, target):
    masks = [m for m, _, _ in ls]
    drops = [w for _, w, _ in ls]
    grows = [g for _, _, g in ls]
    before = [m.copy() for m in masks]
    new, changed = lpcore.adjust_to_sparsity(masks, drops, grows, target)
    ref = adjust_ref(masks, drops, grows, target)
    for a, b, m0, m, c in zip(new, ref, before, masks, changed):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(m, m0)  # the inputs are not modified
        np.testing.assert_array_equal(c, np.flatnonzero(a.reshape(-1) != m0.reshape(-1)))
    total = sum(m.size for m in masks)
    assert sum(int((~a).sum()) for a in new) == int(round(target * total))


def test_adjust_to_sparsity_refuses_bad_input_and_writes_nothing():
    m = [np.ones((2, 3), bool), np.zeros(4, bool)]
    w = [np.ones((2, 3)), np.ones(4)]
    w[0][1, 2] = np.nan
    m0 = [x.copy() for x in m]
    with pytest.raises(ValueError, match=r"drop_scores\[0\] contains NaN"):
        lpcore.adjust_to_sparsity(m, w, [None, None], 0.9)
    with pytest.raises(ValueError, match=r"grow_scores\[1\] has shape \(3,\)"):
        lpcore.adjust_to_sparsity(m, w, [None, np.ones(3)], 0.1)
    with pytest.raises(ValueError, match="target"):
        lpcore.adjust_to_sparsity(m, w, [None, None], 1.5)
    with pytest.raises(ValueError, match="3 entries for 2 masks"):
        lpcore.adjust_to_sparsity(m, w + [w[1]], [None, None], 0.5)
    with pytest.raises(TypeError, match=r"masks\[1\] must be a boolean"):
        lpcore.adjust_to_sparsity([m[0], np.zeros(4)], w, [None, None], 0.5)
    for a, b in zip(m, m0):
        np.testing.assert_array_equal(a, b)
    # NaN where it is not ranked (an inactive weight when dropping) is no error
    new, _ = lpcore.adjust_to_sparsity([~np.eye(2, dtype=bool)], [np.array([[np.nan, 1.0],
                                                                           [2.0, np.nan]])],
                                       [None], 0.75)
    np.testing.assert_array_equal(new[0], [[False, False], [True, False]])


@pytest.mark.parametrize("revive", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_drop_by_threshold_decides_on_the_arrays_device(backend, rng, revive, dtype):
    """The drop rule on device arrays gives the host's mask and count (random
    weights: no entry sits at its threshold, where the sums' order could
    tip it), the mask stays on the device, an empty group is left alone, and
    a non-trailing axis goes through the layout."""
    w = rng.standard_normal((5, 37)).astype(dtype)
    m = rng.random((5, 37)) > 0.3
    m[3] = False
    want, nd = lpcore.drop_by_threshold(w, m, 0.7, axis=1, revive=revive)
    got, ndg = lpcore.drop_by_threshold(backend.put(w), backend.put(m), 0.7, axis=1,
                                        revive=revive)
    assert type(got) is type(backend.put(want))
    np.testing.assert_array_equal(backend.get(got), want)
    assert ndg == nd > 0
    got_t, _ = lpcore.drop_by_threshold(backend.put(np.ascontiguousarray(w.T)),
                                        backend.put(np.ascontiguousarray(m.T)), 0.7, axis=0,
                                        revive=revive)
    np.testing.assert_array_equal(backend.get(got_t), want.T)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grow_by_score_selects_on_the_arrays_device(backend, rng, dtype):
    """The device's radix selection gives the host's mask and indices,
    including ties (repeated scores, rows of zeros) broken towards the lower
    flat index, through a non-trailing axis and for k = 0 and every inactive."""
    s = np.round(rng.standard_normal((4, 9)), 1).astype(dtype)  # many ties
    s[2] = 0.0
    m = rng.random((4, 9)) > 0.5
    n_in = int((~m).sum())
    for k in (0, 1, 7, n_in):
        want, idx = lpcore.grow_by_score(s, m, k, axis=1)
        got, gidx = lpcore.grow_by_score(backend.put(s), backend.put(m), k, axis=1)
        np.testing.assert_array_equal(backend.get(got), want)
        np.testing.assert_array_equal(backend.get(gidx), idx)
    st, mt = np.ascontiguousarray(s.T), np.ascontiguousarray(m.T)
    want, idx = lpcore.grow_by_score(st, mt, 5, axis=0)
    got, gidx = lpcore.grow_by_score(backend.put(st), backend.put(mt), 5, axis=0)
    np.testing.assert_array_equal(backend.get(got), want)
    np.testing.assert_array_equal(backend.get(gidx), idx)


def _activated_ref(new, *before):
    """The positions active in ``new`` and inactive in some earlier mask, by definition."""
    return [i for i in range(new.size)
            if new.flat[i] and any(not b.flat[i] for b in before)]


@given(st.integers(0, 40), st.integers(0, 2 ** 32 - 1))
def test_activated_is_new_and_once_inactive(n, seed):
    r = np.random.default_rng(seed)
    new, a, b = (r.random((3, n)) > 0.5 for _ in range(3))
    from lpcore.masks import activated, inactive_count
    assert activated(new, a, b).tolist() == _activated_ref(new, a, b)
    assert activated(new, a).tolist() == _activated_ref(new, a)
    assert inactive_count(new) == int((~new).sum())


def test_mask_counts_on_the_arrays_device(backend, rng):
    """inactive_count, activated and mask_sparsity on device masks give the host's
    results (a transposed mask through the layout, an empty mask)."""
    from lpcore.masks import activated, inactive_count
    new, a, b = (rng.random((7, 33)) > 0.4 for _ in range(3))
    for args in ((new, a, b), (new, a), (new.T, a.T, b.T), (new[:0], a[:0])):
        want = _activated_ref(*args)
        got = activated(*[backend.put(x) for x in args])
        assert backend.get(got).tolist() == want
        assert inactive_count(backend.put(args[0])) == int((~args[0]).sum())
    masks = [new, a.T, np.zeros((2, 3), bool)]
    assert lpcore.mask_sparsity([backend.put(m) for m in masks]) == \
        lpcore.mask_sparsity(masks)
    with pytest.raises(TypeError, match="boolean"):
        inactive_count(backend.put(new.astype(np.float32)))
    with pytest.raises(ValueError, match=r"before\[1\] has shape"):
        activated(backend.put(new), backend.put(a), backend.put(b[:2]))


def _lpss_layers(rng, put, G=(6, 5, 4), n=(10, 12, 9)):
    out = []
    for g_, n_ in zip(G, n):
        lat = np.abs(rng.standard_normal((g_, n_)))
        m = rng.random((g_, n_)) > 0.3
        grad = rng.standard_normal((g_, n_))
        out.append(lpcore.methods.Layer(mask=put(m), weight=put(lat * m), latent=put(lat),
                                        grad=put(grad), axis=(1,)))
    return out


@pytest.mark.parametrize("controller", ["schedule", "reference"])
def test_lpss_update_decides_on_the_arrays_device_copying_only_counts(backend, rng,
                                                                      monkeypatch, controller):
    """LpSS's topology update on device arrays (issue 26, item 5): the same masks,
    reset indices and controller state as on the host, and every copy to the host
    is a count (at most 4 integers: the decision never reads a mask, weight or
    gradient back)."""
    kw = dict(target_sparsity=0.7, init_sparsity=0.2, begin=0, end=10, frequency=1,
              controller=controller, revive=True, dense_params=7 if controller == "reference"
              else 0)
    host_m = lpcore.make_method("lpss", **kw)
    dev_m = lpcore.make_method("lpss", **kw)
    seed = int(rng.integers(1 << 30))
    layers_h = _lpss_layers(np.random.default_rng(seed), lambda x: x)
    layers_d = _lpss_layers(np.random.default_rng(seed), backend.put)
    sizes, watching = [], [False]
    from lpcore import _device as D
    sim = backend.name == "cuda" and D.simulated()
    if sim:
        from numba.cuda.simulator.cudadrv import devicearray as sim_array
        copy = sim_array.FakeCUDAArray.copy_to_host
        monkeypatch.setattr(sim_array.FakeCUDAArray, "copy_to_host",
                            lambda self, ary=None, stream=0:
                            (watching[0] and sizes.append(self.size))
                            or copy(self, ary, stream))
    reset = 0
    for t in (3, 4):
        want = host_m.update(t, layers_h)
        watching[0] = True
        got = dev_m.update(t, layers_d)
        watching[0] = False
        for (wn, wi), (gn, gi), ly_h, ly_d in zip(want, got, layers_h, layers_d):
            assert type(gn) is type(backend.put(wn))
            np.testing.assert_array_equal(backend.get(gn), wn)
            np.testing.assert_array_equal(backend.get(gi), wi)
            reset += len(wi)
            ly_h.mask, ly_d.mask = wn, gn
        assert (dev_m.phi, dev_m.h_gain) == (host_m.phi, host_m.h_gain)
    assert reset > 0  # connections were regrown or revived
    assert any(not np.array_equal(backend.get(ly.mask), m) for ly, m in
               zip(layers_h, [x.mask for x in _lpss_layers(np.random.default_rng(seed),
                                                           lambda x: x)]))
    if sim:  # the counts the decision read (drop: 2, inactive counts: 4)
        assert sizes and max(sizes) <= 4, sizes


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_drop_smallest_and_grow_random_select_on_the_arrays_device(backend, rng, dtype):
    """The same masks and indices as the host's: ties (repeated magnitudes, both
    signs), a transposed layout, k = 0 and k = all; grow_random draws the same
    connections from the same seed."""
    w = rng.choice([-1.0, 0.5, 0.25, 2.0, -0.5], size=(5, 9)).astype(dtype)
    m = rng.random((5, 9)) > 0.3
    for x, mm in ((w, m), (w.T, m.T)):
        n_act = int(mm.sum())
        for k in (0, 3, n_act):
            want, idx = lpcore.drop_smallest(x, mm, k)
            got, gidx = lpcore.drop_smallest(backend.put(x), backend.put(mm), k)
            assert type(got) is type(backend.put(want))
            np.testing.assert_array_equal(backend.get(got), want)
            np.testing.assert_array_equal(backend.get(gidx), idx)
            n_free = int((~want).sum())
            for j in ((0, 4, n_free) if k == 3 else ()):
                want_g, gi = lpcore.grow_random(want, j, np.random.default_rng(k + j))
                got_g, ggi = lpcore.grow_random(backend.put(np.ascontiguousarray(want)), j,
                                                np.random.default_rng(k + j))
                np.testing.assert_array_equal(backend.get(got_g), want_g)
                np.testing.assert_array_equal(backend.get(ggi), gi)
    g = rng.standard_normal((5, 9)).astype(dtype)
    from lpcore.masks import inactive_magnitudes
    want = np.where(m, 0.0, np.abs(g))
    got = inactive_magnitudes(backend.put(g), backend.put(m))
    assert backend.get(got).dtype == dtype
    np.testing.assert_array_equal(backend.get(got), want)
    with pytest.raises(ValueError, match="k=40 exceeds the"):
        lpcore.grow_random(backend.put(np.zeros(3, bool)), 40, 0)


@pytest.mark.parametrize("target", [0.1, 0.35, 0.9])
def test_adjust_to_sparsity_on_the_arrays_device(backend, rng, target):
    """One global ranking over device masks: the host's masks and changed
    indices, growing (with a layer without scores) and dropping."""
    ms = [rng.random(s) > 0.35 for s in ((4, 7), (3, 5, 2), (6,))]
    ws = [rng.choice([0.5, -1.0, 2.0, 0.25], size=m.shape) for m in ms]
    gs = [rng.standard_normal(ms[0].shape), None, np.abs(rng.standard_normal(6))]
    want, wc = lpcore.adjust_to_sparsity(ms, ws, gs, target)
    got, gc = lpcore.adjust_to_sparsity([backend.put(m) for m in ms],
                                        [backend.put(w) for w in ws],
                                        [None if g is None else backend.put(g) for g in gs],
                                        target)
    for a, b, c, d in zip(want, got, wc, gc):
        assert type(b) is type(backend.put(a))
        np.testing.assert_array_equal(backend.get(b), a)
        np.testing.assert_array_equal(backend.get(d), c)
    bad = [w.copy() for w in ws]
    bad[1][ms[1]] = np.nan
    with pytest.raises(ValueError, match=r"drop_scores\[1\] contains NaN"):
        lpcore.adjust_to_sparsity([backend.put(m) for m in ms],
                                  [backend.put(w) for w in bad], [None] * 3, 0.95)


@pytest.mark.parametrize("name", ["set", "rigl", "magnitude", "imp", "chase", "static"])
def test_drop_and_grow_methods_decide_on_the_arrays_device(backend, rng, host_copies, name):
    """SET, RigL, gradual magnitude pruning, IMP, Chase (channels removed by
    their UMM, the exact adjustment kept out of removed channels) and the
    static mask's exact adjustment on device
    arrays (issue 26, item 5): an update and the exact adjustment (IMP: two
    prunes) give the host's masks and
    reset indices (the same random draws), and every copy to the host is a
    count of at most 4 integers."""
    kw = dict(target_sparsity=0.6, begin=0, end=4, frequency=2) if name == "imp" else \
        dict(target_sparsity=0.6, begin=0, end=10, frequency=1)
    if name == "chase":
        kw["channel_sparsity"] = 0.5
    host_m, dev_m = lpcore.make_method(name, **kw), lpcore.make_method(name, **kw)
    assert dev_m.device_ready
    seed = int(rng.integers(1 << 30))
    layers_h = _lpss_layers(np.random.default_rng(seed), lambda x: x)
    layers_d = _lpss_layers(np.random.default_rng(seed), backend.put)
    sizes, watching = host_copies
    changed = 0
    steps = (2, 4) if name == "imp" else (3,)
    for decide in [lambda m, ls, t=t: m.update(t, ls) for t in steps] + \
            [lambda m, ls: m.adjust(ls, 0.5)]:
        want = decide(host_m, layers_h)
        watching[0] = True
        got = decide(dev_m, layers_d)
        watching[0] = False
        for w, g, ly_h, ly_d in zip(want, got, layers_h, layers_d):
            assert (w is None) == (g is None)
            if w is None:
                continue
            assert type(g[0]) is type(backend.put(w[0]))
            np.testing.assert_array_equal(backend.get(g[0]), w[0])
            np.testing.assert_array_equal(backend.get(g[1]), w[1])
            changed += int((backend.get(g[0]) != backend.get(ly_d.mask)).sum())
            ly_h.mask, ly_d.mask = w[0], g[0]
    assert changed > 0
    if sizes is not None:
        assert sizes and max(sizes) <= 4, sizes
