"""The LpSGD binding's state tensors: their shapes and dtypes, the
weights' change fingerprints and work copies, and loading a saved state
(checked whole before anything is loaded)."""
from __future__ import annotations

import math

import numpy as np
import torch

import lpcore

from . import _convert
from ._convert import _HALF, check_tensor


def init_state(opt, names):
    """Project every new constrained weight of ``opt`` onto the sphere and
    derive its LpSGD state (step 0, the dual); every weight is validated
    first, so nothing is projected unless all of them can be."""
    todo = []
    for group in opt.param_groups:
        core = opt._core(group)
        for w, layout in opt._constrained(group):
            if "step" in opt.state[w]:
                continue
            copy = work_copy(w, names[id(w)])
            arr = _convert.core_view(w if copy is None else copy)
            back = None if copy is None else (lambda w=w, c=copy: w.copy_(c))
            if not lpcore.all_finite(arr):
                raise ValueError(f"lpcore_torch.LpSGD: {names[id(w)]} contains NaN or "
                                 "Inf; no parameter was changed")
            todo.append((core, w, layout, arr, back))
    for core, w, layout, arr, back in todo:
        cs = core.init(arr.reshape(layout[0]), axis=layout[1])
        if back is not None:
            back()
        st = opt.state[w]
        st["step"] = 0
        if cs.dual is not None:
            st["dual"] = _convert.from_core(cs.dual, w.device)


def load_checked(opt, state_dict, load):
    """``LpSGD.load_state_dict``: torch's loader ``load``, keeping the LpSGD
    state exactly as saved.

    torch casts floating state tensors to the parameter's dtype on load;
    the LpSGD state of fp16/bf16 parameters is float32, so the saved
    tensors are taken as they are (a float32 copy on the parameter's
    device), never through the parameter's dtype.  A state whose tensors
    do not match their parameters' shapes (another model's) is refused
    before anything is loaded.
    """
    saved = state_dict.get("state", {})
    groups = state_dict.get("param_groups", [])
    if len(groups) != len(opt.param_groups):
        raise ValueError(f"lpcore_torch.LpSGD.load_state_dict: the state has {len(groups)} "
                         f"parameter groups, this optimizer {len(opt.param_groups)}")
    names = opt._names()
    exact = {}
    for gi, (gs, g) in enumerate(zip(groups, opt.param_groups)):
        if len(gs["params"]) != len(g["params"]):
            raise ValueError("lpcore_torch.LpSGD.load_state_dict: a group's parameter "
                             f"count differs ({len(gs['params'])} saved, {len(g['params'])})")
        # the groups' layouts come from the model, never from the checkpoint: a
        # different layout would regroup the weights silently
        fan = gs.get("fan_in", [None] * len(gs["params"]))
        for pi, (a, b) in enumerate(zip(fan, g["fan_in"])):
            if layout_key(a) != layout_key(b):
                raise ValueError(
                    f"lpcore_torch.LpSGD.load_state_dict: the fan-in layout of "
                    f"{names[id(g['params'][pi])]} in the state ({a!r}) differs from this "
                    f"optimizer's ({b!r}) in group {gi}; nothing was loaded")
        lay = {id(w): v for w, v in opt._constrained(g)}
        for idx, q in zip(gs["params"], g["params"]):
            st = saved.get(idx, {})
            for key in ("dual", "momentum_buffer"):
                t = st.get(key)
                if t is None:
                    continue
                want = (layout_shape(lay[id(q)]) if id(q) in lay
                        else tuple(q.shape))
                if not torch.is_tensor(t) or tuple(t.shape) != want:
                    raise ValueError(
                        f"lpcore_torch.LpSGD.load_state_dict: state {key!r} of "
                        f"{names[id(q)]} has shape "
                        f"{tuple(t.shape) if torch.is_tensor(t) else type(t).__name__}, "
                        f"expected {want}; nothing was loaded")
                if id(q) in lay:
                    exact[(id(q), key)] = t
            step = st.get("step")
            if step is not None:
                v = step.item() if torch.is_tensor(step) else step
                ok = isinstance(v, (int, float)) and not isinstance(v, bool)
                if not (ok and math.isfinite(v) and float(v) == int(v) and int(v) >= 0):
                    raise ValueError(f"lpcore_torch.LpSGD.load_state_dict: step of "
                                     f"{names[id(q)]} must be an integer >= 0, got {v!r}")
    load(state_dict)
    for group in opt.param_groups:
        for q, _ in opt._constrained(group):
            st = opt.state.get(q, {})
            for k in ("dual", "momentum_buffer"):
                if (id(q), k) in exact:
                    st[k] = exact[(id(q), k)].detach().to(
                        device=q.device, dtype=state_dtype(q), copy=True).contiguous()
    opt.accept_weights()  # the loaded state belongs to the weights as they are now


def latent_values(opt, dual, pos, view, p):
    """``D_q`` of a constrained weight's dual state in the weight's fan-in
    ``view`` (``pos``: flat weight index -> flat state index, a NumPy array),
    on the state's own device: a NumPy array for a CPU state; for a GPU state
    a device array computed there (the gather is a torch op, the power
    lpcore's kernel on torch's current stream), nothing copied to the host."""
    if not _convert.on_gpu(dual):
        return lpcore.from_dual(_convert.host(dual).reshape(-1)[pos].reshape(view), p)
    at = device_positions(opt, pos, dual.device)
    gathered = dual.reshape(-1).index_select(0, at).reshape(view)
    with _convert.stream_of([dual]):
        return lpcore.from_dual(_convert.core_view(gathered), p)


def zero_entries(opt, t, pos, index):
    """Zero the entries of the state tensor ``t`` that belong to a weight's
    flat positions ``index``: an index array, or a boolean tensor of the
    weight's shape (no read-back to the host: the GPU trainer's form).
    ``pos``: flat weight index -> flat index of ``t`` (a NumPy array), or
    None when ``t`` has the weight's own shape."""
    if isinstance(index, torch.Tensor) and index.dtype == torch.bool:
        if pos is None:
            t.masked_fill_(index.reshape(t.shape).to(t.device), 0.0)
        else:
            flat = t.view(-1)  # a constrained weight's state: a contiguous (G, n)
            at = device_positions(opt, pos, t.device)
            flat.index_copy_(0, at, flat.index_select(0, at).masked_fill_(
                index.reshape(-1).to(t.device), 0.0))
        return
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    if index.size:
        flat = t.reshape(-1)
        flat[torch.from_numpy(index if pos is None else pos[index]).to(t.device)] = 0.0


def device_positions(opt, pos, device):
    """The position array ``pos`` as an int64 tensor on ``device``, kept by
    ``opt`` for later calls (one host-to-device copy per layout and device)."""
    cache = opt.__dict__.setdefault("_device_positions", {})
    hit = cache.get((id(pos), str(device)))
    if hit is None or hit[0] is not pos:
        hit = cache[(id(pos), str(device))] = (pos, torch.from_numpy(
            np.asarray(pos, np.int64)).to(device))
    return hit[1]


def fingerprint(w):
    """What changes when a tensor is written outside the optimizer: torch's
    version counter (in-place ops, ``copy_``, ``load_state_dict``) and the
    storage (``w.data = ...``)."""
    return (w._version, w.data_ptr())


def layout_key(layout):
    """A fan-in layout as comparable tuples (lists after a save/load round trip)."""
    if layout is None:
        return None
    try:
        view, axis = layout
        return (tuple(int(v) for v in view), None if axis is None else tuple(int(a) for a in axis))
    except (TypeError, ValueError):
        return ("invalid", repr(layout))


def layout_shape(layout):
    """The (G, n) shape of a constrained parameter's LpSGD state."""
    from lpcore.layout import Groups
    grp = Groups(layout[0], layout[1], "lpcore_torch.LpSGD")
    return (grp.G, grp.n)


def check_state(st, q, names, key):
    """A state tensor that cannot belong to q (e.g. loaded from another model)."""
    t = st.get(key)
    if t is None:
        return
    if t.numel() != q.numel():  # plain: q's shape; constrained: its (G, n) layout
        raise ValueError(f"lpcore_torch.LpSGD.step: state {key!r} of {names[id(q)]} has shape "
                         f"{tuple(t.shape)}, which does not fit the parameter's "
                         f"{tuple(q.shape)}; nothing was updated")


def state_dtype(q):
    return torch.float32 if q.dtype in _HALF else q.dtype


def state_array(st, key):
    t = st.get(key)
    if t is None:
        return None
    if not t.is_contiguous():
        st[key] = t = t.contiguous()
    return _convert.core_view(t)


def work_copy(q, name, force=False):
    """None when lpcore can step ``q`` in place; else (fp16/bf16,
    non-contiguous, or ``force``) a float32-or-q's-dtype contiguous copy on
    q's device that the step works on and the binding writes back."""
    check_tensor(q, name)
    if q.dtype in _HALF:
        return q.detach().to(torch.float32)
    if force or not q.is_contiguous():
        return q.detach().clone(memory_format=torch.contiguous_format)
    return None
