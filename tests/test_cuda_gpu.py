"""What only a real GPU shows: the CUDA kernels at production size and launch
geometry (many warps per block, thousands of blocks), run-to-run determinism
(a race shows as a result that moves), and zero-copy exchange with real
PyTorch / CuPy device memory through ``__cuda_array_interface__`` and DLPack.

Skipped under the CUDA simulator and without a GPU (the simulator cannot run
these sizes, nor wrap foreign device memory).  On a GPU::

    HYPOTHESIS_PROFILE=sim LPCORE_CUDA_EXAMPLES=100 python -m pytest tests -m cuda
"""
import os

import numpy as np
import pytest

from numba import cuda

import lpcore
from lpcore import _device as D
from lpcore.testing import assert_allclose_dtype, assert_on_sphere
from naive import hoyer_ref, norm_ref, normalize_ref

if D.simulated() or not cuda.is_available():
    if os.environ.get("LPCORE_REQUIRE_GPU"):
        raise RuntimeError("LPCORE_REQUIRE_GPU is set but numba.cuda sees no real GPU")
    pytest.skip("needs a real CUDA GPU", allow_module_level=True)

pytestmark = pytest.mark.cuda

DTYPES = [np.float32, np.float64]
PS = [1.0, 1.3, 2.0, 3.0, np.inf]


@pytest.fixture(scope="module")
def big():
    rng = np.random.default_rng(2026)
    return {dt: (rng.standard_normal((300, 5003)).astype(dt),
                 (rng.standard_normal(3_000_001) * 1e-3).astype(dt)) for dt in DTYPES}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", PS)
def test_norms_at_scale(big, dtype, p):
    X, v = big[dtype]
    for x, axis in ((X, 1), (X, 0), (v, None)):
        got = lpcore.norm(cuda.to_device(x), p, axis=axis).copy_to_host()
        assert_allclose_dtype(got, norm_ref(x, p, axis), dtype=dtype, factor=4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_hoyer_normalize_dual_at_scale(big, dtype):
    X, v = big[dtype]
    for x, axis in ((X, 1), (v, None)):
        d = cuda.to_device(x)
        assert_allclose_dtype(lpcore.hoyer(d, axis=axis).copy_to_host(), hoyer_ref(x, axis),
                              dtype=dtype, factor=64)
        for p in (1.3, 2.0):
            y = lpcore.normalize(d, p, axis=axis).copy_to_host()
            assert_allclose_dtype(y, normalize_ref(x, p, axis), dtype=dtype, scale=1.0, factor=8)
            assert_on_sphere(y, p, axis=axis, factor=8)
        back = lpcore.from_dual(lpcore.to_dual(d, 1.3), 1.3).copy_to_host()
        assert_allclose_dtype(back, x, dtype=dtype, factor=8)


@pytest.mark.parametrize("dtype", DTYPES)
def test_results_are_bitwise_repeatable(big, dtype):
    # no float atomics: the same input gives the same bits on every run
    X, v = big[dtype]
    for x, axis in ((X, 1), (v, None)):
        d = cuda.to_device(x)
        for f in (lambda: lpcore.norm(d, 1.3, axis=axis), lambda: lpcore.hoyer(d, axis=axis),
                  lambda: lpcore.normalize(d, 1.3, axis=axis)):
            first = f().copy_to_host()
            for _ in range(4):
                np.testing.assert_array_equal(f().copy_to_host(), first)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lpsgd_step_at_scale_matches_cpu(dtype):
    rng = np.random.default_rng(7)
    w = rng.standard_normal((512, 4608)).astype(dtype)
    dw = cuda.to_device(w)
    opt = lpcore.LpSGD(p=1.3, lr=0.05, momentum=0.9, weight_decay=1e-4)
    s_cpu, s_dev = opt.init(w, axis=1), opt.init(dw, axis=1)
    for _ in range(3):
        g = rng.standard_normal(w.shape).astype(dtype)
        opt.step(w, g, s_cpu)
        opt.step(dw, cuda.to_device(g), s_dev)
    assert_allclose_dtype(dw.copy_to_host(), w, dtype=dtype, scale=1.0, factor=64)
    assert_on_sphere(dw.copy_to_host(), 1.3, axis=1, factor=16)


def test_nonfinite_in_a_late_block_is_found(big):
    X, v = big[np.float32]
    x = v.copy()
    x[-2] = np.nan
    d = cuda.to_device(x)
    with pytest.raises(ValueError, match="NaN or Inf"):
        lpcore.normalize(d, 1.3, out=d)
    np.testing.assert_array_equal(d.copy_to_host(), x)
    Y = X.copy()
    Y[123, 4000] = np.inf
    Y[250, 1] = np.nan
    with pytest.raises(ValueError, match=r"group \(123,\)"):
        lpcore.norm(cuda.to_device(Y), 1.3, axis=1)


def test_project_ball_at_scale():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((64, 2000))
    for p in (1.0, 1.5, 3.0):
        got = lpcore.project_ball(cuda.to_device(x), p, axis=1).copy_to_host()
        np.testing.assert_allclose(got, lpcore.project_ball(x, p, axis=1), rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------
# foreign device memory: torch and CuPy, zero-copy
try:
    import torch
    HAVE_TORCH = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    torch, HAVE_TORCH = None, False


class DLPackOnly:
    """Exposes only ``__dlpack__``/``__dlpack_device__`` of a tensor."""

    def __init__(self, t):
        self._t = t

    def __dlpack__(self, stream=None):
        return self._t.__dlpack__(stream=stream)

    def __dlpack_device__(self):
        return self._t.__dlpack_device__()


@pytest.mark.skipif(not HAVE_TORCH, reason="needs torch with CUDA")
@pytest.mark.parametrize("wrap", ["cai", "dlpack"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_tensors_zero_copy(wrap, dtype):
    dtype = getattr(torch, dtype)
    t = torch.randn(257, 1031, device="cuda", dtype=dtype)
    ref = t.double().cpu().numpy()
    src = t if wrap == "cai" else DLPackOnly(t)
    n = lpcore.norm(src, 1.3, axis=1).copy_to_host()
    assert_allclose_dtype(n, norm_ref(ref, 1.3, 1), dtype=n.dtype, factor=4)
    ptr = t.data_ptr()
    out = t if wrap == "cai" else DLPackOnly(t)
    lpcore.normalize(src, 1.3, axis=1, out=out)  # in place, through the wrapper
    torch.cuda.synchronize()
    assert t.data_ptr() == ptr
    assert_allclose_dtype(t.double().cpu().numpy(), normalize_ref(ref, 1.3, 1),
                          dtype=n.dtype, scale=1.0, factor=8)
    # a transposed (non-contiguous) torch view: groups along its axis 0
    tt = torch.randn(300, 77, device="cuda", dtype=dtype).t()
    h = lpcore.hoyer(tt if wrap == "cai" else DLPackOnly(tt), axis=1).copy_to_host()
    assert_allclose_dtype(h, hoyer_ref(tt.double().cpu().numpy(), 1), dtype=h.dtype, factor=64)


@pytest.mark.skipif(not HAVE_TORCH, reason="needs torch with CUDA")
def test_lpsgd_on_torch_parameters_in_place():
    w = torch.randn(64, 300, device="cuda")
    g = torch.randn(64, 300, device="cuda")
    wn = w.cpu().numpy().copy()
    opt = lpcore.LpSGD(p=1.5, lr=0.1, momentum=0.9)
    s_dev, s_cpu = opt.init(w, axis=1), opt.init(wn, axis=1)
    ptr = w.data_ptr()
    for _ in range(3):
        opt.step(w, g, s_dev)
        opt.step(wn, g.cpu().numpy(), s_cpu)
    torch.cuda.synchronize()
    assert w.data_ptr() == ptr
    assert_allclose_dtype(w.cpu().numpy(), wn, dtype=np.float32, scale=1.0, factor=16)


def test_cupy_arrays():
    cp = pytest.importorskip("cupy")
    x = cp.random.standard_normal((33, 4097), dtype=cp.float32)
    ref = cp.asnumpy(x).astype(np.float64)
    n = lpcore.norm(x, 2.5, axis=1).copy_to_host()
    assert_allclose_dtype(n, norm_ref(ref, 2.5, 1), dtype=np.float32, factor=4)
    lpcore.normalize(x, 2.5, axis=1, out=x)
    assert_on_sphere(cp.asnumpy(x), 2.5, axis=1, factor=8)
