"""GPU arrays: recognising them, wrapping them for ``numba.cuda``, making views.

lpcore dispatches by array type.  A *device array* is a numba device array
(``numba.cuda.to_device``, ``cuda.device_array``; under the CUDA simulator a
``FakeCUDAArray``), any object exposing ``__cuda_array_interface__`` (a
CuPy array, a torch CUDA tensor), wrapped without a copy by
``numba.cuda.as_cuda_array``, or an object with a CUDA ``__dlpack__`` only,
whose DLPack capsule is read into the same description (zero-copy; the
producer's deleter runs when lpcore's array is collected).  Nothing here imports ``numba.cuda`` until a
device array is actually seen, so the CPU path never pays for it.

The few places that differ between a real GPU and the simulator (how a view
onto existing memory is made, where its data pointer is) are kept in this
module.
"""
from __future__ import annotations

import contextlib
import ctypes
import math
import numbers
import threading

import numpy as np

#: DLPack device types whose memory the GPU kernels can address: kDLCUDA (2)
#: and kDLCUDAManaged (13); kDLCUDAHost (3) is pinned host memory, refused
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


_tls = threading.local()


@contextlib.contextmanager
def cuda_stream(stream):
    """Run lpcore's GPU work inside the block on ``stream`` (this thread only).

    ``stream``: a ``cudaStream_t`` handle as an int (0: the default stream;
    ``torch.cuda.current_stream().cuda_stream``), an object with a
    ``__cuda_stream__`` method or an int ``cuda_stream`` / ``ptr`` attribute
    (torch, CuPy), a numba stream, or None (numba's default stream, as
    outside the block).  Kernels, the device-side zeroing of flags and the
    copies of the integers that decide an error are all enqueued on it, and
    intermediate buffers are kept per stream; the call waits for its stream
    only where it reads those integers back.  Nothing is imported or
    checked against a GPU until a kernel runs, so the block costs nothing on
    the CPU path::

        with lpcore.cuda_stream(torch.cuda.current_stream().cuda_stream):
            lpcore.normalize(w, 1.3, axis=1, out=w)
    """
    # parsed once here (what cannot be a stream is refused now, not at the first kernel)
    new = (stream, _stream_handle(stream))
    old = getattr(_tls, "stream", (None, None))
    _tls.stream = new
    try:
        yield stream
    finally:
        _tls.stream = old


def stream_handle():
    """That stream as :func:`_stream_handle` parsed it (an int, a numba stream or None)."""
    return getattr(_tls, "stream", (None, None))[1]


def _stream_handle(s):
    """The int handle of a stream given as :func:`cuda_stream` takes it, the
    stream object itself for a numba stream, or None (the default)."""
    if s is None:
        return None
    if isinstance(s, numbers.Integral) and not isinstance(s, bool):
        return _checked_handle(s, "stream")
    if type(s).__module__.startswith("numba"):
        return s
    proto = getattr(s, "__cuda_stream__", None)
    if callable(proto):
        got = proto()
        if not (isinstance(got, tuple) and len(got) == 2):
            raise TypeError("lpcore.cuda_stream: __cuda_stream__() must return a (version, "
                            f"handle) pair, got {got!r}")
        return _checked_handle(got[1], "__cuda_stream__()[1]")
    for attr in ("cuda_stream", "ptr"):
        h = getattr(s, attr, None)
        if isinstance(h, numbers.Integral) and not isinstance(h, bool):
            return _checked_handle(h, f"stream.{attr}")
    raise TypeError("lpcore.cuda_stream: stream must be None, an int handle, a numba stream or "
                    f"an object with __cuda_stream__ / cuda_stream / ptr, got {type(s).__name__}")


def _checked_handle(h, what):
    """A stream handle: an integer in [0, 2**64) (a CUstream pointer)."""
    if isinstance(h, bool) or not isinstance(h, numbers.Integral):
        raise TypeError(f"lpcore.cuda_stream: {what} must be an integer handle, got {h!r}")
    if not 0 <= h < 2**64:
        raise ValueError(f"lpcore.cuda_stream: {what} must be a handle in [0, 2**64), got {h}")
    return int(h)


def stream_int():
    """The current stream's handle as an int (0: the default stream)."""
    h = stream_handle()
    try:
        return int(h or 0)  # a numba stream converts to its handle
    except TypeError:  # the simulator's streams have none
        return 0


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
        if simulated():
            raise TypeError(f"{fn}: {name} is a CUDA DLPack tensor, which the CUDA simulator "
                            "cannot read; pass a numba.cuda device array")
        # the consumer's stream, for the producer to order its work before ours
        # (1: the legacy default stream, numba's default)
        h = stream_int()
        desc, owner = dlpack_interface(x, stream=h if h > 0 else 1)
        dev_type, dev_id = desc.pop("device")
        cu = cuda()
        if dev_type not in _DLPACK_CUDA or dev_id != cu.get_current_device().id:
            raise ValueError(f"{fn}: {name} lives on DLPack device ({dev_type}, {dev_id}); "
                             "lpcore runs on numba's current CUDA device "
                             f"{cu.get_current_device().id}")
        a = cu.from_cuda_array_interface(desc, owner=owner, sync=False)
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



# --------------------------------------------------------------------------
# DLPack (unversioned DLManagedTensor, as every producer returns from
# ``__dlpack__()`` without ``max_version``): read the capsule into a
# __cuda_array_interface__ description, keeping the producer's memory alive
# until the consumer's array is gone (then call the producer's deleter).
class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _DLManagedTensor(ctypes.Structure):
    pass


_DLManagedTensor._fields_ = [
    ("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p),
    ("deleter", ctypes.CFUNCTYPE(None, ctypes.POINTER(_DLManagedTensor)))]

_DL_KIND = {0: "i", 1: "u", 2: "f", 6: "b"}  # kDLInt, kDLUInt, kDLFloat, kDLBool

_capsule_get = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_get.restype = ctypes.c_void_p
_capsule_get.argtypes = [ctypes.py_object, ctypes.c_char_p]
_capsule_rename = ctypes.pythonapi.PyCapsule_SetName
_capsule_rename.restype = ctypes.c_int
_capsule_rename.argtypes = [ctypes.py_object, ctypes.c_char_p]


class DLPackOwner:
    """Holds a consumed DLManagedTensor; calls its deleter when collected."""

    def __init__(self, ptr):
        self._m = ctypes.cast(ptr, ctypes.POINTER(_DLManagedTensor))

    def __del__(self):
        m, self._m = self._m, None
        if m and m.contents.deleter:
            m.contents.deleter(m)


def dlpack_interface(x, stream=None):
    """(``__cuda_array_interface__``-style dict, owner) for ``x.__dlpack__()``.

    The dict describes x's memory (data pointer with byte offset, shape,
    strides in bytes or None when C-contiguous, typestr, and the DLPack
    device as ``"device"``); ``owner`` keeps the memory alive.
    """
    cap = x.__dlpack__() if stream is None else x.__dlpack__(stream=stream)
    ptr = _capsule_get(cap, b"dltensor")
    owner = DLPackOwner(ptr)
    _capsule_rename(cap, b"used_dltensor")  # the capsule no longer owns it
    t = owner._m.contents.dl_tensor
    kind = _DL_KIND.get(t.dtype.code)
    if kind is None or t.dtype.lanes != 1:
        raise TypeError(f"DLPack dtype code {t.dtype.code} (bits {t.dtype.bits}, lanes "
                        f"{t.dtype.lanes}) is not a real numeric type lpcore reads")
    itemsize = t.dtype.bits // 8
    nd = t.ndim
    shape = tuple(int(t.shape[i]) for i in range(nd))
    strides = None
    if t.strides:
        strides = tuple(int(t.strides[i]) * itemsize for i in range(nd))
    desc = {"shape": shape, "strides": strides, "typestr": np.dtype(f"{kind}{itemsize}").str,
            "data": ((t.data or 0) + int(t.byte_offset), False), "version": 3,
            "device": (int(t.device.device_type), int(t.device.device_id))}
    return desc, owner
