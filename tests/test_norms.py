import numpy as np
import pytest
from hypothesis import given, strategies as st

import lpcore
from lpcore.kernels import CHUNK, PAR_MIN_SIZE
from lpcore.testing import assert_allclose_dtype, assert_on_sphere
from lpcore.testing import strategies as lst
from naive import norm_ref, normalize_ref


@given(st.data(), st.one_of(lst.p_values(min_p=0.3, include_one=True, include_inf=True)))
def test_norm_matches_reference(backend, data, p):
    x, axis = data.draw(lst.grouped_arrays(**backend.small))
    got = backend(lpcore.norm, x, p, axis=axis)
    want = norm_ref(x, p, axis)
    assert np.asarray(got).dtype == x.dtype
    # the float32 power's relative error grows like 6e-8 * p
    assert_allclose_dtype(got, want, dtype=x.dtype, factor=_pfactor(p))
    assert np.all(np.asarray(got) >= 0)


def _pfactor(p):
    return 1.0 if np.isinf(p) else max(1.0, p / 8)


@given(st.data(), lst.p_values(include_one=True, include_inf=True))
def test_normalize_lands_on_sphere(backend, data, p):
    x, axis = data.draw(lst.grouped_arrays(nonzero=True, **backend.small))
    y = backend(lpcore.normalize, x, p, axis=axis)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert_on_sphere(y, p, axis=axis if axis is not None else None, factor=_pfactor(p))
    assert_allclose_dtype(y, normalize_ref(x, p, axis), dtype=x.dtype, scale=1.0)


@given(st.data(), lst.p_values(include_one=True))
def test_normalize_is_idempotent_and_scale_invariant(backend, data, p):
    x, axis = data.draw(lst.grouped_arrays(nonzero=True, **backend.small))
    y = backend(lpcore.normalize, x, p, axis=axis)
    assert_allclose_dtype(backend(lpcore.normalize, y, p, axis=axis), y, dtype=x.dtype,
                          scale=1.0)
    assert_allclose_dtype(backend(lpcore.normalize, x * x.dtype.type(-3), p, axis=axis), -y,
                          dtype=x.dtype, scale=1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_q15_gradient_scale_does_not_underflow(dtype, rng):
    # p = 1.07 -> q = 15.3: naive sum |g|^q of 1e-4 gradients is 0 in float32
    p = 1.07
    q = p / (p - 1)
    g = (rng.standard_normal((8, 300)) * 1e-4).astype(dtype)
    got = lpcore.norm(g, q, axis=1)
    assert np.all(got > 0)
    assert_allclose_dtype(got, norm_ref(g, q, 1), dtype=dtype, factor=2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_extreme_magnitudes(dtype, scale, rng):
    x = (rng.standard_normal((5, 50)) * scale).astype(dtype)
    for p in (1.0, 1.3, 2.0, 40.0, np.inf):
        assert_allclose_dtype(lpcore.norm(x, p, axis=1), norm_ref(x, p, 1), dtype=dtype, factor=5)
        assert_on_sphere(lpcore.normalize(x, p, axis=1), p, axis=1, factor=5)


def test_subnormal_float32_group_normalizes():
    x = np.full((1, 4), 1e-42, dtype=np.float32)
    y = lpcore.normalize(x, 2, axis=1)
    assert np.all(np.isfinite(y))
    assert_on_sphere(y, 2, axis=1, factor=10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [1.0, 1.3, 2.0, np.inf])
def test_long_group_multi_chunk_and_parallel(dtype, p, rng):
    # one group longer than a chunk (two-stage reduction) and a big 2-D case
    v = rng.standard_normal(3 * CHUNK + 17).astype(dtype)
    v[5] = 40.0  # the max sits in the first chunk only
    assert_allclose_dtype(lpcore.norm(v, p), norm_ref(v, p), dtype=dtype)
    X = rng.standard_normal((64, PAR_MIN_SIZE // 32)).astype(dtype)
    assert_allclose_dtype(lpcore.norm(X, p, axis=1), norm_ref(X, p, 1), dtype=dtype)
    assert_on_sphere(lpcore.normalize(X, p, axis=1), p, axis=1)


@pytest.mark.parametrize("n", [255, 256, 511, 512, 513, 1500])
@pytest.mark.parametrize("p", [1.3, 4.5])
def test_float32_power_blocks_cover_every_entry(n, p, rng):
    # float32 power sums run in blocks of 512 from 256 entries on: lengths
    # around the block edges, the maximum in the last entry
    x = rng.standard_normal((3, n)).astype(np.float32)
    x[:, -1] = 9.0
    assert_allclose_dtype(lpcore.norm(x, p, axis=1), norm_ref(x, p, 1), dtype=np.float32)
    assert_on_sphere(lpcore.normalize(x, p, axis=1), p, axis=1)


def test_edge_shapes(rng):
    e = np.zeros((0, 3))
    assert lpcore.norm(e, 2, axis=1).shape == (0,)
    assert lpcore.norm(e, 2, axis=0).tolist() == [0.0, 0.0, 0.0]
    assert lpcore.normalize(e, 2, axis=1).shape == (0, 3)
    assert float(lpcore.norm(np.zeros(0), 2)) == 0.0
    row = rng.standard_normal((1, 9))
    col = rng.standard_normal((9, 1))
    assert_allclose_dtype(lpcore.norm(row, 1.5, axis=1), norm_ref(row, 1.5, 1), np.float64)
    assert_allclose_dtype(lpcore.norm(col, 1.5, axis=1), np.abs(col[:, 0]), np.float64)
    assert_allclose_dtype(lpcore.normalize(col, 1.5, axis=1), np.sign(col), np.float64)
    # scalar input, axis=None
    assert float(lpcore.norm(np.float64(-3.0), 2)) == 3.0


def test_keepdims_and_axis_forms(rng):
    x = rng.standard_normal((3, 4, 5))
    for axis in [None, 0, -1, (0, 2), (2, 0), (1,)]:
        got = lpcore.norm(x, 1.5, axis=axis, keepdims=True)
        want = np.linalg.norm(x.reshape(-1), 1.5) if axis is None else None
        assert got.ndim == 3
        if want is not None:
            assert_allclose_dtype(got.reshape(()), want, np.float64)
        else:
            assert_allclose_dtype(got, np.expand_dims(norm_ref(x, 1.5, axis), axis), np.float64)


def test_views_fortran_and_integer_inputs(rng):
    base = rng.standard_normal((6, 10))
    for x in (base[:, ::2], base.T, np.asfortranarray(base), base[::-1, 1:7]):
        assert_allclose_dtype(lpcore.norm(x, 1.3, axis=1), norm_ref(x, 1.3, 1), np.float64)
        assert_on_sphere(lpcore.normalize(x, 1.3, axis=0), 1.3, axis=0)
    xi = np.array([[3, -4], [0, 2]])
    r = lpcore.norm(xi, 2, axis=1)
    assert r.dtype == np.float64 and r.tolist() == [5.0, 2.0]
    assert lpcore.norm(np.array([True, False, True]), 1) == 2.0
    h = np.array([3.0, 4.0], dtype=np.float16)
    assert lpcore.normalize(h, 2).dtype == np.float16


def test_out_and_in_place(rng):
    x = rng.standard_normal((4, 7)).astype(np.float32)
    want = lpcore.normalize(x, 1.3, axis=1)
    out = np.empty_like(x)
    r = lpcore.normalize(x, 1.3, axis=1, out=out)
    assert r is out
    np.testing.assert_array_equal(out, want)
    x2 = x.copy()
    lpcore.normalize(x2, 1.3, axis=1, out=x2)
    np.testing.assert_array_equal(x2, want)
    # out in float64 for a float32 input is allowed (same-kind cast)
    o64 = np.empty(x.shape)
    lpcore.normalize(x, 1.3, axis=1, out=o64)
    np.testing.assert_array_equal(o64, want.astype(np.float64))
    # non-trailing axis with out: written through the transposed view
    o = np.empty_like(x)
    lpcore.normalize(x, 2, axis=0, out=o)
    np.testing.assert_allclose(o, x / np.linalg.norm(x.astype(np.float64), axis=0), rtol=1e-6)
    # out overlapping the input by a shift: computed via a temporary
    buf = rng.standard_normal(12)
    src = buf[:10].copy()
    lpcore.normalize(buf[:10], 2, out=buf[2:])
    np.testing.assert_allclose(buf[2:], src / np.linalg.norm(src), rtol=1e-12)


def test_zero_groups_keep_or_raise():
    x = np.array([[0.0, 0.0], [3.0, 4.0]])
    y = lpcore.normalize(x, 2, axis=1, zero="keep")
    np.testing.assert_allclose(y, [[0, 0], [0.6, 0.8]], rtol=1e-15)
    with pytest.raises(ValueError, match=r"all zero in group \(0,\)"):
        lpcore.normalize(x, 2, axis=1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [5, 3 * CHUNK + 5, (1 << 18) + 7])  # NumPy's side, the kernel's
def test_all_finite(dtype, size, rng):
    x = rng.standard_normal(size).astype(dtype)
    assert lpcore.all_finite(x) and lpcore.all_finite(np.zeros(0))
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[-1] = bad
        assert not lpcore.all_finite(y)
        assert not lpcore.all_finite(y.reshape(-1, 1)[::-1])
    assert lpcore.all_finite(np.arange(5))


def test_a_shared_grouping_never_lets_a_bad_axis_through():
    """The groupings are cached by shape and axis: ``True`` and ``1.0`` equal
    ``1`` to a dict, and must still be refused after ``axis=1`` was used."""
    x = np.ones((3, 4))
    lpcore.norm(x, 2, axis=1)
    lpcore.norm(x, 2, axis=(1,))
    for bad in (True, 1.0, (True,), (1.0,)):
        with pytest.raises(TypeError, match="axis must be"):
            lpcore.norm(x, 2, axis=bad)
    assert lpcore.norm(x, 2, axis=[1]).shape == (3,)  # a list is not cached, still works
