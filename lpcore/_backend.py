"""The seam between the public functions and the hardware: one backend per
array family, chosen from the arguments.

A backend offers the layout operations the public functions need (the
argument as an array of its family, ``out=`` checks, the (G, n) view and back,
allocation, reading one value on an error path) and ``kernels``: the CPU
kernels (:mod:`lpcore.kernels`) or their CUDA twins (:mod:`lpcore.kernels.cuda`),
which share one contract.  So each public function is written once, with one
validation and one set of messages, for NumPy arrays and for GPU arrays (numba
device arrays, ``__cuda_array_interface__`` or CUDA DLPack producers).  The
GPU backend is built, and ``numba.cuda`` imported, only when a device array
is seen.
"""
from __future__ import annotations

import numpy as np

from . import _device
from ._validate import as_array


def for_arrays(fn, **arrays):
    """The backend of the named arguments (None values are ignored); a
    ``TypeError`` naming them when host and GPU arrays are mixed."""
    if _device.backend(fn, **arrays) == "cuda":
        return cuda_backend()
    return HOST


class _Backend:
    def target(self, grp, out, dtype, inputs2d):
        """Where a writing kernel may write directly: out's (G, n) view, unless
        it overlaps an input other than as the very same view."""
        if out is None:
            return None
        v = self.view2d(grp, out, dtype)
        if v is None:
            return None
        if any(self.aliased(v, a) for a in inputs2d):
            return None
        return v

    def finish(self, dst, grp, out, res_dtype, tgt):
        """Deliver a (G, n) result: into ``out`` (unless it was written in
        place, ``tgt``), else as an array of the original shape."""
        if out is not None:
            if tgt is None:
                self.write(grp, dst, out)
            return out
        return self.result(dst, grp, res_dtype)


class Host(_Backend):
    """NumPy arrays on the host; NumPy does the layout work."""

    name = "cpu"

    def __init__(self):
        from . import kernels
        self.kernels = kernels

    @staticmethod
    def as_array(x, fn, name):
        return as_array(x, fn, name)

    @staticmethod
    def check_out(out, shape, res_dtype, fn):
        if not isinstance(out, np.ndarray):
            raise TypeError(f"{fn}: out must be a numpy.ndarray, got {type(out).__name__}")
        _check_out_shape_dtype(out, shape, res_dtype, fn, writable=out.flags.writeable)
        return out

    @staticmethod
    def to2d(grp, x, dtype):
        """C-contiguous (G, n) array of ``dtype`` with x's data (a view when possible)."""
        return grp.to2d(x, dtype)

    @staticmethod
    def view2d(grp, a, dtype):
        """a's own writable (G, n) view if it is C-contiguous in ``dtype``, else None."""
        if a.dtype != dtype or not a.flags.writeable:
            return None
        return grp.view2d(a)

    @staticmethod
    def aliased(v, a):
        """v and a share memory other than as the very same view."""
        return np.may_share_memory(v, a) and not _same_view(v, a)

    @staticmethod
    def write(grp, src2d, out):
        """Copy a (G, n) result into ``out`` (any strides; same_kind cast)."""
        np.copyto(out, grp.from2d(src2d), casting="same_kind")
        return out

    @staticmethod
    def result(dst, grp, res_dtype):
        """A (G, n) result as an array of the original shape and ``res_dtype``."""
        r = grp.from2d(dst)
        return r if r.dtype == res_dtype else r.astype(res_dtype)

    @staticmethod
    def reduced(grp, r, keepdims):
        """A per-group result shaped like NumPy's reductions (a scalar for 0-d)."""
        r = grp.reduced_result(r, keepdims)
        return r[()] if r.ndim == 0 else r

    empty = staticmethod(np.empty)

    @staticmethod
    def zeros(shape, dtype):
        return np.zeros(shape, dtype)

    @staticmethod
    def flat(a2):
        """A C-contiguous (G, n) array as a 1-D view."""
        return a2.reshape(-1)

    @staticmethod
    def shaped(a1, shape):
        """A 1-D array as a C-ordered view of ``shape``."""
        return a1.reshape(shape)

    @staticmethod
    def to_numpy(a):
        return np.asarray(a)

    @staticmethod
    def from_host(a):
        """A NumPy array as an array of this backend (here: itself)."""
        return np.asarray(a)

    @staticmethod
    def address(a):
        """The address of ``a``'s first element (for the kernels' tensor tables)."""
        return a.__array_interface__["data"][0]

    @staticmethod
    def register(a):
        """Make ``a`` reachable through its address in the kernels (a no-op here)."""

    @staticmethod
    def value(a, i):
        """Element ``i`` of a 1-D array as a float (error paths)."""
        return float(a[i])


class Cuda(_Backend):
    """GPU arrays: numba device arrays viewing the caller's memory; the
    layout copies are the gather/scatter kernels, and only the integers
    that decide an error (and, on an error path, one value) reach the host."""

    name = "cuda"

    def __init__(self):
        from .kernels import cuda as kernels
        self.kernels = kernels

    @staticmethod
    def as_array(x, fn, name):
        return _device.as_device(x, fn, name)

    @staticmethod
    def check_out(out, shape, res_dtype, fn):
        out = _device.as_device(out, fn, "out")
        _check_out_shape_dtype(out, shape, res_dtype, fn)
        return out

    def to2d(self, grp, a, dtype):
        """C-contiguous (G, n) device array of ``dtype`` with a's data (a view
        when possible)."""
        dtype = np.dtype(dtype)
        if a.size == 0:
            return _device.empty((grp.G, grp.n), dtype)
        ps, pst = _permuted(grp, a)
        it = a.dtype.itemsize
        if a.dtype == dtype and _device.is_c_layout(ps, pst, it):
            return _device.view(a, (grp.G, grp.n), (grp.n * it, it))
        dst = _device.empty((grp.G, grp.n), dtype)
        self.kernels.gather(_device.flat(a), ps, tuple(s // it for s in pst), dst)
        return dst

    @staticmethod
    def view2d(grp, a, dtype):
        """a's own (G, n) view if it is C-contiguous in ``dtype``, else None."""
        if a.dtype != dtype or a.size == 0:
            return None
        ps, pst = _permuted(grp, a)
        it = a.dtype.itemsize
        if not _device.is_c_layout(ps, pst, it):
            return None
        return _device.view(a, (grp.G, grp.n), (grp.n * it, it))

    @staticmethod
    def aliased(v, a):
        return a.size and _device.overlaps(v, a) and not _device.same_view(v, a)

    def write(self, grp, src2d, out):
        if out.size:
            ps, pst = _permuted(grp, out)
            self.kernels.scatter(src2d, _device.flat(out), ps,
                                 tuple(s // out.dtype.itemsize for s in pst))
        return out

    def result(self, dst, grp, res_dtype):
        res_dtype = np.dtype(res_dtype)
        if dst.dtype != res_dtype or dst.size == 0:
            return self.write(grp, dst, _device.empty(grp.shape, res_dtype))
        # a view of dst in the permuted layout, as NumPy's transpose gives on the host
        st = _device.c_strides(tuple(grp.shape[i] for i in grp.perm), dst.dtype.itemsize)
        strides = [0] * len(grp.shape)
        for k, ax in enumerate(grp.perm):
            strides[ax] = st[k]
        return _device.view(dst, grp.shape, strides)

    @staticmethod
    def reduced(grp, r, keepdims):
        shape = grp.kept_shape
        if keepdims:
            shape = tuple(1 if i in grp.reduced else s for i, s in enumerate(grp.shape))
        return r.reshape(shape)

    @staticmethod
    def empty(shape, dtype):
        return _device.empty(shape, dtype)

    def zeros(self, shape, dtype):
        return self.kernels.fill(_device.empty(shape, dtype), 0.0) if np.prod(shape) else \
            _device.empty(shape, dtype)

    @staticmethod
    def flat(a2):
        return _device.view(a2, (a2.size,), (a2.dtype.itemsize,))

    @staticmethod
    def shaped(a1, shape):
        return _device.view(a1, shape, _device.c_strides(shape, a1.dtype.itemsize))

    @staticmethod
    def to_numpy(a):
        from .kernels.cuda._launch import to_host
        return to_host(a)

    @staticmethod
    def from_host(a):
        """A device copy of a NumPy array, on lpcore's current stream."""
        from numba import cuda

        from .kernels.cuda._launch import stream
        return cuda.to_device(np.ascontiguousarray(a), stream=stream())

    @staticmethod
    def address(a):
        return _device.address(a)[0]

    @staticmethod
    def register(a):
        """Under the CUDA simulator, make ``a`` reachable through its address
        (its kernels are Python: ``lpcore.kernels.cuda._pointers``)."""
        from .kernels.cuda._pointers import register
        register(a)

    @staticmethod
    def value(a, i):
        from .kernels.cuda._launch import to_host
        return float(to_host(a[i:i + 1])[0])


def _check_out_shape_dtype(out, shape, res_dtype, fn, writable=True):
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{fn}: out has shape {tuple(out.shape)}, expected {tuple(shape)}")
    if not writable:
        raise ValueError(f"{fn}: out is read-only")
    if not np.can_cast(res_dtype, out.dtype, casting="same_kind"):
        raise TypeError(f"{fn}: cannot write a {res_dtype} result into out of dtype {out.dtype}")


def _same_view(a, b):
    """True if host arrays a and b are the very same view (pointer, shape, strides)."""
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.shape == b.shape and a.strides == b.strides)


def _permuted(grp, a):
    return tuple(a.shape[i] for i in grp.perm), tuple(a.strides[i] for i in grp.perm)


HOST = Host()
_CUDA = []


def cuda_backend():
    """The GPU backend (built, and numba.cuda imported, on first use)."""
    if not _CUDA:
        _device.cuda()  # a clear error if numba-cuda is missing
        _CUDA.append(Cuda())
    return _CUDA[0]
