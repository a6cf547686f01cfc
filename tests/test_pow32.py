"""The vectorised float32 power used by the CPU kernels, against float64 ``**``."""
import numpy as np
import pytest
from numba import njit

from lpcore.kernels._pow32 import FASTMATH, pow32, pow32_scaled


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _pow_all(a, e, out):
    for i in range(a.size):
        out[i] = pow32(a[i], e)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _pow_scaled_all(a, l2m, e, out):
    for i in range(a.size):
        out[i] = pow32_scaled(a[i], l2m, e)


def _sample():
    rng = np.random.default_rng(0)
    a = np.exp(rng.uniform(np.log(1e-45), np.log(3e38), 200_000)).astype(np.float32)
    return np.concatenate([a, np.float32([1.0, 2.0, 0.5, 1e-45, 1.1754944e-38, 3.4e38])])


@pytest.mark.parametrize("e", [0.05, 0.3, 1.07, 1.3, 2.0, 15.3, 40.0])
def test_relative_error_bound(e):
    a = _sample()
    out = np.empty_like(a)
    _pow_all(a, e, out)
    with np.errstate(over="ignore", under="ignore"):
        ref = a.astype(np.float64) ** e
    normal = (ref > 1.2e-38) & (ref < 3.4e38)
    rel = np.abs(out[normal] / ref[normal] - 1)
    assert rel.max() <= 6.5e-8 * max(2.0, e) * 1.2
    sub = (ref > 0) & (ref <= 1.2e-38)
    assert np.all(np.abs(out[sub] - ref[sub]) <= 32 * 1.4e-45)
    assert np.all(out[ref >= 3.5e38] == np.inf)


def test_special_values():
    a = np.float32([0.0, np.inf, np.nan, -0.0])
    out = np.empty_like(a)
    _pow_all(a, 1.3, out)
    assert out[0] == 0 and out[1] == np.inf and np.isnan(out[2]) and out[3] == 0


def test_scaled_power_matches():
    a = _sample()[:1000]
    m = np.float64(a.max())
    out = np.empty_like(a)
    _pow_scaled_all(a, np.log2(m), 1.7, out)
    ref = (a.astype(np.float64) / m) ** 1.7
    ok = ref > 1.2e-38
    np.testing.assert_allclose(out[ok], ref[ok], rtol=3e-7)
