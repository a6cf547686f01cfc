"""Ramanujan gap and weighted spectral gap against dense SVD (NumPy)."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays

import lpcore


def ref_gaps(w, mask):
    """Plain NumPy: the layer as (outputs x fan-in), dense SVD."""
    b = (mask.reshape(mask.shape[0], -1) != 0).astype(float)
    s = np.linalg.svd(b, compute_uv=False)
    s2 = s[1] if s.size > 1 else 0.0
    d = 2 * b.sum() / sum(b.shape)
    ram = 2 * math.sqrt(d - 1) - s2 if d >= 1 else math.nan
    sw = np.linalg.svd(np.abs(w.reshape(w.shape[0], -1)) * b, compute_uv=False)
    return ram, sw[0] - (sw[1] if sw.size > 1 else 0.0)


shapes = st.tuples(st.integers(1, 12), st.integers(1, 12))


@given(shapes.flatmap(lambda s: st.tuples(
    arrays(np.bool_, s), arrays(np.float64, s, elements=st.floats(-5, 5)))))
def test_small_layers_match_dense_svd(mw):
    mask, w = mw
    ram, wsg = ref_gaps(w, mask)
    got = lpcore.ramanujan_gap(mask)
    assert (math.isnan(got) and math.isnan(ram)) or got == pytest.approx(ram, abs=1e-9)
    assert lpcore.weighted_spectral_gap(w, mask) == pytest.approx(wsg, abs=1e-9)


@pytest.mark.parametrize("shape, sparsity", [((80, 120), 0.5), ((130, 70), 0.9), ((256, 784), 0.95)])
def test_lanczos_path_matches_dense_svd(shape, sparsity):
    """Layers beyond the dense cut-off go through the sparse Lanczos solver."""
    rng = np.random.default_rng(1)
    mask = rng.random(shape) >= sparsity
    w = rng.standard_normal(shape)
    ram, wsg = ref_gaps(w, mask)
    assert lpcore.ramanujan_gap(mask) == pytest.approx(ram, rel=1e-8, abs=1e-8)
    assert lpcore.weighted_spectral_gap(w, mask) == pytest.approx(wsg, rel=1e-8)
    s = lpcore.top_singular_values(np.abs(w) * mask, 3)
    np.testing.assert_allclose(s, np.linalg.svd(np.abs(w) * mask, compute_uv=False)[:3], rtol=1e-8)


def test_conv_weights_are_outputs_by_fan_in():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((8, 3, 3, 3))
    mask = rng.random(w.shape) > 0.6
    ram, wsg = ref_gaps(w, mask)
    assert lpcore.ramanujan_gap(mask) == pytest.approx(ram)
    assert lpcore.weighted_spectral_gap(w, mask) == pytest.approx(wsg)
    # the fan-in axes can be given: (in, out) layout of a transposed weight
    assert lpcore.weighted_spectral_gap(w.reshape(8, -1).T, mask.reshape(8, -1).T, axis=0) == \
        pytest.approx(wsg)


def test_known_values():
    assert lpcore.ramanujan_gap(np.ones((4, 6), bool)) == pytest.approx(2 * math.sqrt(3.8))  # mu = 0
    # a perfect matching: d = 1, every singular value 1
    assert lpcore.ramanujan_gap(np.eye(5, dtype=bool)) == pytest.approx(-1.0)
    assert math.isnan(lpcore.ramanujan_gap(np.zeros((5, 5), bool)))  # d = 0 < 1
    assert lpcore.weighted_spectral_gap(np.diag([3.0, 1.0])) == 2.0
    assert lpcore.weighted_spectral_gap(np.zeros((3, 4))) == 0.0
    w = np.arange(12.0).reshape(3, 4)
    assert lpcore.weighted_spectral_gap(w, np.zeros_like(w, bool)) == 0.0


def test_deterministic_and_input_untouched():
    rng = np.random.default_rng(3)
    mask = rng.random((100, 200)) > 0.8
    w = rng.standard_normal((100, 200))
    mc, wc = mask.copy(), w.copy()
    assert lpcore.weighted_spectral_gap(w, mask) == lpcore.weighted_spectral_gap(w, mask)
    assert lpcore.ramanujan_gap(mask) == lpcore.ramanujan_gap(mask)
    assert np.array_equal(mask, mc) and np.array_equal(w, wc)


def test_low_rank_layers_give_the_same_numbers_every_call():
    """A complete layer is rank 1, so ARPACK restarts from random vectors;
    through ``svds`` (no generator) its sigma_2 came out 1e-29 .. 1e-28 and
    its sigma_1 differed in the last bits from call to call, so metrics.json
    differed between identical runs (CI, 2026-12-04).  Now sigma_2 is exactly
    0 and every call gives the same bits, in one process and across orders."""
    complete = np.ones((128, 640), bool)
    rank2 = np.add.outer(np.arange(150) % 2, np.arange(300) % 3) > 1
    first = [lpcore.top_singular_values(b) for b in (complete, rank2)]
    for _ in range(3):
        for b, s in zip((rank2, complete), first[::-1]):
            assert np.array_equal(lpcore.top_singular_values(b), s)
    assert first[0][1] == 0.0 and first[0][0] == pytest.approx(math.sqrt(128 * 640), rel=1e-14)
    assert lpcore.ramanujan_gaps(complete)["lambda2"] == 0.0
    assert lpcore.ramanujan_gaps(complete)["delta_s_normalized"] == 1.0
    # the rank-revealing cut leaves genuine small singular values alone
    tiny = np.diag([1.0, 1e-9] + [0.0] * 98)
    assert lpcore.top_singular_values(tiny)[1] == pytest.approx(1e-9)


@pytest.mark.parametrize("call, err, match", [
    (lambda: lpcore.ramanujan_gap(np.ones(5, bool)), ValueError, "2 dimensions"),
    (lambda: lpcore.weighted_spectral_gap(np.array([[1.0, np.nan]])), ValueError, "NaN"),
    (lambda: lpcore.weighted_spectral_gap(np.ones((2, 3)), np.ones((3, 2), bool)), ValueError,
     "mask has shape"),
    (lambda: lpcore.weighted_spectral_gap(np.ones((2, 3), complex)), TypeError, "real"),
    (lambda: lpcore.ramanujan_gap(np.ones((2, 3)), axis=True), TypeError, "axis"),
])
def test_bad_input_is_named(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_hoyer_report_and_metrics_carry_the_gaps(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    import json
    import lpcore_torch
    from lpcore_torch import cli

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.ReLU(), torch.nn.Conv1d(20, 6, 1))
    with torch.no_grad():
        net[0].weight.mul_((torch.rand(20, 10) > 0.5).float())
    rows = lpcore_torch.hoyer_report(net, spectral=True)
    w = net[0].weight.detach().numpy()
    assert rows[0]["ramanujan_gap"] == pytest.approx(lpcore.ramanujan_gap(w != 0))
    assert rows[0]["weighted_spectral_gap"] == pytest.approx(lpcore.weighted_spectral_gap(w))
    assert "ram.gap" in str(rows) and "ramanujan_gap" not in lpcore_torch.hoyer_report(net)[0]
    out = tmp_path / "run"
    assert cli.main(["--epochs", "1", "--quiet", "--out", str(out)]) == 0
    for layer in json.loads((out / "metrics.json").read_text())["layers"]:
        assert {"ramanujan_gap", "weighted_spectral_gap"} <= layer.keys()


def test_repeated_singular_values_do_not_stop_lanczos():
    """ARPACK error 3 on valid input: an identity of 65, a permuted identity
    of 100, weighted_spectral_gap(eye(100)); now a dense fallback."""
    perm = np.eye(100, dtype=bool)[np.random.default_rng(0).permutation(100)]
    assert lpcore.ramanujan_gap(np.eye(65, dtype=bool)) == pytest.approx(-1.0)
    assert lpcore.ramanujan_gap(perm) == pytest.approx(-1.0)
    assert lpcore.weighted_spectral_gap(np.eye(100)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("k", [-1, 0, 10**12, 2.5, True])
def test_top_singular_values_refuses_a_bad_k(k):
    with pytest.raises(ValueError, match="k must be an integer"):
        lpcore.top_singular_values(np.ones((3, 4)), k)


def test_nan_and_empty_inputs_are_refused_plainly(capfd):
    bad = np.full((3, 3), np.nan)
    for f in (lpcore.ramanujan_gap, lpcore.weighted_spectral_gap, lpcore.top_singular_values):
        with pytest.raises(ValueError, match="NaN or Inf"):
            f(bad)
    with pytest.raises(ValueError, match="no channels"):
        lpcore.channel_sparsity([np.zeros((0, 3), bool)])
    assert capfd.readouterr().err == ""  # no ARPACK/LAPACK noise


def test_p_for_sparsity_refuses_what_it_cannot_compute():
    with pytest.raises(ValueError, match="Monte Carlo draws"):
        lpcore.p_for_sparsity(0.9, 0.2, n=10**12)
    with pytest.raises(ValueError, match="target, h and n do not broadcast"):
        lpcore.p_for_sparsity([0.9, 0.8, 0.7], 0.2, n=[30, 40])
    with pytest.raises(TypeError, match="n must be an integer"):
        lpcore.p_for_sparsity(0.9, 0.2, n=[[3, 4], [5]])
