"""lpcore_torch.LpSGD against hostile use: half-precision resume, foreign
state, NaN weights at construction, maximize and plain-group validation."""
import copy

import pytest

torch = pytest.importorskip("torch")

from lpcore_torch import LpSGD, lp_param_groups  # noqa: E402


def make(k=3, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, k))


def flat(m):
    return torch.cat([q.detach().float().flatten() for q in m.parameters()])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("resume_at", [1, 6, 11])
def test_resume_is_bit_identical_in_half_precision(dtype, resume_at):
    def train(resume=None):
        m = make().to(dtype)
        opt = LpSGD(lp_param_groups(m, p=1.3), lr=0.05, momentum=0.9)
        g = torch.Generator().manual_seed(1)
        for t in range(12):
            if t == resume:
                sd = copy.deepcopy(opt.state_dict())
                ms = copy.deepcopy(m.state_dict())
                m = make(seed=7).to(dtype)  # different weights, overwritten by the load
                opt = LpSGD(lp_param_groups(m, p=1.3), lr=0.05, momentum=0.9)
                m.load_state_dict(ms)
                opt.load_state_dict(sd)
            x = torch.randn(4, 8, generator=g).to(dtype)
            opt.zero_grad()
            m(x).float().square().mean().backward()
            opt.step()
        for st in opt.state.values():
            for k in ("dual", "momentum_buffer"):
                if k in st and "dual" in st:  # a constrained tensor: float32 state
                    assert st[k].dtype == (torch.float32 if dtype != torch.float64 else dtype)
        return flat(m)
    assert torch.equal(train(), train(resume_at))


def test_foreign_state_is_refused_and_nothing_loaded():
    m5 = make(5)
    o5 = LpSGD(lp_param_groups(m5, p=1.3), lr=0.1, momentum=0.9)
    m5(torch.randn(2, 8)).sum().backward()
    o5.step()
    m3 = make(3)
    o3 = LpSGD(lp_param_groups(m3, p=1.3), lr=0.1, momentum=0.9)
    before = copy.deepcopy(o3.state_dict())
    with pytest.raises(ValueError, match=r"2\.weight has shape \(5, 16\), expected \(3, 16\)"):
        o3.load_state_dict(o5.state_dict())
    after = o3.state_dict()
    for k, st in before["state"].items():
        for key, t in st.items():
            assert torch.equal(torch.as_tensor(t), torch.as_tensor(after["state"][k][key]))


@pytest.mark.parametrize("step", [-1, 2.7, float("nan")])
def test_tampered_step_is_refused(step):
    m = make()
    opt = LpSGD(lp_param_groups(m, p=1.3), lr=0.1, lr_decay=0.5)
    sd = opt.state_dict()
    k = next(iter(sd["state"]))
    sd["state"][k]["step"] = step
    with pytest.raises(ValueError, match="step of .* must be an integer >= 0"):
        LpSGD(lp_param_groups(make(), p=1.3), lr=0.1, lr_decay=0.5).load_state_dict(sd)


def test_construction_is_atomic_and_names_the_parameter():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16),
                            torch.nn.ReLU(), torch.nn.Linear(16, 3))
    with torch.no_grad():
        m[2].weight[1, 3] = float("nan")  # the second constrained layer
    before = flat(m).clone()
    with pytest.raises(ValueError, match=r"2\.weight contains NaN or Inf; no parameter was changed"):
        LpSGD(lp_param_groups(m, p=1.3), lr=0.1)
    assert torch.equal(flat(m).nan_to_num(), before.nan_to_num())


def test_plain_groups_validate_like_torch_and_honour_maximize():
    q = torch.nn.Parameter(torch.ones(3, 4))
    for kw, msg in [(dict(lr=-1.0), "lr must be"), (dict(lr=0.1, momentum=-0.5), "momentum must"),
                    (dict(lr=0.1, nesterov=True), "nesterov requires"),
                    (dict(lr=0.1, weight_decay=float("nan")), "weight_decay must")]:
        lr = kw.pop("lr")
        with pytest.raises(ValueError, match=msg):
            LpSGD([dict(params=[q], **kw)], lr=lr)
        with pytest.raises(ValueError):
            torch.optim.SGD([q], lr=lr, **kw) if msg != "weight_decay must" else (_ for _ in ()).throw(ValueError())
    with pytest.raises(ValueError, match="maximize=True is not supported in a constrained"):
        LpSGD([dict(params=[q], p=1.5, maximize=True)], lr=0.1)
    a = torch.nn.Parameter(torch.zeros(3))
    b = torch.nn.Parameter(torch.zeros(3))
    oa = LpSGD([dict(params=[a], maximize=True)], lr=0.1, momentum=0.9)
    ob = torch.optim.SGD([b], lr=0.1, momentum=0.9, maximize=True)
    for _ in range(3):
        a.grad = torch.arange(3.0)
        b.grad = torch.arange(3.0)
        oa.step()
        ob.step()
    assert torch.equal(a, b)


# ------------------------------------------------------------ weights changed outside the optimizer
def _fresh_reference(weights, dtype=torch.float32):
    """The same layer with an optimizer built on ``weights`` directly."""
    lin = torch.nn.Linear(4, 3, bias=False).to(dtype)
    with torch.no_grad():
        lin.weight.copy_(weights)
    return lin, LpSGD([{"params": [lin.weight], "p": 1.5}], lr=0.1, momentum=0.9)


@pytest.mark.parametrize("how", ["copy_", "load_state_dict", "data", "mul_", "after_steps"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_weights_set_after_construction_are_the_ones_optimised(how, dtype):
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3, bias=False).to(dtype)
    opt = LpSGD([{"params": [lin.weight], "p": 1.5}], lr=0.1, momentum=0.9)
    if how == "after_steps":  # a change in the middle of training
        for _ in range(3):
            lin.weight.grad = torch.randn(3, 4).to(dtype)
            opt.step()
    new = torch.randn(3, 4).to(dtype)
    with torch.no_grad():
        if how in ("copy_", "after_steps"):
            lin.weight.copy_(new)
        elif how == "load_state_dict":
            lin.load_state_dict({"weight": new})
        elif how == "data":
            lin.weight.data = new.clone()
        else:
            new = (lin.weight * 2.0).detach().clone()
            lin.weight.mul_(2.0)
    ref, ropt = _fresh_reference(new, dtype)
    steps = opt.state[lin.weight]["step"]
    for _ in range(3):
        g = torch.randn(3, 4).to(dtype)
        lin.weight.grad, ref.weight.grad = g.clone(), g.clone()
        opt.step()
        ropt.step()
    if how == "after_steps":  # same weights and direction; the lr decay went on (lr_decay=0)
        assert opt.state[lin.weight]["step"] == steps + 3
    assert torch.equal(lin.weight, ref.weight)


def test_unchanged_weights_keep_their_state_and_a_bad_change_is_refused():
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3, bias=False)
    opt = LpSGD([{"params": [lin.weight], "p": 1.5}], lr=0.1, momentum=0.9)
    lin.weight.grad = torch.ones(3, 4)
    opt.step()
    dual = opt.state[lin.weight]["dual"]
    opt.step()
    assert opt.state[lin.weight]["dual"] is dual  # kept, updated in place
    with torch.no_grad():
        lin.weight[0, 0] = float("nan")
    before = lin.weight.clone()
    with pytest.raises(ValueError, match="changed outside the optimizer and contains NaN"):
        opt.step()
    assert torch.equal(torch.nan_to_num(lin.weight), torch.nan_to_num(before))
    assert opt.state[lin.weight]["dual"] is dual


def test_keep_state_vouches_only_for_weights_unchanged_before_it():
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3, bias=False)
    opt = LpSGD([{"params": [lin.weight], "p": 1.5}], lr=0.1)
    with opt.keep_state():
        with torch.no_grad():
            lin.weight[0].zero_()  # e.g. masking: the latent dual stays
    assert not opt._changed(lin.weight)
    lin.weight.grad = torch.zeros(3, 4)
    opt.step()
    # kept: row 0's dual is the latent one (re-deriving it from w would give zeros)
    assert (opt.state[lin.weight]["dual"][0] != 0).all()
    with torch.no_grad():
        lin.weight.copy_(torch.randn(3, 4))
    with opt.keep_state():  # too late: the copy happened before it
        pass
    assert opt._changed(lin.weight)


# ------------------------------------------------------------ foreign layouts
def test_a_checkpoint_with_another_layout_is_refused():
    m = make()
    opt = LpSGD(lp_param_groups(m, p=1.3), lr=0.1)
    sd = copy.deepcopy(opt.state_dict())
    sd["param_groups"][0]["fan_in"] = [((16, 2, 4), (2,))]
    with pytest.raises(ValueError, match="fan-in layout of 0.weight"):
        opt.load_state_dict(sd)
    assert opt.param_groups[0]["fan_in"][0] == ((16, 8), (1,))


def test_a_copied_optimizer_steps():
    """torch pickles only defaults, state and groups: the change record is not
    part of a copy, which must still step (and vouch for nothing it never saw)."""
    m = make()
    opt = LpSGD(lp_param_groups(m, p=1.3), lr=0.1, momentum=0.9)
    opt2 = copy.deepcopy(opt)
    for q in opt2.param_groups[0]["params"]:
        q.grad = torch.ones_like(q)
    opt2.step()
    assert all(torch.isfinite(q).all() for g in opt2.param_groups for q in g["params"])


# ------------------------------------------------- the state kept between steps
def _no_cache(opt):
    """Forget the per-weight state the optimizer keeps between steps, so its
    next step takes the full path (rebuilds and re-validates everything)."""
    opt.__dict__.pop("_plan_holder", None)
    opt.__dict__.pop("_core_map", None)


@pytest.mark.parametrize("event", ["none", "scheduler", "momentum", "state_swap", "load"])
def test_kept_state_steps_exactly_like_a_fresh_one(event):
    """Stepping from the state kept between steps gives bit for bit what the
    full path gives, through an LR scheduler, a hyperparameter change, a
    state tensor swapped by the user and a loaded checkpoint."""
    a, b = make(seed=1), make(seed=1)
    oa = LpSGD(lp_param_groups(a, p=1.3), lr=0.05, momentum=0.9)
    ob = LpSGD(lp_param_groups(b, p=1.3), lr=0.05, momentum=0.9)
    sa = torch.optim.lr_scheduler.StepLR(oa, step_size=2, gamma=0.5)
    sb = torch.optim.lr_scheduler.StepLR(ob, step_size=2, gamma=0.5)
    torch.manual_seed(2)
    for t in range(8):
        for qa, qb in zip(a.parameters(), b.parameters()):
            g = torch.randn_like(qa)
            qa.grad, qb.grad = g.clone(), g.clone()
        if t == 4:
            if event == "momentum":
                oa.param_groups[0]["momentum"] = ob.param_groups[0]["momentum"] = 0.5
            elif event == "state_swap":
                for o, m in ((oa, a), (ob, b)):
                    w = m[0].weight
                    o.state[w]["momentum_buffer"] = o.state[w]["momentum_buffer"] * 0.25
            elif event == "load":
                sd = copy.deepcopy(ob.state_dict())
                oa.load_state_dict(sd)
                ob.load_state_dict(copy.deepcopy(sd))
        oa.step()
        _no_cache(ob)
        ob.step()
        if event == "scheduler":
            sa.step()
            sb.step()
        assert torch.equal(flat(a), flat(b)), t
    w = a[0].weight  # the constrained weight: its state is kept again after any event
    held = oa.__dict__["_plan_holder"]
    assert any(q is w for q in held.params)
    oa.step()
    assert oa.__dict__["_plan_holder"] is held


def test_kept_state_follows_a_replaced_weight_tensor():
    """``param.data = ...`` gives the parameter new memory: the kept views of
    the old memory must not be written."""
    a = make(seed=3)
    oa = LpSGD(lp_param_groups(a, p=1.3), lr=0.05)
    w = a[0].weight
    for _ in range(2):
        for q in a.parameters():
            q.grad = torch.ones_like(q)
        oa.step()
    old = w.data
    snapshot = old.clone()
    w.data = w.data.clone() * 2.0
    oa.step()
    assert torch.equal(old, snapshot)  # the old storage was not touched
    oa.step()  # the step after the change keeps the state of the new memory
    assert torch.equal(old, snapshot)
    held = oa.__dict__["_plan_holder"]
    assert held.params[0] is w and held.keys[0][1] == w.data_ptr()


def test_set_mask_refuses_what_it_cannot_use_and_a_bad_mask_writes_nothing():
    m = make()
    opt = LpSGD(lp_param_groups(m, p=1.3), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="not a constrained weight"):
        opt.set_mask(m[0].bias, torch.ones(16, dtype=torch.bool))
    w = m[0].weight
    opt.set_mask(w, lambda: torch.ones(w.shape))  # a float tensor, not a mask
    for q in m.parameters():
        q.grad = torch.ones_like(q)
    before = flat(m)
    state = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=r"the mask of 0\.weight must be a bool tensor"):
        opt.step()
    assert torch.equal(flat(m), before)
    after = opt.state_dict()["state"]
    for k, st in state["state"].items():
        for key, v in st.items():
            assert torch.equal(torch.as_tensor(after[k][key]), torch.as_tensor(v)), (k, key)
    opt.set_mask(w, None)  # removed: the step goes through
    opt.step()
    assert not torch.equal(flat(m), before)


def test_a_weight_changed_outside_is_projected_before_a_primal_step():
    """The fresh path steps the projected copy (primal reads w itself): the same
    as lpcore's step from the projected weights and a fresh state."""
    import numpy as np
    import lpcore
    a = make(seed=4)
    opt = LpSGD(lp_param_groups(a, p=1.4), lr=0.05, variant="primal")
    w = a[0].weight
    for q in a.parameters():
        q.grad = torch.ones_like(q)
    opt.step()
    new = torch.randn_like(w) * 3.0
    with torch.no_grad():
        w.copy_(new)
    g = torch.randn_like(w)
    for q in a.parameters():
        q.grad = torch.zeros_like(q)
    w.grad = g.clone()
    opt.step()
    ref = new.numpy().astype(np.float64).copy()
    core = lpcore.LpSGD(1.4, lr=0.05, variant="primal")
    st = core.init(ref, axis=1)
    st.step = 1
    core.step(ref, g.numpy().astype(np.float64), st)
    np.testing.assert_allclose(w.detach().numpy(), ref, rtol=1e-5, atol=1e-6)
