"""Tensor <-> lpcore array exchange, without copies, on the CPU and on the GPU.

A CPU tensor reaches lpcore as a NumPy view; a CUDA tensor as a
numba device array over its memory (``__cuda_array_interface__``; the array
holds the tensor, so the memory lives as long as lpcore's view of it).  GPU
work on CUDA tensors runs on torch's current stream of their device
(:func:`stream_of`), so it is ordered with the caller's torch work without
any synchronisation, and memory torch frees meanwhile is reused only by work
queued after ours.  These few functions are the only place the binding
knows how a tensor becomes an lpcore array.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

import lpcore
from lpcore import _device

_HALF = (torch.float16, torch.bfloat16)


def check_tensor(t, what):
    """Reject what lpcore cannot work on, with a message naming ``what``."""
    if t.layout != torch.strided:
        raise TypeError(f"lpcore_torch: {what} is a {t.layout} tensor; only dense (strided) "
                        "tensors are supported")
    if t.is_quantized:
        raise TypeError(f"lpcore_torch: {what} is quantized; not supported")
    if t.is_complex():
        raise TypeError(f"lpcore_torch: {what} is complex; lpcore works on real data")
    if not t.is_floating_point():
        raise TypeError(f"lpcore_torch: {what} has dtype {t.dtype}; a floating dtype is needed")
    if t.device.type not in ("cpu", "cuda"):
        raise NotImplementedError(f"lpcore_torch: {what} is on {t.device}; lpcore runs on CPU "
                                  "and CUDA tensors")


def core_view(t):
    """The array lpcore's functions take for tensor ``t``, sharing its memory:
    a NumPy view of a CPU tensor, a numba device array over a CUDA tensor's
    (which keeps the tensor alive).  ``t`` is detached first (autograd does
    not see in-place updates made through the view)."""
    t = t.detach()
    if t.device.type == "cpu":
        return t.numpy()  # a view (torch's own, cheaper than a DLPack round trip)
    cuda = _device.cuda()  # a clear error without numba-cuda
    # no synchronisation: the work is queued on the stream torch's own work is on
    return cuda.from_cuda_array_interface(t.__cuda_array_interface__, owner=t, sync=False)


def address(t):
    """The address of tensor ``t``'s first element (lpcore's step plans take
    checked gradients and masks by address: no array is made per step)."""
    return t.data_ptr()


def on_gpu(t):
    """Whether ``t`` goes to lpcore's GPU kernels."""
    return t.device.type == "cuda"


def from_core(a, device):
    """A tensor over the memory of an array lpcore made (NumPy or a device
    array on ``device``), without a copy."""
    if isinstance(a, np.ndarray):
        return torch.from_numpy(a)
    return torch.as_tensor(a, device=device)


def host(t):
    """A NumPy array of ``t``'s values: a view of a CPU tensor, a copy of a CUDA
    one (for the decisions lpcore makes on the host)."""
    return t.detach().cpu().numpy()


@contextlib.contextmanager
def stream_of(tensors):
    """lpcore's GPU work inside the block on torch's current stream of the
    tensors' CUDA device, with that device numba's current one; nothing for
    CPU tensors.  Tensors on two CUDA devices are refused."""
    devs = {t.device for t in tensors if t.device.type == "cuda"}
    if not devs:
        yield
        return
    if len(devs) > 1:
        raise ValueError("lpcore_torch: the tensors are on several CUDA devices "
                         f"({', '.join(sorted(map(str, devs)))}); one optimizer steps one device")
    dev = devs.pop()
    cuda = _device.cuda()
    with cuda.gpus[dev.index if dev.index is not None else torch.cuda.current_device()]:
        with lpcore.cuda_stream(torch.cuda.current_stream(dev).cuda_stream):
            yield


def to_numpy(t):
    """A NumPy view of a CPU float32/float64 tensor's memory (no copy).

    Writes through the view are seen by the tensor.  The tensor is detached
    first (autograd does not see in-place updates made through the view).

    Raises
    ------
    TypeError
        Sparse, quantized, complex, integer or half-precision tensors.
    ValueError
        CUDA tensors (:func:`core_view` gives lpcore's view of them).
    """
    check_tensor(t, "tensor")
    if t.device.type != "cpu":
        raise ValueError(f"lpcore_torch.to_numpy: the tensor is on {t.device}; NumPy views "
                         "host memory only")
    if t.dtype in _HALF:
        raise TypeError("lpcore_torch.to_numpy: fp16/bf16 has no NumPy view; the binding "
                        "computes such tensors in float32 and writes them back")
    return core_view(t)
