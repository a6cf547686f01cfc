"""The vectorised float32 power used by the CPU kernels, against float64 ``**``."""
import numpy as np
import pytest
from numba import njit

from lpcore.kernels._dispatch import log2_for, rat_powers, scaled_powers
from lpcore.kernels._pow32 import (FASTMATH, log2_parts, pow32, pow32_scaled, rational_parts,
                                   ratpow32, wide_vectors_wanted)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _pow_all(a, e, out):
    for i in range(a.size):
        out[i] = pow32(a[i], e)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _pow_scaled_all(a, m, e, out):
    parts = log2_parts(m)
    for i in range(a.size):
        out[i] = pow32_scaled(a[i], parts, e)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _log2_all(a, k, f):
    for i in range(a.size):
        k[i], f[i] = log2_parts(a[i])


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _ratpow_all(y, m, s, den, out):
    for i in range(y.size):
        out[i] = ratpow32(y[i], m, s, den)


def _sample():
    rng = np.random.default_rng(0)
    a = np.exp(rng.uniform(np.log(1e-45), np.log(3e38), 200_000)).astype(np.float32)
    return np.concatenate([a, np.float32([1.0, 2.0, 0.5, 1e-45, 1.1754944e-38, 3.4e38])])


@pytest.mark.parametrize("e", [0.05, 0.3, 1.07, 1.3, 2.0, 10.0 / 3.0, 13.0 / 3.0, 15.3, 40.0, 64.0])
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


@pytest.mark.parametrize("e", [0.3, 1.7, 10.0 / 3.0, 13.0 / 3.0])
def test_scaled_power_matches_and_is_one_at_the_maximum(e):
    a = _sample()[:20000]
    m = a.max()
    out = np.empty_like(a)
    _pow_scaled_all(a, m, e, out)
    ref = (a.astype(np.float64) / np.float64(m)) ** e
    ok = ref > 1.2e-38
    np.testing.assert_allclose(out[ok], ref[ok], rtol=max(3e-7, 6.5e-8 * max(2.0, e) * 1.2))
    assert out[np.argmax(a)] == 1.0


def test_log2_parts_is_an_integer_and_a_small_fraction():
    a = _sample()[:-1]
    k = np.empty(a.size, np.int32)
    f = np.empty(a.size, np.float32)
    _log2_all(a, k, f)
    assert np.all(np.abs(f) <= 0.5)
    # within two float32 units in the last place of 1/2 (measured 8.3e-8)
    np.testing.assert_allclose(k + f.astype(np.float64), np.log2(a.astype(np.float64)),
                               rtol=0, atol=2 * 2.0 ** -24)


# ------------------------------------------------ exponents m + s/den: roots and products
@pytest.mark.parametrize("e", [10 / 3, 13 / 3, 4 / 3, 5 / 3, 7 / 3, 5 / 2, 7 / 2, 3 / 2, 2.0, 3.0,
                               10.0, 11.0, 20.0, 31 + 2 / 3])
def test_rational_power_relative_error_bound(e):
    m, s, den = rational_parts(e)
    assert den > 0 and abs(m + s / den - e) < 1e-12
    rng = np.random.default_rng(1)
    # ratpow32's domain: [0, 2), scaled by a power of two, all the way down
    y = np.concatenate([rng.uniform(0, 2, 100_000), np.exp2(rng.uniform(-149, 1, 100_000)),
                        [0.0, 1.0, 1.9999999, 1.1754944e-38, 1.1754942e-38, 1e-45]])
    y = y.astype(np.float32)
    out = np.empty_like(y)
    _ratpow_all(y, m, s, den, out)
    with np.errstate(under="ignore"):
        ref = y.astype(np.float64) ** e
    normal = ref > 1.2e-38
    rel = np.abs(out[normal] / ref[normal] - 1)
    assert rel.max() <= 6.5e-8 * max(2.0, e) * 1.2  # pow32's bound at the same exponent
    assert np.all(np.abs(out[~normal] - ref[~normal]) <= 1.2e-38)  # at most the normal minimum
    assert np.all(out[y < 1.1754944e-38] == 0) and np.all(out[y == 1] == 1)


def test_rational_parts_finds_halves_and_thirds_only():
    for p, a in ((1.3, (3, 1, 3)), (1.5, (2, 0, 1)), (1.4, (2, 1, 2)), (1.25, (4, 0, 1)),
                 (4 / 3, (3, 0, 1)), (1.6, (1, 2, 3)), (1.1, (10, 0, 1))):
        assert rational_parts(1 / (p - 1)) == a, p
    assert rational_parts(1.3 / 0.3) == (4, 1, 3)
    for e in (1 / (1.37 - 1), 1.37 / 0.37, 1 / 0.7, 0.5, 1.0, 32.0, 40.0, np.inf, np.nan):
        assert rational_parts(e) == (0, 0, 0), e


# ------------------------------------------------ the power loops at AVX-512's width
@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _scaled_powers_of(a, m, e, signed, out):
    scaled_powers(a, out, 1.0 / m, log2_for(m, a), e, signed)


def _signed_sample(lo):
    rng = np.random.default_rng(2)
    y = np.concatenate([rng.uniform(lo, 2, 3000), np.exp2(rng.uniform(-149, 0, 3000)),
                        [0.0, 1.0, 1.1754944e-38, 1e-45]])
    y = y * rng.choice([-1.0, 1.0], y.size)
    return y.astype(np.float32)


@pytest.mark.parametrize("e", [10 / 3, 13 / 3, 5 / 2, 3.0, 31 + 2 / 3])
def test_rat_powers_equal_the_inlined_power_bit_for_bit(e):
    """``rat_powers`` runs its loop 512 bits wide where the CPU has AVX-512;
    each entry's operations are the inlined :func:`ratpow32`'s, so the
    results must be identical, not merely close (lengths that leave a
    remainder of every width)."""
    m, s, den = rational_parts(e)
    for y in (_signed_sample(0.0), _signed_sample(0.0)[:37]):
        out = np.empty_like(y)
        rat_powers(y, out, np.float32(1.0), m, s, den)
        ref = np.empty_like(y)
        _ratpow_all(np.abs(y), m, s, den, ref)
        ref = np.where(y < 0, -ref, ref)
        assert np.array_equal(out.view(np.int32), ref.view(np.int32)), e


@pytest.mark.parametrize("e", [0.3, 1 / 0.37, 1.37 / 0.37, 15.3])
def test_scaled_powers_equal_the_inlined_power_bit_for_bit(e):
    y = _signed_sample(0.0)
    mx = np.float32(np.abs(y).max())
    ref = np.empty_like(y)
    _pow_scaled_all(np.abs(y), mx, e, ref)
    for signed in (False, True):
        for part in (y, y[:37]):
            out = np.empty_like(part)
            _scaled_powers_of(part, mx, e, signed, out)
            want = ref[:part.size]
            want = np.where(part < 0, -want, want) if signed else want
            assert np.array_equal(out.view(np.int32), want.view(np.int32)), (e, signed)


def test_the_power_loops_ask_for_512_bit_vectors():
    """``prefer_wide_vectors`` puts LLVM's attribute on the function it is
    compiled into (not for the CPUs whose AVX-512 lowers the clock); on a
    host with AVX-512 (and numba not told another CPU) the loop then uses
    the 512-bit registers."""
    import llvmlite.binding as ll
    from numba.core import config

    from lpcore.kernels._dispatch import rat_powers as rp
    fresh = njit(fastmath=FASTMATH, error_model="numpy")(rp.py_func)
    y = _signed_sample(0.0)
    fresh(y, np.empty_like(y), np.float32(1.0), 3, 1, 3)
    sig = fresh.signatures[0]
    wide = wide_vectors_wanted()
    assert ('"prefer-vector-width"="512"' in fresh.inspect_llvm(sig)) == wide
    if not wide or "+avx512f" not in ll.get_host_cpu_features().flatten() \
            or config.CPU_NAME or config.CPU_FEATURES:
        pytest.skip("no AVX-512 on this host, or numba told another CPU, or one that "
                    "keeps 256 bits")
    assert "zmm" in fresh.inspect_asm(sig)


def test_skylake_server_cpus_keep_256_bit_vectors():
    for cpu in ("skylake-avx512", "cascadelake", "cooperlake", "knl"):
        assert not wide_vectors_wanted(cpu), cpu
    for cpu in ("icelake-server", "sapphirerapids", "emeraldrapids", "znver4", "haswell",
                "x86-64-v3", "generic"):
        assert wide_vectors_wanted(cpu), cpu
