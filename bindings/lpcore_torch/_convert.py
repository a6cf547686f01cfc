"""Tensor <-> ndarray exchange through DLPack, without copies."""
from __future__ import annotations

import numpy as np
import torch

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
    if t.device.type != "cpu":
        raise NotImplementedError(
            f"lpcore_torch: {what} is on {t.device}; lpcore_torch's optimizer and trainer take "
            "CPU tensors only so far (lpcore's own functions accept CUDA tensors directly, "
            "through __cuda_array_interface__)")


def to_numpy(t):
    """A NumPy view of a CPU float32/float64 tensor's memory (no copy).

    Writes through the view are seen by the tensor.  The tensor is detached
    first (autograd does not see in-place updates made through the view).

    Raises
    ------
    TypeError
        Sparse, quantized, complex, integer or half-precision tensors (use
        :func:`float32_copy` for fp16/bf16).
    NotImplementedError
        CUDA tensors.
    """
    check_tensor(t, "tensor")
    if t.dtype in _HALF:
        raise TypeError("lpcore_torch.to_numpy: fp16/bf16 has no NumPy view; the binding "
                        "computes such tensors in float32 and writes them back")
    return np.from_dlpack(t.detach())


def float32_copy(t):
    """A float32 NumPy copy of an fp16/bf16 tensor (computed in float32, written back)."""
    return t.detach().to(torch.float32).numpy()
