import numpy as np
import pytest
from scipy import special

import lpcore


def _simulate(n, p, k, groups=400, seed=7, gradient="gamma"):
    """Direct simulation: gradient magnitudes -> stationary weights -> Hoyer."""
    rng = np.random.default_rng(seed)
    if gradient == "gamma":
        g = rng.gamma(k, 2.0, size=(groups, n))
    else:
        g = np.abs(rng.standard_normal((groups, n)))
    w = np.exp(np.log(g) / (p - 1) - np.max(np.log(g) / (p - 1), axis=1, keepdims=True))
    a = np.abs(w)
    h = (np.sqrt(n) - a.sum(1) / np.sqrt((a * a).sum(1))) / (np.sqrt(n) - 1)
    return h.mean()


@pytest.mark.parametrize("p", [1.7, 2.0, 3.0])
@pytest.mark.parametrize("k", [1.0, 3.0])
def test_asymptotic_matches_simulation_where_tails_are_light(p, k):
    n = 4000
    sim = _simulate(n, p, k)
    assert lpcore.expected_hoyer(n, p, shape=k) == pytest.approx(sim, abs=0.01)


@pytest.mark.parametrize("p", [1.1, 1.3, 1.5, 2.0])
@pytest.mark.parametrize("gradient", ["gamma", "gaussian"])
def test_monte_carlo_matches_direct_simulation_everywhere(p, gradient):
    n = 300
    mc = lpcore.expected_hoyer(n, p, shape=1.5, method="monte_carlo", gradient=gradient,
                               n_groups=2000, seed=1)
    sim = _simulate(n, p, 1.5, groups=2000, seed=2, gradient=gradient)
    assert mc == pytest.approx(sim, abs=0.015)
    assert 0.0 <= mc <= 1.0


def test_monte_carlo_is_seeded():
    a = lpcore.expected_hoyer(100, 1.2, method="monte_carlo", seed=3)
    assert a == lpcore.expected_hoyer(100, 1.2, method="monte_carlo", seed=3)
    assert a != lpcore.expected_hoyer(100, 1.2, method="monte_carlo", seed=4)


def test_monotone_in_p_and_limits():
    ps = np.linspace(1.01, 6.0, 200)
    e = lpcore.expected_hoyer(1000, ps)
    assert np.all(np.diff(e) <= 0)
    assert e[0] > 0.99 and lpcore.expected_hoyer(1000, 1e6) < 1e-6
    assert np.all((e >= 0) & (e <= 1))


def test_closed_form_values():
    # k = 1, a = 1 (p = 2): rho = Gamma(2)/sqrt(Gamma(1) Gamma(3)) = 1/sqrt(2)
    n = 10_000
    assert lpcore.expected_hoyer(n, 2.0) == pytest.approx(
        np.sqrt(n) * (1 - 1 / np.sqrt(2)) / (np.sqrt(n) - 1), rel=1e-14)
    # gaussian model at p = 2: k = 1/2, a = 1/2: rho = Gamma(1)/sqrt(Gamma(1/2) Gamma(3/2)) = sqrt(2/pi)
    assert lpcore.expected_hoyer(n, 2.0, gradient="gaussian") == pytest.approx(
        np.sqrt(n) * (1 - np.sqrt(2 / np.pi)) / (np.sqrt(n) - 1), rel=1e-14)


@pytest.mark.parametrize("target", [0.05, 0.3, 0.6, 0.9, 0.99])
@pytest.mark.parametrize("gradient", ["gamma", "gaussian"])
def test_p_for_hoyer_inverts(target, gradient):
    p = lpcore.p_for_hoyer(target, 784, shape=2.0, gradient=gradient)
    assert p > 1
    assert lpcore.expected_hoyer(784, p, shape=2.0, gradient=gradient) == pytest.approx(target, abs=1e-9)


@pytest.mark.parametrize("target", [0.0, 1.0, -0.1, 1.5, 1e-20])
def test_p_for_hoyer_unreachable(target):
    with pytest.raises(ValueError, match="unreachable"):
        lpcore.p_for_hoyer(target, 100)


@pytest.mark.parametrize("k", [0.3, 1.0, 4.0])
def test_fit_gamma_shape_recovers_shape(k):
    g = np.random.default_rng(5).gamma(k, 1e-4, size=50_000)
    g[::7] *= -1  # signs are ignored
    g[:10] = 0.0  # zeros are dropped
    assert lpcore.fit_gamma_shape(g) == pytest.approx(k, rel=0.03)


def test_fit_gamma_shape_errors():
    with pytest.raises(ValueError, match="NaN or Inf"):
        lpcore.fit_gamma_shape([1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match="at least 2"):
        lpcore.fit_gamma_shape([0.0, 0.0, 3.0])
    with pytest.raises(ValueError, match="equal"):
        lpcore.fit_gamma_shape([2.0, -2.0, 2.0])


@pytest.mark.parametrize("p", [1.1, 1.5, 2.5])
@pytest.mark.parametrize("h", [0.1, 0.5, 1.0])
def test_expected_pruned_fraction_matches_simulation(p, h):
    k = 1.5
    a = 1 / (p - 1)
    x = np.random.default_rng(9).gamma(k, size=400_000)
    w = x ** a
    sim = np.mean(w < h * special.gamma(k + a) / special.gamma(k))
    assert lpcore.expected_pruned_fraction(p, h, shape=k) == pytest.approx(sim, abs=3e-3)
    assert lpcore.expected_pruned_fraction(p, 0.0) == 0.0


def test_gamma_model_argument_errors():
    with pytest.raises(ValueError, match="p must satisfy"):
        lpcore.expected_hoyer(10, 1.0)
    with pytest.raises(ValueError, match="n must be >= 2"):
        lpcore.expected_hoyer(1, 1.5)
    with pytest.raises(ValueError, match="shape"):
        lpcore.expected_hoyer(10, 1.5, shape=-1.0)
    with pytest.raises(ValueError, match="method"):
        lpcore.expected_hoyer(10, 1.5, method="exact")
    with pytest.raises(ValueError, match="gradient"):
        lpcore.expected_hoyer(10, 1.5, gradient="cauchy")
    with pytest.raises(ValueError, match="scalar"):
        lpcore.expected_hoyer([10, 20], 1.5, method="monte_carlo")


# ------------------------------------------------------- p_for_sparsity (LpSS's p)
from hypothesis import given, strategies as st  # noqa: E402


@given(target=st.floats(0.02, 0.98), h=st.floats(0.02, 0.9), k=st.floats(0.3, 4.0),
       gradient=st.sampled_from(["gamma", "gaussian"]))
def test_p_for_sparsity_inverts_expected_pruned_fraction(target, h, k, gradient):
    p = lpcore.p_for_sparsity(target, h, shape=k, gradient=gradient)
    assert 1.0 < p < 1e6
    got = lpcore.expected_pruned_fraction(p, h, shape=k, gradient=gradient)
    assert got == pytest.approx(target, abs=1e-7)


@given(n=st.integers(8, 300), target=st.floats(0.1, 0.8), h=st.floats(0.1, 0.5))
def test_p_for_sparsity_inverts_the_finite_group_form(n, target, h):
    target = min(target, (n - 2.0) / n)
    p = lpcore.p_for_sparsity(target, h, n=n, n_groups=200)
    got = lpcore.expected_pruned_fraction(p, h, n=n, n_groups=200)
    # the Monte Carlo form is a step function of p: within one draw of the target
    assert got == pytest.approx(target, abs=2.0 / (200 * n) + 1e-9)


def test_p_for_sparsity_is_vectorised_and_monotone():
    ps = lpcore.p_for_sparsity([0.5, 0.8, 0.9, 0.95], 0.2)
    assert ps.shape == (4,)
    assert np.all(np.diff(ps) < 0)  # sparser targets need p closer to 1
    grid = lpcore.p_for_sparsity([[0.5], [0.9]], 0.2, n=[64, 256])
    assert grid.shape == (2, 2)
    assert grid[0, 0] == lpcore.p_for_sparsity(0.5, 0.2, n=64)


@pytest.mark.parametrize("p, n", [(1.05, 64), (1.2, 64), (1.3, 16), (1.5, 256)])
def test_finite_group_pruned_fraction_matches_the_drop_rule(p, n):
    """The Monte Carlo form against lpcore's own drop rule on simulated stationary weights."""
    rng = np.random.default_rng(3)
    x = rng.gamma(1.0, size=(2000, n))
    lw = np.log(x) / (p - 1)
    w = np.exp(lw - lw.max(axis=1, keepdims=True))
    mask, dropped = lpcore.drop_by_threshold(w, np.ones(w.shape, bool), 0.2, axis=1)
    sim = dropped / w.size
    assert lpcore.expected_pruned_fraction(p, 0.2, n=n) == pytest.approx(sim, abs=0.01)


def test_finite_group_form_departs_from_large_n_at_small_p():
    big = lpcore.expected_pruned_fraction(1.05, 0.2)
    small = lpcore.expected_pruned_fraction(1.05, 0.2, n=64)
    assert big > 0.999 and small == pytest.approx(0.96, abs=0.01)
    assert small <= 63 / 64
    # and agrees with it for light tails and long groups
    assert lpcore.expected_pruned_fraction(2.0, 0.2, n=4096) == pytest.approx(
        lpcore.expected_pruned_fraction(2.0, 0.2), abs=0.005)


@pytest.mark.parametrize("kw, match", [
    (dict(target=0.0), "target must lie in"), (dict(target=1.0), "target must lie in"),
    (dict(target=float("nan")), "target must lie in"),
    (dict(target=[0.5, 1.2]), r"at index \(1,\)"),
    (dict(h=1.0), "h must lie in"), (dict(h=0.0), "h must lie in"), (dict(h=float("nan")), "h must"),
    (dict(target=0.9, n=9), "unreachable for h=0.2, n=9"),
    (dict(n=1), "n must be >= 2"), (dict(unreachable="ignore"), "unreachable must be"),
])
def test_p_for_sparsity_errors_name_the_argument(kw, match):
    args = dict(target=0.5, h=0.2) | kw
    with pytest.raises(ValueError, match=match):
        lpcore.p_for_sparsity(**args)


def test_p_for_sparsity_clips_groups_too_small_for_the_target():
    p = lpcore.p_for_sparsity([0.9, 0.9], 0.2, n=[9, 256], unreachable="clip")
    assert lpcore.expected_pruned_fraction(p[0], 0.2, n=9) == pytest.approx(7.5 / 9, abs=1e-3)
    assert p[1] == lpcore.p_for_sparsity(0.9, 0.2, n=256)


@pytest.mark.parametrize("k", [0.4, 1.0, 3.0])
def test_fit_gamma_shape_moments_and_per_group_scale(k):
    rng = np.random.default_rng(11)
    scale = rng.uniform(0.05, 20.0, size=(80, 1))  # a different theta per unit
    g = rng.gamma(k, size=(80, 2000)) * scale
    assert lpcore.fit_gamma_shape(g, "moments", axis=1) == pytest.approx(k, rel=0.05)
    assert lpcore.fit_gamma_shape(g, "mle", axis=1) == pytest.approx(k, rel=0.05)
    # pooled without removing the scales, the spread of theta reads as a heavier tail
    assert lpcore.fit_gamma_shape(g, "mle") < 0.9 * k
    with pytest.raises(ValueError, match="method"):
        lpcore.fit_gamma_shape(g, "median")


def test_predict_hoyer_matches_simulated_stationary_weights():
    rng = np.random.default_rng(2)
    g = rng.gamma(1.3, size=(300, 128))
    lw = np.log(g) / (1.5 - 1)
    w = np.exp(lw - lw.max(axis=1, keepdims=True))
    measured = float(np.mean(lpcore.hoyer(w, axis=1)))
    pred, k = lpcore.predict_hoyer(g, 128, 1.5, fit="moments", axis=1)
    assert k == pytest.approx(1.3, rel=0.05)
    assert pred == pytest.approx(measured, abs=0.01)
