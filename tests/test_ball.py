import numpy as np
import pytest
from hypothesis import given, strategies as st

import lpcore
from lpcore.testing import strategies as lst
from naive import (ball_certificate, norm_ref, project_l1_ref, project_l2_ref,
                   project_linf_ref)

REFS = {1.0: project_l1_ref, 2.0: project_l2_ref, np.inf: project_linf_ref}


@given(lst.float_arrays(shape=(3, 7), scales=(1e-3, 1.0, 1e3)),
       st.sampled_from([1.0, 2.0, np.inf]), st.floats(0.05, 5.0))
def test_closed_forms(backend, y, p, r):
    x = backend(lpcore.project_ball, y, p, radius=r, axis=1)
    assert x.dtype == y.dtype
    tol = 1e-5 if y.dtype == np.float32 else 1e-12
    for i in range(y.shape[0]):
        want = REFS[p](y[i].astype(np.float64), r)
        np.testing.assert_allclose(x[i], want, rtol=tol, atol=tol * max(1.0, np.abs(y).max()))


@given(lst.float_arrays(dtype=np.float64, shape=(2, 6), scales=(1e-3, 1.0, 1e3)),
       st.one_of(st.floats(1.0005, 1.3), st.floats(1.3, 2.5), st.floats(2.5, 30.0)),
       st.floats(0.05, 5.0))
def test_general_p_is_feasible_optimal_and_idempotent(backend, y, p, r):
    x = backend(lpcore.project_ball, y, p, radius=r, axis=1)
    scale = max(1.0, float(np.abs(y).max()))
    for i in range(y.shape[0]):
        gap, nx = ball_certificate(y[i], x[i], p, r)
        assert nx <= r * (1 + 1e-10)
        # variational inequality: <y - x, z - x> <= tol for every z in the ball
        assert gap <= 1e-8 * scale * max(r, 1.0), (gap, p, r)
        if norm_ref(y[i], p) > r:
            assert nx == pytest.approx(r, rel=1e-9)
            # p > 1 creates no exact zeros in exact arithmetic; a small entry's
            # t ~ (|y_i|/max)^(1/(p-1)) can underflow float64 near p = 1 or for
            # tiny ratios, so check where both are moderate
            if p >= 1.1:
                big = np.abs(y[i]) > 1e-8 * np.abs(y[i]).max()
                assert np.all(x[i][big] != 0)
            assert np.all(x[i][y[i] == 0] == 0)
        else:
            np.testing.assert_array_equal(x[i], y[i])
    np.testing.assert_allclose(backend(lpcore.project_ball, x, p, radius=r, axis=1), x,
                               rtol=1e-9, atol=1e-12 * scale)


@given(st.floats(1.01, 4.0), st.integers(0, 10 ** 6))
def test_float32_general_p(p, seed):
    y = np.random.default_rng(seed).standard_normal((4, 9)).astype(np.float32)
    x = lpcore.project_ball(y, p, axis=1)
    assert x.dtype == np.float32
    for i in range(4):
        gap, nx = ball_certificate(y[i], x[i], p, 1.0)
        assert nx <= 1 + 1e-5 and gap <= 1e-5 * np.abs(y).max()


def test_continuity_near_p_one(rng):
    # the projection onto B_p tends to the soft-threshold one as p -> 1+
    y = rng.standard_normal(20)
    x1 = lpcore.project_ball(y, 1.0)
    xp = lpcore.project_ball(y, 1.0005)
    assert np.max(np.abs(x1 - xp)) < 0.05


def test_radius_zero_inside_and_layouts(rng):
    y = rng.standard_normal((3, 4))
    assert np.all(lpcore.project_ball(y, 1.5, radius=0.0, axis=1) == 0)
    small = y / 100
    np.testing.assert_array_equal(lpcore.project_ball(small, 1.5, axis=1), small)
    yt = np.asfortranarray(y)
    np.testing.assert_allclose(lpcore.project_ball(yt, 1.7, axis=0),
                               lpcore.project_ball(y.T.copy(), 1.7, axis=1).T, rtol=1e-13)
    out = y.copy()
    lpcore.project_ball(out, 1.7, axis=1, out=out)
    np.testing.assert_allclose(out, lpcore.project_ball(y, 1.7, axis=1), rtol=1e-15)
    big = rng.standard_normal((40, 300))  # parallel path
    xb = lpcore.project_ball(big, 1.3, axis=1)
    np.testing.assert_allclose(norm_ref(xb, 1.3, 1), 1.0, rtol=1e-9)
