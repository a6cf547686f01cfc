"""GPU arrays: recognising them, wrapping them for ``numba.cuda``, making views.

lpcore dispatches by array type.  A *device array* is a numba device array
(``numba.cuda.to_device``, ``cuda.device_array``; under the CUDA simulator a
``FakeCUDAArray``) or any object exposing ``__cuda_array_interface__`` (a
CuPy array, a torch CUDA tensor), wrapped without a copy by
``numba.cuda.as_cuda_array``.  Nothing here imports ``numba.cuda`` until a
device array is actually seen, so the CPU path never pays for it.

The few places that differ between a real GPU and the simulator (how a view
onto existing memory is made, where its data pointer is) are kept in this
module.
"""
from __future__ import annotations

import math

import numpy as np

#: DLPack device types that live in GPU memory (kDLCUDA, kDLCUDAHost is not,
#: kDLCUDAManaged)
_DLPACK_CUDA = (2, 13)


def is_device(x):
    """True if ``x`` is a GPU array lpcore's CUDA kernels can take."""
    if isinstance(x, np.ndarray) or x is None or isinstance(x, (int, float, complex, bool)):
        return False
    if getattr(type(x), "__cuda_ndarray__", False):
        return True
    if hasattr(x, "__cuda_array_interface__"):
        return True
    dev = getattr(x, "__dlpack_device__", None)
    if dev is not None:
        try:
            return dev()[0] in _DLPACK_CUDA
        except Exception:  # pragma: no cover - a broken producer
            return False
    return False


def backend(fn, **arrays):
    """``"cuda"`` if the named arguments are device arrays, ``"cpu"`` if none
    is; raises TypeError naming them when host and device arrays are mixed."""
    dev = {k: is_device(v) for k, v in arrays.items() if v is not None}
    if not any(dev.values()):
        return "cpu"
    if all(dev.values()):
        return "cuda"
    on = ", ".join(k for k, d in dev.items() if d)
    off = ", ".join(k for k, d in dev.items() if not d)
    raise TypeError(f"{fn}: {on} on the GPU but {off} on the host; pass all arrays on the "
                    "same device (numba.cuda.to_device / copy_to_host)")


def cuda():
    """The ``numba.cuda`` module, or a clear error if numba-cuda is missing."""
    try:
        from numba import cuda as _cuda
    except ImportError as e:  # pragma: no cover - depends on the install
        raise TypeError("lpcore: GPU arrays need the numba-cuda package "
                        "(pip install 'lpcore[cuda]')") from e
    return _cuda


def simulated():
    from numba import config
    return bool(config.ENABLE_CUDASIM)


def as_device(x, fn, name):
    """A numba device array viewing ``x``'s GPU memory (no copy)."""
    if getattr(type(x), "__cuda_ndarray__", False):
        a = x
    elif hasattr(x, "__cuda_array_interface__"):
        cu = cuda()
        if simulated():
            raise TypeError(f"{fn}: {name} exposes __cuda_array_interface__, which the CUDA "
                            "simulator cannot read; pass a numba.cuda device array")
        if x.__cuda_array_interface__["data"][1]:
            raise ValueError(f"{fn}: {name} is a read-only GPU array")
        a = cu.as_cuda_array(x)
    else:
        raise TypeError(f"{fn}: {name} is a CUDA DLPack tensor without __cuda_array_interface__;"
                        " lpcore reads GPU memory through that interface (torch, CuPy and "
                        "numba arrays expose it)")
    if any(s < 0 for s in a.strides):
        raise ValueError(f"{fn}: {name} has negative strides; pass a contiguous copy")
    return a


def view(a, shape, strides):
    """A device array over ``a``'s memory, starting at ``a``'s first element."""
    shape = tuple(int(s) for s in shape)
    strides = tuple(int(s) for s in strides)
    if simulated():
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
        return FakeCUDAArray(np.lib.stride_tricks.as_strided(a._ary, shape, strides))
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    return DeviceNDArray(shape, strides, a.dtype, gpu_data=a.gpu_data)


def extent(a):
    """Number of elements from ``a``'s first element to its last (its span in memory)."""
    if a.size == 0:
        return 0
    return sum((s - 1) * st for s, st in zip(a.shape, a.strides)) // a.dtype.itemsize + 1


def flat(a):
    """A 1-D contiguous device array over the memory ``a`` spans (for strided gathers)."""
    return view(a, (extent(a),), (a.dtype.itemsize,))


def address(a):
    """(first byte, one past the last byte) of ``a``'s memory."""
    if simulated():
        p = a._ary.__array_interface__["data"][0]
    else:
        p = a.device_ctypes_pointer.value or 0
    return p, p + extent(a) * a.dtype.itemsize


def overlaps(a, b):
    (a0, a1), (b0, b1) = address(a), address(b)
    return a0 < b1 and b0 < a1


def same_view(a, b):
    return address(a)[0] == address(b)[0] and a.shape == b.shape and a.strides == b.strides


def c_strides(shape, itemsize):
    st = []
    acc = itemsize
    for s in reversed(shape):
        st.append(acc)
        acc *= max(int(s), 1)
    return tuple(reversed(st))


def is_c_layout(shape, strides, itemsize):
    """True if an array of ``shape``/``strides`` is C-contiguous (size-1 axes ignored)."""
    want = c_strides(shape, itemsize)
    return all(s == 1 or st == w for s, st, w in zip(shape, strides, want)) or math.prod(shape) == 0


def empty(shape, dtype):
    return cuda().device_array(tuple(shape), dtype=np.dtype(dtype))


def to_host(a):
    return a.copy_to_host()
