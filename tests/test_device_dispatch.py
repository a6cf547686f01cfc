"""Dispatch by array type, without a GPU: how lpcore recognises GPU arrays and
refuses to mix them with host arrays (the kernels themselves are tested in
test_cuda.py and test_cuda_ptx.py)."""
import numpy as np
import pytest

import lpcore
from lpcore import _device as D


class CAI:
    """Stands in for a CuPy array or torch CUDA tensor (never dereferenced here)."""
    __cuda_array_interface__ = {"shape": (2, 3), "typestr": "<f4", "data": (0, False),
                                "version": 3, "strides": None}
    shape = (2, 3)


class CudaDLPack:
    """An object that offers only a CUDA DLPack capsule."""

    def __dlpack_device__(self):
        return (2, 0)  # kDLCUDA

    def __dlpack__(self, stream=None):  # pragma: no cover - never consumed
        raise AssertionError


class CpuDLPack(CudaDLPack):
    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU


def test_is_device_recognises_gpu_arrays_only():
    assert D.is_device(CAI()) and D.is_device(CudaDLPack())
    assert not D.is_device(CpuDLPack()) and not D.is_device(np.ones(3))
    assert not D.is_device([1.0, 2.0]) and not D.is_device(3.0) and not D.is_device(None)


def test_mixed_host_and_gpu_arguments_raise_naming_them():
    x = np.ones((2, 3))
    with pytest.raises(TypeError, match="lpcore.project_tangent: w on the GPU but g on the host"):
        lpcore.project_tangent(CAI(), x, 1.5)
    with pytest.raises(TypeError, match="lpcore.normalize: out on the GPU but x on the host"):
        lpcore.normalize(x, 2, out=CAI())
    with pytest.raises(TypeError, match="lpcore.retract: xi on the GPU but w on the host"):
        lpcore.retract(x, CAI(), 2)
    opt = lpcore.LpSGD(p=1.5, lr=0.1)
    w = np.ones((2, 3), dtype=np.float32)
    st = opt.init(w, axis=1)
    with pytest.raises(TypeError, match="grad on the GPU but w, state.dual on the host"):
        opt.step(w, CAI(), st)
    np.testing.assert_array_equal(w, lpcore.normalize(np.ones((2, 3), np.float32), 1.5, axis=1))


def test_host_only_functions_refuse_gpu_arrays():
    with pytest.raises(TypeError, match="lpcore.ste_mask_grad: grad is a GPU array; "
                                        "this function works on host"):
        lpcore.ste_mask_grad(CAI(), np.ones((2, 3)))
    with pytest.raises(TypeError, match="latent is a GPU array"):
        lpcore.ste_mask_grad(np.ones((2, 3)), CAI())


def test_dlpack_capsules_are_read_exactly_and_released():
    # the DLPack reader behind CUDA-DLPack-only objects, checked on host
    # capsules (NumPy's): pointer, shape, byte strides and dtype agree with
    # NumPy's own description, and the producer's deleter runs when the owner
    # goes away
    import gc
    import sys
    for x in [np.arange(24.0).reshape(4, 6)[:, 1::2], np.ones((2, 3), np.float32),
              np.arange(5, dtype=np.int64), np.zeros((3, 0, 2))]:
        base = sys.getrefcount(x)
        desc, owner = D.dlpack_interface(x)
        ai = x.__array_interface__
        assert desc["device"] == (1, 0) and desc["shape"] == x.shape
        assert desc["typestr"] == x.dtype.str
        if x.size:
            assert desc["data"][0] == ai["data"][0]
            assert desc["strides"] in (None, x.strides)
        assert sys.getrefcount(x) == base + 1  # the producer keeps x alive...
        del owner
        gc.collect()
        assert sys.getrefcount(x) == base  # ...until the owner is collected


def test_c_layout_helper():
    assert D.is_c_layout((2, 3), (24, 8), 8)
    assert D.is_c_layout((2, 1, 3), (24, 999, 8), 8)  # size-1 axes do not matter
    assert not D.is_c_layout((2, 3), (8, 16), 8)
    assert D.c_strides((4, 5, 6), 4) == (120, 24, 4)


def _fake_device_array(shape, strides, dtype):
    """A real numba DeviceNDArray descriptor over a sentinel 'allocation' (no GPU
    is touched while only shapes and strides are computed)."""
    from numba import config
    if config.ENABLE_CUDASIM:
        pytest.skip("the real numba.cuda array class is replaced under the simulator")
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    sentinel = object()
    return DeviceNDArray(shape, strides, np.dtype(dtype), gpu_data=sentinel), sentinel


def test_real_device_array_views_for_the_grouped_layout():
    from lpcore._backend import Cuda
    from lpcore.layout import Groups
    B = Cuda()
    # a C-contiguous (6, 3, 2, 2) float32 conv weight, groups over axes (1, 2, 3)
    a, mem = _fake_device_array((6, 3, 2, 2), (48, 16, 8, 4), np.float32)
    assert D.is_device(a) and D.as_device(a, "f", "x") is a
    grp = Groups(a.shape, (1, 2, 3), "f")
    v = B.to2d(grp, a, np.float32)  # free view, no copy kernel
    assert v.shape == (6, 12) and v.strides == (48, 4) and v.gpu_data is mem
    assert B.view2d(grp, a, np.float32).strides == (48, 4)
    assert B.view2d(grp, a, np.float64) is None  # other dtype: written via scatter
    assert D.flat(a).shape == (72,) and D.extent(a) == 72
    # a (G, n) result seen in the original axis order (reduced axis 0 leading):
    # the same view NumPy's transpose gives
    grp0 = Groups((4, 5), 0, "f")
    r, _ = _fake_device_array((5, 4), (32, 8), np.float64)
    out = B.finish(r, grp0, None, np.float64, None)
    want = np.empty((5, 4)).T
    assert out.shape == want.shape and out.strides == want.strides
    # per-group results: kept shape, keepdims, and a 0-d result for axis=None
    g1, _ = _fake_device_array((5,), (8,), np.float64)
    assert B.reduced(grp0, g1, True).shape == (1, 5)
    s, _ = _fake_device_array((1,), (8,), np.float64)
    assert B.reduced(Groups((4, 5), None, "f"), s, False).shape == ()


def test_negative_strides_are_refused():
    a, _ = _fake_device_array((3,), (-8,), np.float64)
    with pytest.raises(ValueError, match="x has negative strides"):
        D.as_device(a, "lpcore.norm", "x")
