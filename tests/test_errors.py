"""Bad input: the right exception, a message naming the argument or group, and
the caller's arrays (inputs and ``out``) left exactly as they were."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import lpcore
from lpcore.testing import assert_unchanged


def _calls(x, other, out):
    """(name, callable) for every public function taking data, with ``out`` where accepted."""
    return [
        ("norm", lambda: lpcore.norm(x, 1.5, axis=1)),
        ("normalize", lambda: lpcore.normalize(x, 1.5, axis=1, out=out)),
        ("project_tangent:w", lambda: lpcore.project_tangent(x, other, 1.5, axis=1, out=out)),
        ("project_tangent:g", lambda: lpcore.project_tangent(other, x, 1.5, axis=1, out=out)),
        ("retract", lambda: lpcore.retract(other, x, 1.5, axis=1, out=out)),
        ("to_dual", lambda: lpcore.to_dual(x, 1.5, out=out)),
        ("from_dual", lambda: lpcore.from_dual(x, 1.5, out=out)),
        ("project_ball", lambda: lpcore.project_ball(x, 1.5, axis=1, out=out)),
        ("hoyer", lambda: lpcore.hoyer(x, axis=1)),
    ]


@given(st.sampled_from([np.float32, np.float64]), st.sampled_from([np.nan, np.inf, -np.inf]),
       st.sampled_from(["first", "last", "middle"]), st.booleans())
def test_nonfinite_data_raise_name_group_and_touch_nothing(dtype, bad, where, out_is_input):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 6)).astype(dtype)
    row, col = {"first": (0, 0), "last": (4, 5), "middle": (2, 3)}[where]
    x[row, col] = bad
    other = lpcore.normalize(rng.standard_normal((5, 6)).astype(dtype), 1.5, axis=1)
    x0, other0 = x.copy(), other.copy()
    out = x if out_is_input else np.full_like(x, 7.0)
    out0 = out.copy()
    for name, call in _calls(x, other, out):
        with pytest.raises(ValueError) as ei:
            call()
        msg = str(ei.value)
        assert "NaN or Inf" in msg, (name, msg)
        if name in ("to_dual", "from_dual"):
            assert f"({row}, {col})" in msg, (name, msg)
        else:
            assert f"group ({row},)" in msg, (name, msg)
        assert_unchanged(x0, x)
        assert_unchanged(other0, other)
        assert_unchanged(out0, out)


def test_nonfinite_leaves_out_buffer_untouched():
    x = np.ones((3, 4))
    x[2, 1] = np.nan
    out = np.full((3, 4), 7.0)
    for f in (lambda: lpcore.normalize(x, 2, axis=1, out=out),
              lambda: lpcore.project_ball(x, 1.5, axis=1, out=out),
              lambda: lpcore.project_tangent(np.ones((3, 4)), x, 1.5, axis=1, out=out),
              lambda: lpcore.to_dual(x, 1.5, out=out)):
        with pytest.raises(ValueError):
            f()
        assert np.all(out == 7.0)


@pytest.mark.parametrize("p", [np.nan, 0.5, 1.0, -2.0, np.inf, "2", None, True])
def test_p_out_of_range_for_sphere_maps(p):
    w = np.ones((2, 3))
    for f in (lambda: lpcore.project_tangent(w, w, p), lambda: lpcore.to_dual(w, p),
              lambda: lpcore.from_dual(w, p)):
        with pytest.raises((ValueError, TypeError), match="p"):
            f()


@pytest.mark.parametrize("p", [np.nan, 0.0, -1.0, -np.inf])
def test_p_out_of_range_for_norm(p):
    with pytest.raises(ValueError, match=r"p"):
        lpcore.norm(np.ones(3), p)


@pytest.mark.parametrize("p", [0.5, 0.99, np.nan])
def test_normalize_and_ball_need_p_at_least_one(p):
    with pytest.raises(ValueError, match="p"):
        lpcore.normalize(np.ones(3), p)
    with pytest.raises(ValueError, match="p"):
        lpcore.project_ball(np.ones(3), p)
    with pytest.raises(ValueError, match="p"):
        lpcore.retract(np.ones(3), np.ones(3), p)


def test_radius_checked():
    for r in (-1.0, np.nan, np.inf):
        with pytest.raises(ValueError, match="radius"):
            lpcore.project_ball(np.ones(3), 2, radius=r)


@pytest.mark.parametrize("bad", [np.ones(3, dtype=complex), np.array(["a", "b"]),
                                 np.array([1, None], dtype=object)])
def test_unsupported_dtypes(bad):
    for f in (lambda: lpcore.norm(bad, 2), lambda: lpcore.normalize(bad, 2),
              lambda: lpcore.hoyer(bad), lambda: lpcore.to_dual(bad, 1.5),
              lambda: lpcore.project_ball(bad, 2)):
        with pytest.raises(TypeError, match="x|w|y"):
            f()


def test_shape_mismatch_names_argument():
    w = np.ones((2, 3))
    with pytest.raises(ValueError, match="g has shape"):
        lpcore.project_tangent(w, np.ones((3, 2)), 1.5)
    with pytest.raises(ValueError, match="xi has shape"):
        lpcore.retract(w, np.ones(3), 1.5)
    with pytest.raises(ValueError, match="out has shape"):
        lpcore.normalize(w, 2, out=np.ones((3, 2)))
    with pytest.raises(TypeError, match="out"):
        lpcore.normalize(w, 2, out=np.ones((2, 3), dtype=np.int64))
    with pytest.raises(TypeError, match="out"):
        lpcore.normalize(w, 2, out=[[0, 0, 0]])
    ro = np.ones((2, 3))
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        lpcore.normalize(w, 2, out=ro)


def test_axis_errors():
    with pytest.raises(np.exceptions.AxisError):
        lpcore.norm(np.ones((2, 3)), 2, axis=2)
    with pytest.raises(ValueError):
        lpcore.norm(np.ones((2, 3)), 2, axis=(1, 1))
    with pytest.raises(TypeError, match="axis"):
        lpcore.norm(np.ones((2, 3)), 2, axis=1.5)


def test_zero_groups():
    w = np.array([[1.0, 2.0], [0.0, 0.0], [0.0, 0.0]])
    w0 = w.copy()
    with pytest.raises(ValueError, match=r"group \(1,\)"):
        lpcore.project_tangent(w, np.ones_like(w), 1.5, axis=1)
    with pytest.raises(ValueError, match=r"w \+ xi is all zero in group \(0,\)"):
        lpcore.retract(np.array([[1.0, 0.0]]), np.array([[-1.0, 0.0]]), 2, axis=1)
    assert_unchanged(w0, w)


def test_zero_option_checked():
    with pytest.raises(ValueError, match="zero"):
        lpcore.normalize(np.ones(3), 2, zero="skip")


def test_lpsgd_messages_name_the_real_cause():
    """A finite float64 gradient beyond float32's range is not 'NaN'; a NaN
    weight with weight_decay=0 is not blamed on weight decay."""
    w = np.full((2, 4), 0.5, np.float32)
    opt = lpcore.LpSGD(lr=0.1, p=2)
    st = opt.init(w, axis=1)
    before = w.copy()
    with pytest.raises(ValueError, match=r"grad is finite in float64 but overflows w's dtype "
                                         r"float32 in group \(0,\)"):
        opt.step(w, np.full((2, 4), 1e39), st)
    np.testing.assert_array_equal(w, before)
    for variant in ("dual", "primal", "riemannian"):
        o = lpcore.LpSGD(lr=0.1, p=2, variant=variant)
        s = o.init(np.full((2, 4), 0.5, np.float32), axis=1)
        w = np.full((2, 4), 0.5, np.float32)
        w[1, 0] = np.nan
        with pytest.raises(ValueError, match=r"contains NaN or Inf in group \(1,\)") as e:
            o.step(w, np.ones((2, 4), np.float32), s)
        assert "weight decay" not in str(e.value)


# ------------------------------------------------------------ hostile arguments (reliability issue)
def test_state_from_dict_refuses_what_it_would_truncate():
    opt = lpcore.LpSGD(1.5, 0.1, lr_decay=0.1)
    w = np.random.default_rng(0).random((3, 4))
    d = opt.init(w, axis=1).to_dict()
    for key, v in (("step", 2.7), ("step", -1), ("step", np.nan), ("shape", [3, 6.5]),
                   ("shape", [3, -4]), ("axis", [0.5]), ("step", "2")):
        bad = dict(d, **{key: np.array(v)})
        with pytest.raises(ValueError, match=key):
            lpcore.LpSGDState.from_dict(bad)
    assert lpcore.LpSGDState.from_dict(d).step == 0


@pytest.mark.parametrize("step", [-1, -5, 2.0, 2.5, True, None])
def test_step_refuses_a_bad_state_step(step):
    opt = lpcore.LpSGD(1.5, 0.1, lr_decay=0.5)
    w = np.random.default_rng(0).random((3, 4))
    st = opt.init(w, axis=1)
    st.step = step
    w0, d0 = w.copy(), st.dual.copy()
    with pytest.raises(ValueError, match="state.step"):
        opt.step(w, np.ones_like(w), st)
    assert np.array_equal(w, w0) and np.array_equal(st.dual, d0)


@pytest.mark.parametrize("name", ["dual", "momentum_buffer"])
def test_read_only_state_is_a_clear_error(name):
    opt = lpcore.LpSGD(1.5, 0.1, momentum=0.9)
    w = np.random.default_rng(0).random((3, 4))
    st = opt.init(w, axis=1)
    opt.step(w, np.ones_like(w), st)
    getattr(st, name).flags.writeable = False
    w0 = w.copy()
    with pytest.raises(ValueError, match=f"state.{name} is read-only"):
        opt.step(w, np.ones_like(w), st)
    assert np.array_equal(w, w0)


@pytest.mark.parametrize("call, err, match", [
    (lambda: lpcore.drop_threshold_schedule(0, np.nan, 0, 10), ValueError, "h0"),
    (lambda: lpcore.drop_threshold_schedule(0, 0.2, 0, np.nan), ValueError, "end"),
    (lambda: lpcore.drop_threshold_schedule(np.nan, 0.2, 0, 10), ValueError, "step"),
    (lambda: lpcore.drop_threshold_schedule(0, 0.2, 0, 10, final_ratio=np.nan), ValueError,
     "final_ratio"),
    (lambda: lpcore.sparsity_schedule(0, np.nan, 0.9, 0, 10), ValueError, "s0"),
    (lambda: lpcore.grow_ratio(0.5, 0.9, np.nan), ValueError, "h"),
    (lambda: lpcore.grow_ratio(0.5, 0.9, 0.2, delta=np.nan), ValueError, "delta"),
    (lambda: lpcore.grow_ratio(np.nan, 0.9, 0.2), ValueError, "sparsity"),
    (lambda: lpcore.drop_smallest(np.array([1 + 1j, 2.0]), np.array([True, True]), 1),
     TypeError, "real array"),
    (lambda: lpcore.drop_smallest(np.array(["a", "b"]), np.array([True, True]), 1),
     TypeError, "real array"),
    (lambda: lpcore.grow_random(np.array([True, False]), 1, "seed"), TypeError, "rng"),
    (lambda: lpcore.random_mask((3, 4), np.nan, None), ValueError, "sparsity"),
    (lambda: lpcore.expected_hoyer(100, "1.3"), TypeError, "p must be a real"),
    (lambda: lpcore.expected_hoyer(100, True), TypeError, "p must be a real"),
    (lambda: lpcore.norm(np.ones((2, 3)), 2, axis=True), TypeError, "axis"),
    (lambda: lpcore.normalize(np.ones((2, 3)), 2, axis=(0, False)), TypeError, "axis"),
    (lambda: lpcore.hoyer(np.ones((2, 3)), axis=np.bool_(True)), TypeError, "axis"),
])
def test_hostile_arguments_get_a_clear_error(call, err, match):
    with pytest.raises(err, match=match):
        call()


@pytest.mark.parametrize("rng", [None, 3, np.random.default_rng(3)])
def test_rng_accepts_what_numpy_accepts(rng):
    m = lpcore.random_mask((4, 5), 0.5, rng)
    assert int((~m).sum()) == 10
    new, idx = lpcore.grow_random(m, 3, rng)
    assert idx.size == 3 and int(new.sum()) == 13


class _StreamProto:
    def __init__(self, value):
        self.value = value

    def __cuda_stream__(self):
        return self.value


@pytest.mark.parametrize("bad, err, msg", [
    (-3, ValueError, r"stream must be a handle in \[0, 2\*\*64\)"),
    (2**64, ValueError, r"stream must be a handle in \[0, 2\*\*64\)"),
    (_StreamProto((0, -1)), ValueError, r"__cuda_stream__\(\)\[1\] must be a handle"),
    (_StreamProto((0, 2**70)), ValueError, r"__cuda_stream__\(\)\[1\] must be a handle"),
    (_StreamProto((0, 1.9)), TypeError, "must be an integer handle"),  # was legacy stream 1
    (_StreamProto(5), TypeError, r"must return a \(version, handle\) pair"),
])
def test_cuda_stream_refuses_impossible_handles(bad, err, msg):
    """Checked before any GPU is touched (no numba.cuda needed)."""
    with pytest.raises(err, match=msg):
        with lpcore.cuda_stream(bad):
            pass  # pragma: no cover
