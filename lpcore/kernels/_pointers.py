"""Typed pointers from integer addresses (and a cast to a scalar's type), for kernels that walk a table of
tensors (one launch over many tensors, as torch's ``_foreach`` kernels do).

``as_ptr(addr, like)`` is the address ``addr`` (an int64) as a pointer to
elements of ``like``'s type; ``numba.carray(as_ptr(a, like), shape)`` views
it as an array.  One LLVM ``inttoptr``: compiles for the CPU (``njit``) and
for the GPU (``cuda.jit``).  The CUDA simulator cannot run it; its twin is
:mod:`lpcore.kernels.cuda._pointers`.  The caller keeps the memory alive
and of the right type, layout and size: nothing is checked here.
"""
from __future__ import annotations

from numba import types
from numba.core.extending import intrinsic


@intrinsic
def as_ptr(typingctx, addr, like):
    ptr_t = types.CPointer(like)
    sig = ptr_t(types.int64, like)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(ptr_t))
    return sig, codegen


@intrinsic
def cast_like(typingctx, value, like):
    """``value`` converted to ``like``'s type (a kernel compiled per dtype
    computes in its data's precision: ``powf`` for float32)."""
    sig = like(value, like)

    def codegen(context, builder, signature, args):
        return context.cast(builder, args[0], signature.args[0], signature.args[1])
    return sig, codegen
