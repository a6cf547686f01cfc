import numpy as np
import pytest
from hypothesis import given, strategies as st

import lpcore
from lpcore.testing import assert_on_sphere, assert_unchanged
from naive import LpSGDRef, holder_minimizer, norm_ref

VARIANTS = ["dual", "primal", "riemannian"]


def _run(opt, w, grads, axis=1, check_sphere=True):
    state = opt.init(w, axis=axis)
    for g in grads:
        opt.step(w, g, state)
        if check_sphere:
            assert_on_sphere(w, opt.p, axis=axis)
    return state


@pytest.mark.parametrize("variant", ["dual", "primal"])
@pytest.mark.parametrize("p", [1.05, 1.3, 2.0, 3.0])
def test_constant_gradient_converges_to_holder_extremiser(variant, p, rng):
    c = rng.standard_normal((4, 12))
    w = rng.standard_normal((4, 12))
    opt = lpcore.LpSGD(p, lr=0.2, variant=variant)
    state = opt.init(w, axis=1)
    want = np.stack([holder_minimizer(ci, p) for ci in c])
    for _ in range(400):
        opt.step(w, c, state)
        assert np.max(np.abs(norm_ref(w, p, 1) - 1)) <= 1e-12
    np.testing.assert_allclose(w, want, atol=1e-9)
    q = p / (p - 1)
    np.testing.assert_allclose(np.sum(c * w, axis=1), -norm_ref(c, q, 1), rtol=1e-9)


@pytest.mark.parametrize("p", [1.05, 1.5, 3.0])
@pytest.mark.parametrize("lr", [0.05, 0.3])
def test_dual_converges_linearly_at_rate_one_minus_lr(p, lr, rng):
    c = rng.standard_normal((1, 10))
    w = rng.standard_normal((1, 10))
    opt = lpcore.LpSGD(p, lr=lr)
    state = opt.init(w, axis=1)
    q = p / (p - 1)
    vstar = -c / norm_ref(c, q, 1)[:, None]
    errs = []
    for _ in range(int(12 / lr)):
        opt.step(w, c, state)
        errs.append(np.abs(state.dual - vstar).max())
    errs = np.array(errs)
    tail = errs[(errs < 1e-3) & (errs > 1e-11)]
    ratios = tail[1:] / tail[:-1]
    assert len(ratios) >= 5
    np.testing.assert_allclose(ratios, 1 - lr, rtol=2e-3)


@pytest.mark.parametrize("p", [2.0, 3.0])
def test_riemannian_converges_for_p_at_least_two(p, rng):
    c = rng.standard_normal((3, 8))
    w = rng.standard_normal((3, 8))
    opt = lpcore.LpSGD(p, lr=0.1, variant="riemannian")
    _run(opt, w, [c] * 600)
    np.testing.assert_allclose(w, np.stack([holder_minimizer(ci, p) for ci in c]), atol=1e-8)


def test_riemannian_fixed_step_limitation_below_two():
    # documented limitation: near a coordinate hyperplane the curvature of the
    # L1.2 sphere is unbounded, so a fixed step keeps oscillating; the dual
    # variant with the same step converges
    c = np.array([[1.0, 0.5, 1e-3, -0.8, 0.3]])
    p = 1.2
    want = holder_minimizer(c[0], p)
    w = np.ones((1, 5))
    opt = lpcore.LpSGD(p, lr=0.05, variant="riemannian")
    state = opt.init(w, axis=1)
    errs = []
    for _ in range(3000):
        opt.step(w, c, state)
        errs.append(np.abs(w[0] - want).max())
    assert min(errs[-500:]) > 1e-6
    wd = np.ones((1, 5))
    _run(lpcore.LpSGD(p, lr=0.05), wd, [c] * 3000, check_sphere=False)
    np.testing.assert_allclose(wd[0], want, atol=1e-9)


@st.composite
def _hyper(draw):
    mom = draw(st.sampled_from([0.0, 0.5, 0.9]))
    nest = mom > 0 and draw(st.booleans())
    return dict(momentum=mom, nesterov=nest,
                dampening=0.0 if nest or mom == 0 else draw(st.sampled_from([0.0, 0.3])),
                weight_decay=draw(st.sampled_from([0.0, 1e-3, 0.1])),
                lr_decay=draw(st.sampled_from([0.0, 0.05])),
                variant=draw(st.sampled_from(VARIANTS)),
                lr=draw(st.sampled_from([0.01, 0.1, 0.5])),
                p=draw(st.sampled_from([1.1, 1.5, 2.0, 2.5])))


@given(_hyper(), st.integers(0, 2 ** 32 - 1))
def test_matches_numpy_transcription_step_by_step(hp, seed):
    rng = np.random.default_rng(seed)
    G, n = 3, 7
    w = rng.standard_normal((G, n))
    w[1, 2] = 0.0
    grads = [rng.standard_normal((G, n)) * 10 ** rng.uniform(-4, 1) for _ in range(6)]
    ref = LpSGDRef(**hp)
    ref.init(w)
    opt = lpcore.LpSGD(**hp)
    state = opt.init(w, axis=1)
    for g in grads:
        want = ref.step(g)
        opt.step(w, g, state)
        np.testing.assert_allclose(w, want, rtol=1e-9, atol=1e-12)
        assert np.max(np.abs(norm_ref(w, hp["p"], 1) - 1)) <= 1e-12
        if ref.buf is not None:
            # FMA contraction rounds differently from NumPy; where mu * buf and
            # d cancel, compare against the buffer's scale
            np.testing.assert_allclose(state.momentum_buffer, ref.buf, rtol=1e-12,
                                       atol=1e-12 * np.abs(ref.buf).max())
    assert state.step == len(grads)


@pytest.mark.parametrize("variant", ["dual", "primal"])
@pytest.mark.parametrize("scale", [1e-300, 1e-150, 1e-139, 1e-20, 1e20, 1e139, 1e150, 1e300])
def test_the_step_does_not_depend_on_the_gradients_scale(variant, scale, rng):
    # dual and primal step along d / ||d||_q: at p = 2 the norm is summed
    # unscaled where the group max keeps the squares in range and max-scaled
    # elsewhere; both give the step of the unit-scale gradient
    w = rng.standard_normal((3, 7))
    g = rng.standard_normal((3, 7))
    for p in (2.0, 1.5):
        ws = [w.copy(), w.copy()]
        for x, gg in zip(ws, (g, g * scale)):
            opt = lpcore.LpSGD(p, lr=0.1, variant=variant)
            opt.step(x, gg, opt.init(x, axis=1))
        np.testing.assert_allclose(ws[1], ws[0], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("n", [100, 511, 512, 513, 1100])
def test_float32_step_in_blocks_tracks_float64(n, rng):
    # phase 1 takes float32 powers in blocks of POW_BLOCK (512) entries: rows
    # around the block edges, the largest gradient entry in the last block
    w64 = rng.standard_normal((4, n))
    w32 = w64.astype(np.float32)
    o64, o32 = lpcore.LpSGD(1.3, lr=0.1, momentum=0.9), lpcore.LpSGD(1.3, lr=0.1, momentum=0.9)
    s64, s32 = o64.init(w64, axis=1), o32.init(w32, axis=1)
    for _ in range(3):
        g = rng.standard_normal((4, n))
        g[:, -1] = 50.0
        o64.step(w64, g, s64)
        o32.step(w32, g.astype(np.float32), s32)
    assert np.abs(w32 - w64).max() <= 1e-5 * np.abs(w64).max()


@pytest.mark.parametrize("p", [1.3, 1.5, 1.4, 1.6, 1.25, 1.1, 3.0, 1.37])
@pytest.mark.parametrize("scale", [1e-36, 1e-3, 1e25])
@pytest.mark.parametrize("masked", [False, True])
def test_float32_dual_step_with_root_exponents_tracks_float64(p, scale, masked, rng):
    # float32 dual steps whose exponents 1/(p-1) and p/(p-1) are multiples of
    # 1/2 or 1/3 (all but p = 1.37; at p = 3 only q = 3/2) take roots and
    # products of values scaled by a power of two (ratpow32), float64 ones
    # the general power; gradients of 1e-36 put the group max beyond the
    # scaling's range (the general power)
    n = 300
    w64 = rng.standard_normal((5, n))
    w64[2, :290] *= 1e-12  # a group whose powers span the float32 range
    w32 = w64.astype(np.float32)
    mask = rng.random((5, n)) > 0.3 if masked else None
    o64, o32 = lpcore.LpSGD(p, lr=0.1, momentum=0.9), lpcore.LpSGD(p, lr=0.1, momentum=0.9)
    s64, s32 = o64.init(w64, axis=1), o32.init(w32, axis=1)
    for _ in range(3):
        g = rng.standard_normal((5, n)) * scale
        g[3] = 0.0
        g32 = g.astype(np.float32)
        g = g32.astype(np.float64)  # the same gradient in both
        o64.step(w64, g, s64, mask=mask)
        o32.step(w32, g32, s32, mask=mask)
    assert np.abs(w32 - w64).max() <= 2e-5 * np.abs(w64).max()
    np.testing.assert_allclose(norm_ref(w32.astype(np.float64), p, 1), 1.0, rtol=1e-5)
    if masked:
        assert np.all(w32[~mask] == 0)


def test_planted_least_squares_on_the_sphere(rng):
    p, n = 1.3, 20
    wstar = lpcore.normalize(rng.standard_normal((1, n)) * (rng.random((1, n)) < 0.4) + 1e-3 *
                             rng.standard_normal((1, n)), p, axis=1)
    A = rng.standard_normal((60, n))
    b = A @ wstar[0]
    w = rng.standard_normal((1, n))
    opt = lpcore.LpSGD(p, lr=0.3, momentum=0.5, lr_decay=0.05)
    state = opt.init(w, axis=1)
    loss0 = 0.5 * np.sum((A @ w[0] - b) ** 2)
    for _ in range(4000):
        g = (A.T @ (A @ w[0] - b))[None, :]
        opt.step(w, g, state)
    loss = 0.5 * np.sum((A @ w[0] - b) ** 2)
    assert loss < 1e-4 * loss0
    np.testing.assert_allclose(w, wstar, atol=2e-3)


@pytest.mark.parametrize("variant", VARIANTS)
def test_float32_tracks_float64_at_p_107_with_small_gradients(variant, rng):
    p = 1.07  # q = 15.3: |g|^q of 1e-4 gradients underflows float32 without scaling
    w64 = rng.standard_normal((8, 64))
    w32 = w64.astype(np.float32)
    kw = dict(lr=0.05, momentum=0.9, variant=variant)
    o64, o32 = lpcore.LpSGD(p, **kw), lpcore.LpSGD(p, **kw)
    s64, s32 = o64.init(w64, axis=1), o32.init(w32, axis=1)
    for _ in range(30):
        g = rng.standard_normal((8, 64)) * 1e-4
        o64.step(w64, g, s64)
        o32.step(w32, g.astype(np.float32), s32)
        assert np.all(np.isfinite(w32))
        assert_on_sphere(w32, p, axis=1)
    assert w32.dtype == np.float32
    scale = np.abs(w64).max()
    assert np.abs(w32 - w64).max() <= 2e-3 * scale


def test_zero_gradient_group_unchanged_and_zero_weight_group_stays_zero(rng):
    w = rng.standard_normal((3, 6))
    w[2] = 0.0
    opt = lpcore.LpSGD(1.5, lr=0.1)
    state = opt.init(w, axis=1)
    before = w.copy()
    g = rng.standard_normal((3, 6))
    g[0] = 0.0
    opt.step(w, g, state)
    np.testing.assert_array_equal(w[0], before[0])
    assert np.all(w[2] == 0)
    assert np.any(w[1] != before[1])


def test_layouts_axis_none_conv_and_transposed(rng):
    c = rng.standard_normal((4, 3, 2, 2))
    for axis in [(1, 2, 3), (0, 2, 3), None]:
        w = rng.standard_normal(c.shape)
        opt = lpcore.LpSGD(1.4, lr=0.2, momentum=0.5)
        state = opt.init(w, axis=axis)
        for _ in range(5):
            opt.step(w, c, state)
        if axis is None:
            assert_on_sphere(w.reshape(1, -1), 1.4, axis=1)
        else:
            k = [a for a in range(4) if a not in axis][0]
            assert_on_sphere(np.moveaxis(w, k, 0).reshape(c.shape[k], -1), 1.4, axis=1)
    # a Fortran-ordered weight gives the same result as its C-ordered copy
    wc = rng.standard_normal((5, 9))
    wf = np.asfortranarray(wc)
    g = rng.standard_normal((5, 9))
    for x in (wc, wf):
        opt = lpcore.LpSGD(1.4, lr=0.2, momentum=0.9)
        s = opt.init(x, axis=1)
        for _ in range(3):
            opt.step(x, g, s)
    np.testing.assert_allclose(wf, wc, rtol=1e-14, atol=1e-15)


def test_large_tensor_parallel_path_matches_serial_rows(rng):
    w = rng.standard_normal((64, 1024)).astype(np.float32)
    g = rng.standard_normal((64, 1024)).astype(np.float32)
    opt = lpcore.LpSGD(1.3, lr=0.1, momentum=0.9)
    s = opt.init(w, axis=1)
    w_small = w[:2].copy()
    s_small = opt.init(w_small, axis=1)
    for _ in range(3):
        opt.step(w, g, s)
        opt.step(w_small, g[:2], s_small)
    np.testing.assert_array_equal(w[:2], w_small)


def test_state_round_trip_resumes_identically(rng, tmp_path):
    w = rng.standard_normal((4, 6))
    grads = [rng.standard_normal((4, 6)) for _ in range(8)]
    opt = lpcore.LpSGD(1.2, lr=0.1, momentum=0.9, nesterov=True, lr_decay=0.1)
    ref_w = w.copy()
    ref_s = _run(opt, ref_w, grads)
    s = _run(opt, w, grads[:4])
    np.savez(tmp_path / "state.npz", **s.to_dict())
    with np.load(tmp_path / "state.npz") as f:
        s2 = lpcore.LpSGDState.from_dict(dict(f))
    for g in grads[4:]:
        opt.step(w, g, s2)
    np.testing.assert_array_equal(w, ref_w)
    np.testing.assert_array_equal(s2.dual, ref_s.dual)
    np.testing.assert_array_equal(s2.momentum_buffer, ref_s.momentum_buffer)
    assert s2.step == ref_s.step == 8


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("where", ["grad", "momentum_buffer", "state"])
def test_nonfinite_raises_names_group_and_changes_nothing(variant, where, rng):
    w = rng.standard_normal((4, 5))
    opt = lpcore.LpSGD(1.5, lr=0.1, momentum=0.9, variant=variant)
    state = opt.init(w, axis=1)
    opt.step(w, rng.standard_normal((4, 5)), state)
    g = rng.standard_normal((4, 5))
    if where == "grad":
        g[2, 3] = np.nan
        name = "grad"
    elif where == "momentum_buffer":
        state.momentum_buffer[2, 1] = np.inf
        name = "state.momentum_buffer"
    else:
        target = state.dual if variant == "dual" else w
        target[2, 0] = -np.inf
        name = "state.dual" if variant == "dual" else "w"
    w0, g0 = w.copy(), g.copy()
    d0 = state.to_dict()
    with pytest.raises(ValueError, match=rf"{name} contains NaN or Inf in group \(2,\)"):
        opt.step(w, g, state)
    assert_unchanged(w0, w)
    assert_unchanged(g0, g)
    for k, val in d0.items():
        assert_unchanged(val, state.to_dict()[k])
    assert state.step == 1


def test_optimizer_usable_after_error(rng):
    w = rng.standard_normal((3, 4))
    w_ref = w.copy()  # the same start (init projects in place)
    opt = lpcore.LpSGD(1.5, lr=0.1, momentum=0.9)
    state = opt.init(w, axis=1)
    s_ref = opt.init(w_ref, axis=1)
    bad = np.full((3, 4), np.nan)
    with pytest.raises(ValueError):
        opt.step(w, bad, state)  # first step: no momentum buffer may be created
    assert state.momentum_buffer is None
    g = rng.standard_normal((3, 4))
    opt.step(w, g, state)
    opt.step(w_ref, g, s_ref)
    np.testing.assert_array_equal(w, w_ref)


def test_argument_errors(rng):
    for kw, msg in [(dict(p=1.0, lr=0.1), "p"), (dict(p=np.inf, lr=0.1), "p"),
                    (dict(p=np.nan, lr=0.1), "p"), (dict(p=1.5, lr=0.0), "lr"),
                    (dict(p=1.5, lr=1.5), "lr"), (dict(p=1.5, lr=0.1, momentum=-1), "momentum"),
                    (dict(p=1.5, lr=0.1, nesterov=True), "nesterov"),
                    (dict(p=1.5, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
                    (dict(p=1.5, lr=0.1, weight_decay=np.nan), "weight_decay"),
                    (dict(p=1.5, lr=0.1, variant="adam"), "variant")]:
        with pytest.raises(ValueError, match=msg):
            lpcore.LpSGD(**kw)
    lpcore.LpSGD(1.5, lr=3.0, variant="riemannian")  # no convex-combination bound there
    opt = lpcore.LpSGD(1.5, lr=0.1)
    w = rng.standard_normal((3, 4))
    state = opt.init(w, axis=1)
    w0 = w.copy()
    with pytest.raises(ValueError, match="grad has shape"):
        opt.step(w, np.ones((4, 3)), state)
    with pytest.raises(ValueError, match="state was made for shape"):
        opt.step(np.ones((2, 4)), np.ones((2, 4)), state)
    with pytest.raises(TypeError, match="state"):
        opt.step(w, np.ones((3, 4)), {"step": 0})
    with pytest.raises(TypeError, match="w must be a numpy.ndarray"):
        opt.step(w.tolist(), np.ones((3, 4)), state)
    with pytest.raises(TypeError, match="float32 or float64"):
        opt.init(np.ones((3, 4), dtype=np.int64), axis=1)
    ro = w.copy()
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        opt.step(ro, np.ones((3, 4)), state)
    with pytest.raises(TypeError, match="grad"):
        opt.step(w, np.ones((3, 4), dtype=complex), state)
    assert_unchanged(w0, w)
    assert state.step == 0


def test_step_many_equals_step_and_is_atomic(rng):
    opt = lpcore.LpSGD(1.3, lr=0.1, momentum=0.9, weight_decay=1e-3)
    ws = [rng.standard_normal((4, 6)), rng.standard_normal((3, 2, 2)), rng.standard_normal((5, 3))]
    ref = [w.copy() for w in ws]
    axes = [1, (1, 2), 0]
    states = [opt.init(w, axis=a) for w, a in zip(ws, axes)]
    rstates = [opt.init(w, axis=a) for w, a in zip(ref, axes)]
    for _ in range(3):
        gs = [rng.standard_normal(w.shape) for w in ws]
        opt.step_many(ws, gs, states)
        for w, g, s in zip(ref, gs, rstates):
            opt.step(w, g, s)
        for a, b in zip(ws, ref):
            np.testing.assert_array_equal(a, b)
    # a bad gradient in the last tensor: none of the tensors changes
    gs = [rng.standard_normal(w.shape) for w in ws]
    gs[2][1, 1] = np.nan
    before = [w.copy() for w in ws]
    bufs = [s.momentum_buffer.copy() for s in states]
    with pytest.raises(ValueError, match="grad contains NaN or Inf"):
        opt.step_many(ws, gs, states)
    for w, b, s, bb in zip(ws, before, states, bufs):
        assert_unchanged(b, w)
        assert_unchanged(bb, s.momentum_buffer)
        assert s.step == 3


def test_a_plan_steps_tensors_of_several_dtypes_atomically_and_names_them(rng):
    """A plan over float32 and float64 tensors (two tables): bit-identical to
    one-tensor steps; a bad gradient in the float64 table stops the float32
    one too, and the error names the tensor."""
    opt = lpcore.LpSGD(1.4, lr=0.05, momentum=0.9, nesterov=True)
    ws = [rng.standard_normal((4, 6)).astype(np.float32), rng.standard_normal((3, 5)),
          rng.standard_normal((2, 9)).astype(np.float32)]
    ref = [w.copy() for w in ws]
    states = [opt.init(w, axis=1) for w in ws]
    rstates = [opt.init(w, axis=1) for w in ref]
    plan = opt.plan(ws, states, names=["a", "b", "c"])
    for _ in range(3):
        gs = [rng.standard_normal(w.shape).astype(w.dtype) for w in ws]
        plan.step(gs)
        for w, g, s in zip(ref, gs, rstates):
            opt.step(w, g, s)
    for a, b, s, r in zip(ws, ref, states, rstates):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(s.momentum_buffer, r.momentum_buffer)
        assert s.step == r.step == 3
    gs = [rng.standard_normal(w.shape).astype(w.dtype) for w in ws]
    gs[1][2, 0] = np.inf
    before = [w.copy() for w in ws]
    with pytest.raises(ValueError, match=r"b: grad contains NaN or Inf in group \(2,\)"):
        plan.step(gs)
    for w, b, s in zip(ws, before, states):
        assert_unchanged(b, w)
        assert s.step == 3
    gs[1][2, 0] = 0.0
    plan.step(gs)  # the plan goes on after an error
    assert all(s.step == 4 for s in states)
    with pytest.raises(ValueError, match="viewable in place"):
        opt.plan([np.asfortranarray(rng.standard_normal((3, 4)))], [opt.init(np.ones((3, 4)), 1)])


# ------------------------------------------------------------ the masked step
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [1.3, 2.0])  # 2: the kernels' product path
def test_masked_step_matches_the_reference(backend, variant, dtype, p, rng):
    """``step(..., mask=m)``: masked entries exact zeros, each group's active
    entries on the sphere, the dual state untouched by the mask; rows: a
    random mask, a zero-gradient row (not moved: masked and renormalised
    only when the mask zeroes an entry), an all-masked row; the mask
    changes between steps (a connection comes back)."""
    kw = dict(p=p, lr=0.2, momentum=0.9, variant=variant)
    w0 = rng.standard_normal((3, 9))
    w = backend.put(w0.astype(dtype))
    opt = lpcore.LpSGD(**kw)
    state = opt.init(w, axis=1)
    ref = LpSGDRef(**kw)
    ref.init(w0.astype(dtype).astype(np.float64))
    masks = [rng.random((3, 9)) < 0.6 for _ in range(2)]
    for m in masks:
        m[0, :2] = (True, False)
        m[1] = True
        m[1, 4] = False
        m[2] = False
    masks[1][0, 1] = True  # comes back at the second step
    for m in masks:
        g = rng.standard_normal((3, 9)).astype(dtype)
        g[1] = 0
        opt.step(w, backend.put(g), state, mask=backend.put(m))
        ref.step(g.astype(np.float64), mask=m)
        got = backend.get(w)
        assert np.all(got[~m] == 0)
        np.testing.assert_allclose(got, ref.w, atol=50 * np.finfo(dtype).eps)
        np.testing.assert_allclose(lpcore.norm(got[:2], p, axis=1), 1.0,
                                   rtol=10 * np.finfo(dtype).eps)
        if variant == "dual":
            np.testing.assert_allclose(backend.get(state.dual), ref.v,
                                       atol=50 * np.finfo(dtype).eps)
            assert np.all(backend.get(state.dual)[2] != 0)  # the latent values stay


def test_masked_step_refuses_a_bad_mask_and_writes_nothing(rng):
    opt = lpcore.LpSGD(p=1.3, lr=0.1, momentum=0.9)
    w = rng.standard_normal((3, 4))
    state = opt.init(w, axis=1)
    w0, d0 = w.copy(), state.dual.copy()
    for bad in (np.ones((3, 4)), np.ones((4, 3), bool)):
        with pytest.raises(ValueError, match="mask must be a boolean array of w's shape"):
            opt.step(w, np.ones_like(w), state, mask=bad)
    assert_unchanged(w0, w)
    assert_unchanged(d0, state.dual)
    assert state.step == 0


def test_the_step_reuses_its_workspace_and_copies_leave_it_behind(backend, rng):
    """No per-step allocation of the kernel's tables and scratch: the state keeps
    its step plan (rebuilt once, when the first momentum buffer joins the state)."""
    import copy
    import pickle
    opt = lpcore.LpSGD(p=1.3, lr=0.1, momentum=0.9)
    w = backend.put(rng.standard_normal((3, 5)))
    state = opt.init(w, axis=1)
    for _ in range(2):
        opt.step(w, backend.put(rng.standard_normal((3, 5))), state)
    work = state._work[1]
    assert isinstance(work, lpcore.StepPlan)
    for _ in range(2):
        opt.step(w, backend.put(rng.standard_normal((3, 5))), state)
        assert state._work[1] is work
    if backend.name == "numpy":  # device arrays do not pickle; a host state does
        assert pickle.loads(pickle.dumps(state))._work is None
    twin = copy.deepcopy(state) if backend.name == "numpy" else copy.copy(state)
    assert twin._work is None and twin.step == state.step
    np.testing.assert_array_equal(backend.get(twin.dual), backend.get(state.dual))


@pytest.mark.parametrize("variant", ["dual", "primal", "riemannian"])
def test_the_parallel_step_equals_the_serial_one(rng, monkeypatch, variant):
    """Whether a step runs on threads is chosen per call (by size and by how
    busy the machine is); both drivers give the same bits, masked or not."""
    from lpcore import _threads
    from lpcore.kernels import lpsgd as K
    monkeypatch.setattr(_threads, "machine_busy", lambda: False)
    shapes = [(64, 48), (32, 7), (5, 200)]
    out = {}
    for cut in (0, 1 << 40):  # every step parallel / every step serial
        monkeypatch.setattr(K, "STEP_MIN_SIZE", cut)
        r = np.random.default_rng(7)
        ws = [r.standard_normal(s).astype(np.float32) for s in shapes]
        opt = lpcore.LpSGD(1.3, lr=0.05, momentum=0.9, weight_decay=1e-3, variant=variant)
        sts = [opt.init(w) for w in ws]
        masks = [r.random(s) > 0.3 for s in shapes]
        plan = opt.plan(ws, sts, masks=[masks[0], None, masks[2]])
        for _ in range(4):
            plan.step([r.standard_normal(s).astype(np.float32) for s in shapes])
        out[cut] = [w.copy() for w in ws] + [s.momentum_buffer.copy() for s in sts]
    for a, b in zip(out[0], out[1 << 40]):
        np.testing.assert_array_equal(a, b)


@given(st.lists(st.tuples(st.integers(0, 40), st.integers(1, 5000)), min_size=1, max_size=12),
       st.integers(1, 80))
def test_the_parallel_step_splits_its_groups_into_runs_of_equal_work(tensors, nchunks):
    """The chunks cover every group once, in order, at most ``nchunks`` of
    them, and none holds more than its share of the work plus one group."""
    from lpcore.kernels.lpsgd import balanced_chunks
    G = np.array([g for g, _ in tensors])
    cost = np.array([c for _, c in tensors])
    b = balanced_chunks(G, cost, nchunks)
    per = np.repeat(cost, G)
    assert b[0] == 0 and b[-1] == per.size
    assert np.all(np.diff(b) > 0) or per.size == 0
    assert len(b) - 1 <= max(1, min(nchunks, per.size))
    if per.size == 0:
        return
    share = per.sum() / min(nchunks, max(per.size, 1))
    for lo, hi in zip(b[:-1], b[1:]):
        assert per[lo:hi].sum() <= share + per.max()


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 40)), min_size=1, max_size=5),
       st.integers(0, 30), st.sampled_from([1, 3, 8, 16]))
def test_the_gpu_step_block_table_covers_every_entry_once(tensors, goff, per_block):
    # the CUDA step's thread blocks find their tensor, group and slice in a
    # table made on the host; every entry of every group must fall in exactly
    # one block, each group's blocks in a row from its first, an empty tensor
    # keeping one block (it still advances its counters)
    from lpcore.kernels.cuda import lpsgd as L
    itab = np.zeros((len(tensors), 9), np.int64)
    for t, (G, n) in enumerate(tensors):
        itab[t, L.T_G], itab[t, L.T_N], itab[t, L.T_GOFF] = G, n, goff
        goff += G
    bt = L.block_table(itab, per_block)
    assert bt.dtype == np.int64 and bt.flags.c_contiguous
    assert list(bt[:, L.B_T]) == sorted(bt[:, L.B_T])
    gg = 0
    for t, (G, n) in enumerate(tensors):
        rows = bt[bt[:, L.B_T] == t]
        nsplit = max(1, -(-n // per_block))
        assert len(rows) == max(1, G * nsplit)
        assert (rows[:, L.B_NSPLIT] == nsplit).all()
        for i in range(G):
            mine = rows[rows[:, L.B_I] == i]
            first = np.flatnonzero((bt[:, L.B_T] == t) & (bt[:, L.B_I] == i))
            assert len(mine) == nsplit and (mine[:, L.B_B0] == first[0]).all()
            assert list(first) == list(range(first[0], first[0] + nsplit))
            assert (mine[:, L.B_GG] == gg + i).all()
            cover = np.zeros(n, int)
            for j0, j1 in mine[:, [L.B_J0, L.B_J1]]:
                assert 0 <= j0 <= j1 <= n and j1 - j0 <= per_block
                cover[j0:j1] += 1
            assert (cover == 1).all()
        if G == 0:
            assert rows[0, L.B_I] >= G  # the kernels skip it but for the counters
        gg += G
