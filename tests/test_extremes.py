"""Finite input, finite and correct output at the ends of the floating-point
range: subnormal groups, overflowing norms, and the Lp-ball projection for
huge p, far-away points and tiny radii (issue: hostile inputs).  On the CPU,
and on GPU arrays when numba.cuda has a GPU or the simulator (the
simulator step of ``.ci/run`` runs this file too)."""
import math

import numpy as np
import pytest

import lpcore
from naive import ball_certificate


@pytest.fixture
def on(backend):
    """Run a public function on the backend (``tests/conftest.py``); a host result."""
    return backend


SUB = [np.array([1e-310, 1e-310]), np.array([3e-310, -4e-310, 0.0, 5e-324]),
       np.array([[2e-320, 1e-309], [1.0, 2.0]])]
LIFT = 2.0 ** 600  # exact scaling of float64 subnormals into the normal range


@pytest.mark.parametrize("x", SUB)
@pytest.mark.parametrize("p", [1.0, 1.5, 2.0, 3.0, np.inf])
def test_subnormal_norm_is_the_scaled_norm(on, x, p):
    got = on(lpcore.norm, x, p, axis=-1)
    want = lpcore.norm(x * LIFT, p, axis=-1) / LIFT
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert np.all(got > 0)


@pytest.mark.parametrize("x", SUB)
def test_subnormal_hoyer_normalize_retract(on, x):
    np.testing.assert_allclose(on(lpcore.hoyer, x, axis=-1), lpcore.hoyer(x * LIFT, axis=-1),
                               rtol=1e-12)
    for p in (1.0, 1.5, 2.0):
        want = lpcore.normalize(x * LIFT, p, axis=-1)
        np.testing.assert_allclose(on(lpcore.normalize, x, p, axis=-1), want, rtol=1e-12)
        np.testing.assert_allclose(on(lpcore.retract, x, x, p, axis=-1), want, rtol=1e-12)


def test_subnormal_w_in_project_tangent(on):
    w = np.array([3e-310, -4e-310, 1e-311])
    g = np.array([1.0, 2.0, -0.5])
    for p in (1.3, 2.0, 4.0):
        np.testing.assert_allclose(on(lpcore.project_tangent, w, g, p),
                                   lpcore.project_tangent(w * LIFT, g, p), rtol=1e-12)


@pytest.mark.parametrize("x,p,dtype", [(np.array([1.7e308] * 3), 1.0, "float64"),
                                       (np.array([1.5e308, 1.5e308]), 2.0, "float64"),
                                       (np.array([3e38] * 3, np.float32), 1.0, "float32")])
def test_overflowing_norm_says_overflow(on, x, p, dtype):
    with pytest.raises(ValueError, match=f"overflows {dtype}.*data are finite"):
        on(lpcore.norm, x, p)
    # the direction is still defined
    np.testing.assert_allclose(on(lpcore.normalize, x, p), lpcore.normalize(x / x.max(), p),
                               rtol=1e-6)


BALL = [  # (y, p, radius, expected or None): the reproducers and relatives
    (np.array([3.0, 1.0]), 1000.0, 1.0, None),
    (np.array([1e30, 1e30]), 12.0, 1.0, np.full(2, 2.0 ** (-1 / 12))),
    (np.array([3e38, 1.0], np.float32), 10.0, 1.0, None),
    (np.array([3e-310, 4e-310]), 2.0, 1e-310, np.array([6e-311, 8e-311])),
    (np.array([3e-310, 4e-310]), 1.5, 1e-310, None),
    (np.array([1e300, 1.0, -5e299]), 1.0, 1e-10, np.array([1e-10, 0.0, 0.0])),
    (np.array([1e300, 1e299]), 1.5, 1e-10, None),
    (np.array([1e300, -1e300, 1e-300]), 3.0, 1e-200, None),
    (np.array([5.0, 1e-300, 2.0]), 1.0001, 1e3, None),
]


@pytest.mark.parametrize("y,p,r,want", BALL)
def test_ball_extremes_are_finite_feasible_optimal(on, y, p, r, want):
    x = on(lpcore.project_ball, y, p, radius=r)
    assert np.all(np.isfinite(x)), x
    if want is not None:
        np.testing.assert_allclose(x, want, rtol=1e-12)
    x64 = x.astype(np.float64)
    y64 = y.astype(np.float64)
    nrm = lpcore.norm(x64 / r, p) if np.any(x64) else 0.0
    s = float(np.max(np.abs(y64)))  # everything below in units of max |y|
    inside = lpcore.norm(y64 / s, p) <= r / s
    assert nrm <= 1.0 + 1e-6 if inside else abs(nrm - 1.0) <= 1e-6 * (10 if p > 100 else 1)
    # the optimality certificate r ||y - x||_q - <y - x, x> <= 0, relative to its first term
    gap, _ = ball_certificate(y64 / s, x64 / s, p, r / s)
    q = np.inf if p == 1 else p / (p - 1)
    first = r / s * lpcore.norm((y64 - x64) / s, q) if not inside else 1.0
    assert gap <= (1e-9 if y.dtype == np.float64 else 1e-5) * max(first, 1e-300)


@pytest.mark.parametrize("p", [200.0, 500.0, 1000.0, 1e4, 1e6])
def test_ball_large_p_tends_to_the_inf_ball(on, p):
    y = np.random.default_rng(0).normal(size=(3, 40))
    x = on(lpcore.project_ball, y, p, radius=0.5, axis=1)
    assert np.all(np.isfinite(x))
    np.testing.assert_allclose(lpcore.norm(x, p, axis=1), 0.5, rtol=1e-9)
    clip = np.clip(y, -0.5, 0.5)
    # ||x - clip||_inf shrinks like log(n)/p
    assert np.max(np.abs(x - clip)) <= 0.5 * (1 - 40.0 ** (-1 / p)) * 4 + 1e-12
    assert math.isfinite(float(np.sum(x)))


# ---------------------------------------------------------------- huge finite p
HUGE_P = [1e6, 1e9, 1e11, 1e13, 1e17, 2.0 ** 59, 1e30, 1e300]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", HUGE_P)
def test_huge_finite_p_tends_to_the_max_norm(on, p, dtype):
    """A finite p, however large, gives the p-norm (-> max |x|), never a false
    "NaN or Inf" or "all zero" (the maximum's own power was lost: log2 of the
    max computed two ways in float32, (1 - 2**-53)**p underflowing in float64)."""
    x = np.random.default_rng(3).standard_normal((3, 37)).astype(dtype)
    m = np.abs(x).max(axis=1)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    n = on(lpcore.norm, x, p, axis=1)
    np.testing.assert_allclose(n, m, rtol=max(tol, math.log(37) / p))
    assert np.all(n >= m * (1 - tol))
    r = on(lpcore.normalize, x, p, axis=1)
    assert np.all(np.isfinite(r))
    np.testing.assert_allclose(np.abs(r).max(axis=1), 1.0, rtol=max(tol, math.log(37) / p))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [1e9, 1e13, 1e30])
def test_lpsgd_step_at_huge_p_stays_on_the_sphere(p, dtype):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((4, 33)).astype(dtype)
    opt = lpcore.LpSGD(p, 0.1, momentum=0.9)
    st = opt.init(w, axis=1)
    for _ in range(3):
        opt.step(w, rng.standard_normal(w.shape).astype(dtype), st)
    assert np.all(np.isfinite(w)) and np.all(np.isfinite(st.dual))
    np.testing.assert_allclose(np.abs(w).max(axis=1), 1.0, rtol=1e-5)
