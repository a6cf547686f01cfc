"""Learned masks (lpcore.masklearn) and the methods built on them (scl, concave)."""
import numpy as np
import pytest
import numpy.testing as npt
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import lpcore
from lpcore.methods import Layer
from lpcore.testing import strategies as lst


def _rms_ref(rows):
    return np.sqrt(np.mean(rows.astype(np.float64) ** 2, axis=1))


@given(lst.grouped_arrays(scales=(1e-4, 1.0, 1e4)))
def test_normalize_per_feature_gives_every_feature_unit_rms(xa):
    x, axis = xa
    axis = tuple(range(x.ndim)) if axis is None else axis  # lpcore's None: one group
    before = x.copy()
    y = lpcore.normalize_per_feature(x, axis)
    np.testing.assert_array_equal(x, before)  # the input is not written
    assert y.shape == x.shape and y.dtype == x.dtype
    rx, ry = lpcore.to_groups(x, axis), lpcore.to_groups(y, axis)
    rms = _rms_ref(rx)
    live = rms > 1e-12
    np.testing.assert_allclose(_rms_ref(ry)[live], 1.0, rtol=1e-5)
    # the direction of each feature is kept: y = x / rms(x) row by row
    np.testing.assert_allclose(ry[live], rx[live] / rms[live, None], rtol=1e-5, atol=0)
    np.testing.assert_array_equal(ry[~live], rx[~live])


def test_normalize_per_feature_uses_the_fan_in_of_a_conv_weight():
    w = np.random.default_rng(0).standard_normal((4, 3, 2, 2))
    y = lpcore.normalize_per_feature(w)  # axis None: all but the first
    np.testing.assert_allclose(np.sqrt((y ** 2).mean(axis=(1, 2, 3))), 1.0)


def test_ste_mask_grad_is_grad_times_theta_then_normalised():
    rng = np.random.default_rng(1)
    g, th = rng.standard_normal((5, 7)), rng.standard_normal((5, 7))
    np.testing.assert_array_equal(lpcore.ste_mask_grad(g, th, normalize=False), g * th)
    np.testing.assert_allclose(lpcore.ste_mask_grad(g, th, axis=1),
                               lpcore.normalize_per_feature(g * th, axis=1))
    with pytest.raises(ValueError, match="latent has shape"):
        lpcore.ste_mask_grad(g, th[:, :3])
    bad = g.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="grad contains NaN"):
        lpcore.ste_mask_grad(bad, th)


unit = hnp.arrays(np.float64, hnp.array_shapes(max_dims=2, max_side=6),
                  elements=st.floats(0.02, 0.98))


@given(unit, st.sampled_from(["log", "l1"]), st.sampled_from([0.01, 0.1, 1.0]))
def test_concave_penalty_gradient_matches_finite_differences(m, kind, eps):
    g = lpcore.concave_penalty_grad(m, kind, eps)
    h = 1e-6
    fd = np.empty(m.size)
    for i in range(m.size):
        up, dn = m.copy().reshape(-1), m.copy().reshape(-1)
        up[i] += h
        dn[i] -= h
        fd[i] = (lpcore.concave_penalty(up, kind, eps) - lpcore.concave_penalty(dn, kind, eps)) / (2 * h)
    np.testing.assert_allclose(g.reshape(-1), fd, rtol=1e-5, atol=1e-7)


@given(unit, unit, st.floats(0.0, 1.0))
def test_the_log_penalty_is_concave_and_l1_linear(a, b, t):
    if a.shape != b.shape:
        b = np.resize(b, a.shape)
    mid = t * a + (1 - t) * b
    for eps in (0.01, 0.1):
        lhs = lpcore.concave_penalty(mid, "log", eps)
        rhs = t * lpcore.concave_penalty(a, "log", eps) + (1 - t) * lpcore.concave_penalty(b, "log", eps)
        assert lhs >= rhs - 1e-9
    assert lpcore.concave_penalty(mid, "l1") == pytest.approx(
        t * a.sum() + (1 - t) * b.sum(), rel=1e-12, abs=1e-12)


def test_penalty_values_at_the_ends_and_errors():
    for kind in ("log", "l1"):
        assert lpcore.concave_penalty(np.zeros(7), kind) == 0.0
        assert lpcore.concave_penalty(np.ones(7), kind) == pytest.approx(7.0)
    # small entries are pushed hardest by the concave penalty, equally by l1
    g = lpcore.concave_penalty_grad(np.array([0.0, 0.5, 1.0]), "log", 0.1)
    assert g[0] > g[1] > g[2] > 0
    m = np.array([0.2, 1.5, 0.3])
    before = m.copy()
    with pytest.raises(ValueError, match="entry 1"):
        lpcore.concave_penalty(m)
    np.testing.assert_array_equal(m, before)
    with pytest.raises(ValueError, match="kind"):
        lpcore.concave_penalty(np.ones(2), kind="l0")
    with pytest.raises(ValueError, match="eps"):
        lpcore.concave_penalty_grad(np.ones(2), eps=0.0)
    with pytest.raises(ValueError, match="NaN"):
        lpcore.concave_penalty(np.array([0.1, np.nan]))


@given(hnp.arrays(np.float64, st.integers(1, 40), elements=st.floats(-2, 2)),
       st.floats(1e-3, 1.0), st.data())
def test_calibrate_lambda_is_the_smallest_weight_reaching_k(a, step, data):
    k = data.draw(st.integers(0, a.size))
    lam = lpcore.calibrate_lambda(a, step, k)
    after = a - step * lam
    kth = np.sort(a)[k - 1] if k else -np.inf
    assert np.count_nonzero(after <= 0) == np.count_nonzero(a <= kth)  # k, more only on ties
    assert np.count_nonzero(after <= 0) >= k
    if k:  # a smaller weight leaves fewer than k
        smaller = lam - (1e-9 * abs(lam) + 1e-300)
        assert np.count_nonzero(a - step * smaller <= 0) < k
    with pytest.raises(ValueError, match="k must be"):
        lpcore.calibrate_lambda(a, step, a.size + 1)


# ------------------------------------------------------------------ methods
def _layers(rng, shapes=((6, 10), (4, 6)), grad_scale=0.1):
    out = []
    for s in shapes:
        th = rng.standard_normal(s)
        out.append(Layer(mask=np.ones(s, bool), weight=th, latent=th,
                         grad=grad_scale * rng.standard_normal(s), axis=(1,)))
    return out


def test_scl_score_step_is_the_normalised_ste_gradient_plus_lambda():
    m = lpcore.make_method("scl", target_sparsity=0.5, end=50, lam=0.7, mask_lr=0.05)
    m.init_masks([(6, 10), (4, 6)])
    before = [s.copy() for s in m.scores]
    layers = _layers(np.random.default_rng(2))
    m.learn(3, layers)
    for s0, s1, ly in zip(before, m.scores, layers):
        want = s0 - 0.05 * (lpcore.normalize_per_feature(ly.grad * ly.latent, axis=1) + 0.7)
        np.testing.assert_allclose(s1, want, rtol=1e-12)
    assert m.lam_t == 0.7


def test_scl_auto_lambda_puts_the_mask_on_the_schedule_and_the_loss_picks_who_goes():
    m = lpcore.make_method("scl", target_sparsity=0.4, begin=0, end=40, seed=4, mask_lr=0.005)
    masks = m.init_masks([(6, 10), (4, 6)])
    assert lpcore.mask_sparsity(masks) == 0.0
    rng = np.random.default_rng(3)
    th = [rng.standard_normal((6, 10)), rng.standard_normal((4, 6))]
    # a loss gradient that always favours the first half of every row
    hist = []
    for t in range(41):
        layers = []
        for w in th:
            g = np.ones_like(w) * np.sign(w)
            g[:, : w.shape[1] // 2] *= -1  # dL/dm < 0: keep
            layers.append(Layer(mask=np.ones(w.shape, bool), weight=w, latent=w, grad=g, axis=(1,)))
        gates = m.learn(t, layers)
        hist.append(lpcore.mask_sparsity([g != 0 for g in gates]))
        want = lpcore.sparsity_schedule(t, 0.0, 0.4, 0, 40)
        assert hist[-1] >= round(want * 84) / 84 - 1e-12
    assert hist[-1] == pytest.approx(0.4, abs=1 / 84)
    for g, w in zip(m.gates(), th):
        assert np.all(g[:, : w.shape[1] // 2] == 1)  # the favoured half survived


def test_concave_learns_by_projected_gradient_and_thresholds_exactly():
    m = lpcore.make_method("concave", target_sparsity=0.75, begin=1, end=10, lam=0.01,
                           mask_lr=2.0, penalty="log")
    m.init_masks([(6, 10), (4, 6)])
    rng = np.random.default_rng(5)
    layers = _layers(rng)
    s0 = [s.copy() for s in m.scores]
    gates = m.learn(0, layers)
    for s, ly, g in zip(s0, layers, gates):
        want = np.clip(s - 2.0 * (ly.grad * ly.latent + 0.01 * lpcore.concave_penalty_grad(s)), 0, 1)
        np.testing.assert_allclose(g, want, rtol=1e-12)
    # ties (every m at 1) break by |theta|: the threshold is magnitude pruning then
    m2 = lpcore.make_method("concave", target_sparsity=0.75, begin=1, end=10)
    m2.init_masks([(6, 10), (4, 6)])
    out = m2.update(10, layers)
    new = [o[0] for o in out]
    assert lpcore.mask_sparsity(new) == pytest.approx(0.75, abs=0.5 / 84)
    kept = np.concatenate([np.abs(ly.latent)[n] for ly, n in zip(layers, new)])
    cut = np.concatenate([np.abs(ly.latent)[~n] for ly, n in zip(layers, new)])
    assert kept.min() >= cut.max()
    # l1: the convex reference
    m3 = lpcore.make_method("concave", end=10, penalty="l1", lam=0.5, mask_lr=1.0)
    m3.init_masks([(2, 3)])
    g = m3.learn(0, [Layer(mask=np.ones((2, 3), bool), weight=np.ones((2, 3)), latent=None,
                           grad=None, axis=(1,))])
    np.testing.assert_allclose(g[0], 0.5)


def test_learned_methods_refuse_bad_options():
    for name, kw, match in [("scl", dict(lam="big"), "lam"), ("scl", dict(mask_lr=0.0), "mask_lr"),
                            ("concave", dict(lam=-1.0), "lam"),
                            ("concave", dict(penalty="l0"), "penalty"),
                            ("concave", dict(lam="auto"), "lam")]:
        with pytest.raises(ValueError, match=match):
            lpcore.make_method(name, **kw)
    with pytest.raises(TypeError, match="mask_lr"):
        lpcore.make_method("set", mask_lr=0.1)


@pytest.mark.parametrize("proposal, step, k", [
    ([0.3, -0.1, 0.2, 0.5], 1e-320, 2),      # kth / step overflows: was inf, all 4 <= 0
    ([1e-300, 2e-300, 1.0], 1e308, 1),       # unresolvable: was 5e-324, 2 entries <= 0
])
def test_calibrate_lambda_refuses_what_no_finite_lam_does(proposal, step, k):
    with pytest.raises(ValueError, match="calibrate_lambda: no"):
        lpcore.calibrate_lambda(np.array(proposal), step, k)


@pytest.mark.parametrize("proposal, step", [([0.0, 1.0, 2.0], 1e-9), ([0.0, 0.0], 1e-9),
                                            ([5.0, 1.0], 1e-300), ([-3.0, 1e-310], 1e-20)])
def test_calibrate_lambda_k0_is_exact_and_quick(proposal, step):
    """k = 0 with a zero entry and a tiny step used to crawl one ulp at a time
    for minutes (reachable through SCL with mask_lr=1e-9 and zero gradients)."""
    import time
    a = np.array(proposal)
    t0 = time.perf_counter()
    lam = lpcore.calibrate_lambda(a, step, 0)
    assert time.perf_counter() - t0 < 1.0
    assert np.count_nonzero(a - step * lam <= 0) == 0


@settings(max_examples=200)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=30),
       st.floats(1e-6, 1e3), st.data())
def test_calibrate_lambda_leaves_exactly_k_or_refuses(xs, step, data):
    a = np.array(xs)
    k = data.draw(st.integers(0, a.size))
    try:
        lam = lpcore.calibrate_lambda(a, step, k)
    except ValueError as e:
        assert "no lam" in str(e) or "no finite lam" in str(e)
        return
    n = int(np.count_nonzero(a - step * lam <= 0))
    ties = 0 if k == 0 else int(np.count_nonzero(a <= np.partition(a, k - 1)[k - 1]))
    assert n == (0 if k == 0 else ties)


def test_learned_mask_helpers_keep_extreme_scales():
    """normalize_per_feature([[1e200, 1e200]]) and ste_mask_grad at 1e100 x
    1e100 gave zeros; float16 inputs gave inf."""
    npt.assert_allclose(lpcore.normalize_per_feature(np.array([[1e200, 1e200]])), [[1.0, 1.0]])
    big = np.array([[1e200, -1e200]])
    npt.assert_allclose(lpcore.ste_mask_grad(big, big), [[1.0, 1.0]])
    h = lpcore.ste_mask_grad(np.array([[300.0, 100.0]], np.float16),
                             np.array([[300.0, 1.0]], np.float16))
    assert h.dtype == np.float16 and np.all(np.isfinite(h))
    npt.assert_allclose(h.astype(np.float64), [[1.4142, 0.00157]], rtol=2e-3)
    with pytest.raises(ValueError, match="ste_mask_grad: grad \\* latent overflows"):
        lpcore.ste_mask_grad(big, big, normalize=False)


@pytest.mark.parametrize("eps, err", [(float("nan"), ValueError), (float("inf"), ValueError),
                                      (-1.0, ValueError), ("1e-3", TypeError)])
def test_normalize_per_feature_checks_eps(eps, err):
    with pytest.raises(err, match="normalize_per_feature: eps"):
        lpcore.normalize_per_feature(np.ones((2, 2)), eps=eps)


def test_errors_of_ste_mask_grad_name_it():
    with pytest.raises(np.exceptions.AxisError, match="lpcore.ste_mask_grad"):
        lpcore.ste_mask_grad(np.ones((2, 3)), np.ones((2, 3)), axis=5)


def test_a_vanishing_eps_is_refused_where_the_penalty_would_be_nan():
    """concave_penalty(eps=1e-320) gave NaN and its gradient 0, and the
    concave method took it with no effect."""
    for call in (lambda: lpcore.concave_penalty(np.array([0.5]), eps=1e-320),
                 lambda: lpcore.concave_penalty_grad(np.array([0.5]), eps=1e-320),
                 lambda: lpcore.make_method("concave", eps=1e-320)):
        with pytest.raises(ValueError, match="eps must be a finite number in \\[1e-300"):
            call()
    assert np.isfinite(lpcore.concave_penalty(np.array([0.0, 0.5, 1.0]), eps=1e-300))
    assert np.all(np.isfinite(lpcore.concave_penalty_grad(np.array([0.0, 1.0]), eps=1e-300)))


# ---------------------------------------------------------------------------
# the learned-mask steps on the arrays' device (issue 26, item 5)

def _learned_layers(rng, put, gates, shapes, dtype=np.float32):
    """Layers as the binding hands them to learn(): theta as the latent, the
    dense gradient, the mask of the current gates (the last layer without a
    gradient on odd draws)."""
    out = []
    for i, (g, sh) in enumerate(zip(gates, shapes)):
        theta = rng.standard_normal(sh).astype(dtype)
        grad = rng.standard_normal(sh).astype(dtype) * 10.0 ** rng.integers(-3, 2)
        keep_grad = i < len(shapes) - 1 or rng.random() < 0.5
        out.append(Layer(mask=put(g != 0), weight=put((theta * g).astype(dtype)),
                         latent=put(theta), grad=put(grad) if keep_grad else None, axis=(1,)))
    return out


@pytest.mark.parametrize("name", ["scl", "concave"])
def test_learned_methods_learn_on_the_arrays_device(backend, rng, host_copies, name):
    """SCL's and the concave lottery's steps, and the ticket's threshold, on
    device arrays: the host's scores (to rounding: the per-feature RMS sums in
    another order) and the same masks, the scores kept on the device, and
    every copy to the host at most 4 integers."""
    shapes = [(5, 7), (4, 6)]
    kw = dict(target_sparsity=0.6, begin=0, end=4, seed=3)
    if name == "concave":
        kw["mask_lr"] = 3e3  # large enough that the masks move in a few steps
    host_m, dev_m = lpcore.make_method(name, **kw), lpcore.make_method(name, **kw)
    assert dev_m.device_ready
    host_m.init_masks(shapes)
    dev_m.init_masks(shapes)
    sizes, watching = host_copies
    g_h = g_d = host_m.gates()
    for t in range(4):
        seed = int(rng.integers(1 << 30))
        lh = _learned_layers(np.random.default_rng(seed), lambda x: x, g_h, shapes)
        ld = _learned_layers(np.random.default_rng(seed), backend.put, [backend.get(g)
                                                                          for g in g_d], shapes)
        g_h = host_m.learn(t, lh)
        watching[0] = True
        g_d = dev_m.learn(t, ld)
        watching[0] = False
        assert type(g_d[0]) is type(backend.put(g_h[0]))
        for sh, sd in zip(host_m.scores, dev_m.scores):
            npt.assert_allclose(backend.get(sd), sh, rtol=1e-12, atol=1e-15)
        for a, b in zip(g_h, g_d):
            npt.assert_array_equal(backend.get(b), a)
        if name == "scl":
            assert dev_m.lam_t == pytest.approx(host_m.lam_t, rel=1e-12)
    if name == "concave":  # the ticket: exactly the target, ties by |theta|
        lh = _learned_layers(np.random.default_rng(9), lambda x: x, g_h, shapes)
        ld = _learned_layers(np.random.default_rng(9), backend.put,
                             [backend.get(g) for g in g_d], shapes)
        want = host_m.update(4, lh)
        watching[0] = True
        got = dev_m.update(4, ld)
        watching[0] = False
        for (wm, wi), (gm, gi) in zip(want, got):
            npt.assert_array_equal(backend.get(gm), wm)
            npt.assert_array_equal(backend.get(gi), wi)
        assert sum(int((~m).sum()) for m, _ in want) == round(0.6 * 59)
    if sizes is not None:
        assert sizes and max(sizes) <= 4, sizes


def test_score_step_scales_rows_that_overflow_or_underflow_on_every_backend(backend):
    """The max-scaled paths: a float32 product that overflows, float64
    squares that underflow, a zero row; the device gives the host's scores."""
    g = np.array([[3e30, -1e30, 2e30], [1e-80, -2e-80, 3e-80], [0.0, 0.0, 0.0]])
    th = np.array([[2e10, 1e10, -3e10], [1e-80, 1e-80, 1e-80], [1.0, 2.0, 3.0]])
    s = np.linspace(-1.0, 1.0, 9).reshape(3, 3)
    for dt in (np.float32, np.float64):
        gg, tt = (g.astype(dt), th.astype(dt)) if dt == np.float64 else \
            (np.array(g[:1], dt), np.array(th[:1], dt))
        ss = s[:gg.shape[0]]
        want = lpcore.score_step(ss, gg, tt, 0.5)
        ref = ss - 0.5 * lpcore.ste_mask_grad(gg, tt)
        npt.assert_array_equal(want, ref)
        assert np.all(np.isfinite(want))
        got = backend.get(backend(lpcore.score_step, ss, gg, tt, 0.5))
        npt.assert_allclose(got, want, rtol=1e-6 if dt == np.float32 else 1e-13)


def test_calibrate_lambda_and_threshold_rank_ties_and_signs_on_every_backend(backend, rng):
    """The order statistic among negatives, zeros (both signs) and ties, and
    the ticket's cut with ties in the scores broken by |latent|, then by
    position: the device's lam and masks are the host's."""
    a = rng.choice([-2.0, -0.5, -0.0, 0.0, 0.25, 0.5, 3.0], size=40)
    for k in (0, 1, 5, 17, 39, 40):
        try:
            want = lpcore.calibrate_lambda(a, 0.1, k)
        except ValueError as e:
            with pytest.raises(ValueError, match="no lam"):
                backend(lpcore.calibrate_lambda, a, 0.1, k)
            assert "no lam" in str(e)
            continue
        assert backend(lpcore.calibrate_lambda, a, 0.1, k) == want
    m = rng.choice([0.0, 0.0, 0.3, 1.0], size=30)
    lat = [rng.choice([-1.0, 0.5, 2.0], size=(4, 5)).astype(np.float32),
           rng.choice([-1.0, 0.5], size=10)]
    order = np.lexsort((np.concatenate([np.abs(x).reshape(-1) for x in lat]), m))
    for k in (0, 4, 11, 23, 30):
        want = np.ones(30, bool)
        want[order[:k]] = False
        npt.assert_array_equal(lpcore.threshold_scores(m, lat, k), want)
        got = backend(lambda m_, *ls, k=k: lpcore.threshold_scores(m_, list(ls), k), m, *lat)
        npt.assert_array_equal(got, want)
