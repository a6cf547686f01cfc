import numpy as np
import pytest
from hypothesis import given, strategies as st

import lpcore
from lpcore.kernels import CHUNK
from lpcore.testing import assert_allclose_dtype
from lpcore.testing import strategies as lst
from naive import hoyer_ref


@given(st.data())
def test_hoyer_matches_reference_and_range(backend, data):
    x, axis = data.draw(lst.grouped_arrays(min_group=2, **backend.small))
    grp_n = x.size if axis is None else int(np.prod(
        [x.shape[a] for a in ((axis,) if isinstance(axis, int) else axis)]))
    if grp_n < 2:
        return
    h = backend(lpcore.hoyer, x, axis=axis)
    assert np.asarray(h).dtype == x.dtype
    assert np.all((np.asarray(h) >= 0) & (np.asarray(h) <= 1))
    assert_allclose_dtype(h, hoyer_ref(x, axis), dtype=x.dtype, scale=1.0, factor=10)


@given(lst.float_arrays(shape=(3, 6), nonzero=True), st.integers(0, 2 ** 32 - 1))
def test_invariances(backend, x, seed):
    rng = np.random.default_rng(seed)
    h = backend(lpcore.hoyer, x, axis=1)
    signs = rng.choice(np.array([-1, 1], dtype=x.dtype), size=x.shape)
    perm = rng.permutation(x.shape[1])
    for y in (x * x.dtype.type(7.5), x * signs, x[:, perm]):
        assert_allclose_dtype(backend(lpcore.hoyer, y, axis=1), h, dtype=x.dtype, scale=1.0,
                              factor=10)


@given(lst.dtypes(), st.integers(2, 40), st.integers(0, 39), st.floats(1e-30, 1e30))
def test_one_sparse_is_one_and_constant_magnitude_is_zero(dtype, n, k, v):
    x = np.zeros(n, dtype=dtype)
    x[k % n] = v
    assert lpcore.hoyer(x) == 1.0
    c = np.full(n, v, dtype=dtype) * np.where(np.arange(n) % 3 == 0, -1, 1).astype(dtype)
    assert abs(float(lpcore.hoyer(c))) <= 1e-6


def test_all_zero_group_is_one_and_length_one_raises():
    assert lpcore.hoyer(np.zeros((2, 5)), axis=1).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="at least 2"):
        lpcore.hoyer(np.ones((4, 1)), axis=1)
    with pytest.raises(ValueError, match="at least 2"):
        lpcore.hoyer(np.ones(1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_long_groups_and_extreme_magnitudes(dtype, rng):
    x = rng.standard_normal(2 * CHUNK + 3)
    x[CHUNK + 1] = 1e3  # max in the second chunk
    for s in (1e-30, 1.0, 1e30):
        y = (x * s).astype(dtype)
        assert_allclose_dtype(lpcore.hoyer(y), hoyer_ref(y), dtype=dtype, scale=1.0, factor=10)
    big = (rng.standard_normal((300, 300)) * 1e-200)
    assert_allclose_dtype(lpcore.hoyer(big, axis=1), hoyer_ref(big, 1), np.float64, scale=1.0)


def test_layer_and_network_aggregates(rng):
    a = rng.standard_normal((4, 10))
    b = rng.standard_normal((3, 2, 3, 3))
    assert lpcore.hoyer_layer(a) == pytest.approx(np.mean(hoyer_ref(a, 1)), rel=1e-12)
    hb = np.mean(hoyer_ref(b, (1, 2, 3)))
    assert lpcore.hoyer_layer(b) == pytest.approx(hb, rel=1e-12)
    want = (a.size * np.mean(hoyer_ref(a, 1)) + b.size * hb) / (a.size + b.size)
    assert lpcore.hoyer_network([a, b]) == pytest.approx(want, rel=1e-12)
    assert lpcore.hoyer_network([a, b], axes=[1, (0, 2, 3)]) == pytest.approx(
        (a.size * np.mean(hoyer_ref(a, 1)) + b.size * np.mean(hoyer_ref(b, (0, 2, 3))))
        / (a.size + b.size), rel=1e-12)
    with pytest.raises(ValueError, match="axes"):
        lpcore.hoyer_network([a, b], axes=[1])
    with pytest.raises(ValueError, match="empty"):
        lpcore.hoyer_network([])
