import numpy as np
import pytest
from hypothesis import given, strategies as st

import lpcore
from lpcore.testing import assert_allclose_dtype, assert_on_sphere, tol_for
from lpcore.testing import strategies as lst
from naive import dual_ref, holder_minimizer, inv_dual_ref, norm_ref, tangent_ref


@st.composite
def point_and_vector(draw, max_p=6.0):
    p = draw(lst.p_values(max_p=max_p))
    w = draw(lst.sphere_points(p))
    g = draw(lst.float_arrays(dtype=w.dtype, shape=w.shape, scales=(1e-4, 1.0, 1e3)))
    return p, w, g


def _nu(w, p):
    w = w.astype(np.float64)
    m = np.abs(w).max(axis=1, keepdims=True)
    return np.sign(w) * (np.abs(w) / m) ** (p - 1)


@given(point_and_vector())
def test_tangent_projection_properties(backend, pwg):
    p, w, g = pwg
    t = backend(lpcore.project_tangent, w, g, p, axis=1)
    assert t.dtype == w.dtype
    tol = tol_for(w.dtype)
    nu = _nu(w, p)
    gs = np.linalg.norm(g.astype(np.float64), axis=1) + 1e-300
    ns = np.linalg.norm(nu, axis=1)
    # orthogonal to the normal
    sub = 8 * float(np.finfo(w.dtype).smallest_subnormal) * w.shape[1]
    assert np.all(np.abs(np.sum(nu * t, axis=1)) <= 20 * tol * gs * ns + sub)
    # idempotent
    assert_allclose_dtype(backend(lpcore.project_tangent, w, t, p, axis=1), t, dtype=w.dtype,
                          scale=float(gs.max()), factor=20)
    # non-expanding
    assert np.all(np.linalg.norm(t.astype(np.float64), axis=1) <= gs * (1 + 20 * tol))
    # reference
    assert_allclose_dtype(t, tangent_ref(w, g, p), dtype=w.dtype, scale=float(gs.max()), factor=20)


@given(lst.p_values(max_p=8.0), lst.dtypes(), st.data())
def test_retraction_at_zero_is_identity_and_lands_on_sphere(backend, p, dtype, data):
    w = data.draw(lst.sphere_points(p, dtype=dtype))
    r0 = backend(lpcore.retract, w, np.zeros_like(w), p, axis=1)
    assert_allclose_dtype(r0, w, dtype=dtype, scale=1.0, factor=5)
    xi = data.draw(lst.float_arrays(dtype=dtype, shape=w.shape, scales=(1e-3, 0.1)))
    assert_on_sphere(backend(lpcore.retract, w, xi, p, axis=1), p, axis=1)


@given(lst.p_values(max_p=8.0), lst.dtypes(), st.data())
def test_duality_map_round_trip_and_sphere_to_sphere(backend, p, dtype, data):
    w = data.draw(lst.sphere_points(p, dtype=dtype))
    q = p / (p - 1)
    v = backend(lpcore.to_dual, w, p)
    assert v.dtype == dtype
    assert_on_sphere(v, q, axis=1, factor=max(1.0, q / 4))
    assert_allclose_dtype(v, dual_ref(w, p), dtype=dtype, scale=1e-30, factor=max(1.0, p / 4))
    back = backend(lpcore.from_dual, v, p)
    assert_allclose_dtype(back, w, dtype=dtype, scale=float(np.abs(w).max()),
                          factor=max(2.0, 2 / (p - 1)))


@given(lst.dtypes(), st.floats(1.01, 40.0), st.data())
def test_from_dual_matches_reference_elementwise(backend, dtype, p, data):
    v = data.draw(lst.float_arrays(dtype=dtype, scales=(1e-3, 1.0), **backend.small))
    got = backend(lpcore.from_dual, v, p)
    want = inv_dual_ref(v, p)
    e = 1 / (p - 1)
    big = np.abs(want) > 1e-30
    assert_allclose_dtype(got[big], want[big], dtype=dtype, factor=max(1.0, e / 8))
    # entries that underflow stay finite and tiny, never NaN
    assert np.all(np.isfinite(got))


@given(lst.p_values(min_p=1.05, max_p=3.0), st.integers(2, 12), st.integers(0, 10 ** 6))
def test_holder_extremiser_attains_minus_dual_norm(p, n, seed):
    c = np.random.default_rng(seed).standard_normal(n)
    q = p / (p - 1)
    # the extremiser computed with lpcore's own maps: w* = -D_q(c / ||c||_q)
    w = -lpcore.from_dual(c / lpcore.norm(c, q), p)
    np.testing.assert_allclose(w, holder_minimizer(c, p), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(lpcore.norm(w, p), 1.0, rtol=1e-12)
    np.testing.assert_allclose(c @ w, -norm_ref(c, q), rtol=1e-10)
    # and no point of the sphere does better (random sphere points)
    z = lpcore.normalize(np.random.default_rng(seed + 1).standard_normal((50, n)), p, axis=1)
    assert np.all(z @ c >= c @ w - 1e-10)


def test_tangent_at_p2_is_euclidean():
    w = np.array([[0.6, 0.8]])
    g = np.array([[1.0, 0.0]])
    t = lpcore.project_tangent(w, g, 2, axis=1)
    np.testing.assert_allclose(t, g - (g @ w.T) * w, rtol=1e-15)


def test_tangent_large_p_and_tiny_weights_no_underflow():
    # (1e-30)^(p-1) underflows; relative-to-max scaling keeps the normal exact
    w = np.array([[1e-30, 2e-30, -3e-30]], dtype=np.float32)
    g = np.array([[1.0, 1.0, 1.0]], dtype=np.float32)
    t = lpcore.project_tangent(w, g, 12.0, axis=1)
    assert_allclose_dtype(t, tangent_ref(w, g, 12.0), dtype=np.float32, scale=1.0)


def test_in_place_on_gradient(rng):
    w = lpcore.normalize(rng.standard_normal((3, 5)), 1.5, axis=1)
    g = rng.standard_normal((3, 5))
    want = lpcore.project_tangent(w, g, 1.5, axis=1)
    lpcore.project_tangent(w, g, 1.5, axis=1, out=g)
    np.testing.assert_array_equal(g, want)


def test_conv_layout_axes(rng):
    w = rng.standard_normal((4, 3, 2, 2))
    y = lpcore.normalize(w, 1.2, axis=(1, 2, 3))
    assert_on_sphere(y.reshape(4, -1), 1.2, axis=1)
    # ConvTranspose layout (in, out, kh, kw): one group per output unit = axis (0, 2, 3)
    yt = lpcore.normalize(w, 1.2, axis=(0, 2, 3))
    assert_on_sphere(np.moveaxis(yt, 1, 0).reshape(3, -1), 1.2, axis=1)
    with pytest.raises(AssertionError):
        assert_on_sphere(yt.reshape(4, -1), 1.2, axis=1)
