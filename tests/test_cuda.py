"""What is particular to GPU arrays: launch geometry (groups over many slices,
grid-stride rounds), strided device layouts and ``out=``, float64 accumulation
of float32 sums, the CUDA LpSGD step against the CPU one, and errors on device
arrays.  The properties of DESIGN section 4 run on both backends through the
``backend`` fixture (``tests/conftest.py``) in ``test_norms.py``,
``test_sphere.py``, ``test_hoyer.py``, ``test_ball.py`` and
``test_extremes.py``; ``test_registry.py`` checks every public function on
every backend.

Runs on a real GPU, or under the CUDA simulator::

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/test_cuda.py

and skips when neither is there.  Blocks are tiny here (4 threads, 2 items
per thread: 8 elements per block slice), so small inputs already span
several slices per group and several grid-stride rounds.  The simulator
cannot show warp-level behaviour, races between blocks or the compiled
signatures: the kernels use no warp primitives and no cross-block
communication besides the atomic 'first bad group', and the signatures are
compiled for sm_90 in ``tests/test_cuda_ptx.py``.
"""
import os

import numpy as np
import pytest

from numba import cuda

import lpcore
from lpcore import _device as D
from lpcore.testing import assert_allclose_dtype, assert_on_sphere
from naive import LpSGDRef, hoyer_ref, norm_ref, normalize_ref, tangent_ref

if not cuda.is_available():
    if os.environ.get("LPCORE_REQUIRE_CUDA"):  # .ci/run's simulator step: never skip silently
        raise RuntimeError("LPCORE_REQUIRE_CUDA is set but numba.cuda has no GPU or simulator")
    pytest.skip("no GPU and no CUDA simulator (NUMBA_ENABLE_CUDASIM=1)", allow_module_level=True)

from lpcore.kernels.cuda import launch_config  # noqa: E402

pytestmark = pytest.mark.cuda


#: launch geometries every test runs under: tiny blocks (small inputs span
#: many slices and grid-stride rounds) everywhere; on a real GPU also the
#: default geometry, whose blocks hold several warps
GEOMETRIES = ["tiny"] if D.simulated() else ["tiny", "default"]


@pytest.fixture(autouse=True, params=GEOMETRIES)
def geometry(request):
    if request.param == "default":
        yield
        return
    with launch_config(threads=4, items=2, max_blocks=4):
        yield


def dev(x):
    """A device array with x's shape, dtype and strides (F-ordered and strided too)."""
    x = np.asarray(x)
    if x.flags.c_contiguous:
        return cuda.to_device(x)
    span = D.extent(x)
    base = np.lib.stride_tricks.as_strided(x, (span,), (x.dtype.itemsize,)).copy()
    return D.view(cuda.to_device(base), x.shape, x.strides)


def host(d):
    return d.copy_to_host() if D.is_device(d) else np.asarray(d)


# ---------------------------------------------------------------------------
# layouts, long groups, dtypes, out=
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_long_group_many_slices_and_many_groups(dtype, rng):
    # axis=None on 301 elements: 38 slices of 8 combined by the two-stage reduction
    v = rng.standard_normal(301).astype(dtype)
    v[200] = 30.0  # the max lives in one late slice only
    for p in (1.0, 1.3, 2.0, np.inf):
        assert_allclose_dtype(host(lpcore.norm(dev(v), p)), norm_ref(v, p), dtype=dtype)
    assert_allclose_dtype(host(lpcore.hoyer(dev(v))), hoyer_ref(v), dtype=dtype, factor=4)
    # more groups than threads in the grid: grid-stride combine and writes
    X = rng.standard_normal((37, 3)).astype(dtype)
    assert_allclose_dtype(host(lpcore.normalize(dev(X), 1.5, axis=1)), normalize_ref(X, 1.5, 1),
                          dtype=dtype, scale=1.0)


def test_layouts_integer_and_half_inputs(rng):
    x = rng.standard_normal((3, 4, 5))
    xf = np.asfortranarray(x)
    for axis in [(0, 2), 1, None, (2, 1)]:
        assert_allclose_dtype(host(lpcore.normalize(dev(xf), 1.4, axis=axis)),
                              normalize_ref(x, 1.4, axis), dtype=np.float64, scale=1.0)
    xi = rng.integers(-5, 6, size=(4, 6))
    xi[:, 0] = 3
    got = lpcore.norm(dev(xi), 3, axis=1)
    assert got.dtype == np.float64
    assert_allclose_dtype(host(got), norm_ref(xi.astype(np.float64), 3, 1), dtype=np.float64)
    xh = rng.standard_normal((2, 9)).astype(np.float16)
    y = lpcore.normalize(dev(xh), 2, axis=1)
    assert y.dtype == np.float16
    np.testing.assert_allclose(host(y), lpcore.normalize(xh, 2, axis=1), rtol=2e-3, atol=1e-3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_in_place_and_strided(dtype, rng):
    x = rng.standard_normal((4, 9)).astype(dtype)
    want = lpcore.normalize(x, 1.3, axis=1)
    d = dev(x)
    assert lpcore.normalize(d, 1.3, axis=1, out=d) is d  # in place
    assert_allclose_dtype(host(d), want, dtype=dtype, scale=1.0)
    # out with other strides (written through the scatter kernel), and float32 out
    out = dev(np.asfortranarray(np.zeros((4, 9), dtype=dtype)))
    lpcore.normalize(dev(x), 1.3, axis=1, out=out)
    assert_allclose_dtype(host(out), want, dtype=dtype, scale=1.0)
    # project_tangent into g itself; project_ball into y itself
    w = lpcore.normalize(x, 1.5, axis=1)
    g = rng.standard_normal((4, 9)).astype(dtype)
    dg = dev(g)
    lpcore.project_tangent(dev(w), dg, 1.5, axis=1, out=dg)
    assert_allclose_dtype(host(dg), lpcore.project_tangent(w, g, 1.5, axis=1), dtype=dtype,
                          scale=np.abs(g).max())
    dy = dev(3 * x)
    lpcore.project_ball(dy, 1.5, axis=1, out=dy)
    assert_allclose_dtype(host(dy), lpcore.project_ball(3 * x, 1.5, axis=1), dtype=dtype,
                          scale=1.0, factor=10)


def test_hoyer_layer_network_and_all_finite(rng):
    ws = [rng.standard_normal((6, 3, 2, 2)), rng.standard_normal((5, 7))]
    dws = [dev(w) for w in ws]
    assert lpcore.hoyer_layer(dws[0]) == pytest.approx(lpcore.hoyer_layer(ws[0]), rel=1e-12)
    assert lpcore.hoyer_network(dws) == pytest.approx(lpcore.hoyer_network(ws), rel=1e-12)
    assert lpcore.all_finite(dws[1])
    bad = ws[1].copy()
    bad[4, 6] = -np.inf
    assert not lpcore.all_finite(dev(bad))


def test_scalar_and_keepdims_results(rng):
    x = rng.standard_normal((3, 5))
    r = lpcore.norm(dev(x), 1.5)
    assert D.is_device(r) and r.shape == ()
    assert float(host(r)) == pytest.approx(norm_ref(x, 1.5), rel=1e-12)
    assert lpcore.norm(dev(x), 1.5, axis=1, keepdims=True).shape == (3, 1)
    assert lpcore.hoyer(dev(x), axis=0, keepdims=True).shape == (1, 5)


# ---------------------------------------------------------------------------
# errors: the CPU messages, nothing written
@pytest.mark.parametrize("where", [0, 17, -1])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_raises_names_group_and_writes_nothing(where, bad, rng):
    x = rng.standard_normal((3, 12))
    x.reshape(-1)[where] = bad
    grp = np.unravel_index(where % x.size, x.shape)[0]
    d = dev(x)
    out = dev(np.full_like(x, 7.0))
    cases = [
        lambda: lpcore.norm(d, 1.3, axis=1),
        lambda: lpcore.normalize(d, 1.3, axis=1, out=out),
        lambda: lpcore.hoyer(d, axis=1),
        lambda: lpcore.project_ball(d, 1.3, axis=1, out=out),
        lambda: lpcore.project_tangent(d, dev(np.ones_like(x)), 1.3, axis=1, out=out),
        lambda: lpcore.project_tangent(dev(np.ones_like(x)), d, 1.3, axis=1, out=out),
        lambda: lpcore.retract(d, dev(np.zeros_like(x)), 1.3, axis=1, out=out),
    ]
    for f in cases:
        with pytest.raises(ValueError, match=rf"NaN or Inf in group \({grp},\)"):
            f()
    with pytest.raises(ValueError, match=r"NaN or Inf \(first at index"):
        lpcore.to_dual(d, 1.3, out=out)
    np.testing.assert_array_equal(host(d), x)
    np.testing.assert_array_equal(host(out), np.full_like(x, 7.0))


def test_zero_group_and_argument_errors(rng):
    x = rng.standard_normal((3, 4))
    x[1] = 0
    with pytest.raises(ValueError, match=r"all zero in group \(1,\)"):
        lpcore.normalize(dev(x), 2, axis=1)
    np.testing.assert_array_equal(host(lpcore.normalize(dev(x), 2, axis=1, zero="keep"))[1], 0)
    with pytest.raises(ValueError, match=r"w is all zero in group \(1,\)"):
        lpcore.project_tangent(dev(x), dev(x), 1.5, axis=1)
    with pytest.raises(ValueError, match="p=0.5 is out of range"):
        lpcore.normalize(dev(x), 0.5)
    with pytest.raises(ValueError, match="g has shape"):
        lpcore.project_tangent(dev(x), dev(x[:, :2]), 1.5)
    with pytest.raises(ValueError, match="out has shape"):
        lpcore.normalize(dev(x + 1), 2, out=dev(x[:, :2]))
    with pytest.raises(ValueError, match="at least 2 entries"):
        lpcore.hoyer(dev(x[:, :1]), axis=1)


def test_mixed_host_and_device_arrays_raise():
    x = np.ones((2, 3))
    with pytest.raises(TypeError, match=r"w on the GPU but g on the host"):
        lpcore.project_tangent(dev(x), x, 1.5)
    with pytest.raises(TypeError, match=r"out on the GPU but x on the host"):
        lpcore.normalize(x, 2, out=dev(x))
    with pytest.raises(TypeError, match="works on host"):
        lpcore.ste_mask_grad(dev(x), x)
    with pytest.raises(TypeError, match=r"w on the GPU but mask on the host"):
        lpcore.unmasked_mean_magnitude(dev(x), np.ones((2, 3), bool))
    with pytest.raises(TypeError, match=r"w on the GPU but mask on the host"):
        lpcore.drop_smallest(dev(x), np.ones((2, 3), bool), 1)


# ---------------------------------------------------------------------------
# LpSGD on device arrays: the same code, the CUDA step
@pytest.mark.parametrize("variant", ["dual", "primal", "riemannian"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lpsgd_device_matches_cpu_and_reference(variant, dtype, rng):
    kw = dict(p=1.3, lr=0.2, momentum=0.9, nesterov=True, weight_decay=0.01, variant=variant)
    w0 = rng.standard_normal((3, 19))
    w = w0.astype(dtype)
    dw = dev(w)
    opt = lpcore.LpSGD(**kw)
    s_cpu = opt.init(w, axis=1)
    s_dev = opt.init(dw, axis=1)
    ref = LpSGDRef(**kw)
    ref.init(w0.astype(dtype).astype(np.float64))
    for _ in range(3):
        g = rng.standard_normal(w.shape).astype(dtype)
        g[1] = 0  # a zero-direction group stays put (its buffer still advances)
        opt.step(w, g, s_cpu)
        opt.step(dw, dev(g), s_dev)
        ref.step(g.astype(np.float64))
    assert_allclose_dtype(host(dw), w, dtype=dtype, scale=1.0, factor=10)
    assert_allclose_dtype(host(dw), ref.w, dtype=dtype, scale=1.0, factor=10)
    assert_on_sphere(host(dw), 1.3, axis=1, factor=10)
    assert_allclose_dtype(host(s_dev.momentum_buffer), s_cpu.momentum_buffer, dtype=dtype,
                          scale=1.0, factor=10)
    if variant == "dual":
        assert_allclose_dtype(host(s_dev.dual), s_cpu.dual, dtype=dtype, scale=1.0, factor=10)


def test_lpsgd_long_group_axis_none_and_strided_weight(rng):
    # one group over several slices (two-stage phase reductions), then a
    # weight whose groups are not trailing (gathered, stepped, scattered back)
    for shape, axis in [((61,), None), ((4, 3, 5), (0, 2))]:
        w = rng.standard_normal(shape)
        dw = dev(w)
        opt = lpcore.LpSGD(p=1.5, lr=0.3, momentum=0.5)
        s1, s2 = opt.init(w, axis=axis), opt.init(dw, axis=axis)
        for _ in range(2):
            g = rng.standard_normal(shape)
            opt.step(w, g, s1)
            opt.step(dw, dev(g), s2)
        assert_allclose_dtype(host(dw), w, dtype=np.float64, scale=1.0, factor=10)


def test_lpsgd_device_errors_write_nothing_and_state_round_trips(rng):
    w = rng.standard_normal((3, 10))
    dw = dev(w)
    opt = lpcore.LpSGD(p=1.4, lr=0.1, momentum=0.9)
    st_ = opt.init(dw, axis=1)
    opt.step(dw, dev(rng.standard_normal(w.shape)), st_)
    before = (host(dw), host(st_.dual), host(st_.momentum_buffer), st_.step)
    g = rng.standard_normal(w.shape)
    g[2, 4] = np.nan
    with pytest.raises(ValueError, match=r"grad contains NaN or Inf in group \(2,\); nothing"):
        opt.step(dw, dev(g), st_)
    after = (host(dw), host(st_.dual), host(st_.momentum_buffer), st_.step)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    # host state for a device weight is a mixed-device error; to_device fixes it
    back = lpcore.LpSGDState.from_dict(st_.to_dict())
    with pytest.raises(TypeError, match="on the host"):
        opt.step(dw, dev(np.ones_like(w)), back)
    opt.step(dw, dev(np.ones_like(w)), back.to_device())


@pytest.mark.parametrize("items", [3, 5, 6])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_four_entry_trips_with_every_remainder(items, dtype, rng):
    # norm, hoyer, normalize's scaling and the tangent projection load four
    # entries a trip (load4); rows of 23 in slices of 4 threads x 3, 5 or 6
    # items end their threads' loops on a trip of 1, 2, 3 or 4 live entries,
    # and the row's largest entry sits in a trip's last place.  Float32 data
    # of 1e-40 at p = 7.5 takes the one-pass norm's rescaled fallback (its
    # sum underflows)
    x = rng.standard_normal((2, 23)).astype(dtype)
    x[0, 19] = 9.0
    tiny = (x * 1e-40).astype(dtype)
    with launch_config(threads=4, items=items):
        for p in (1.3, 2.0, np.inf):
            assert_allclose_dtype(host(lpcore.norm(dev(x), p, axis=1)), norm_ref(x, p, 1),
                                  dtype=dtype)
        assert_allclose_dtype(host(lpcore.hoyer(dev(x), axis=1)), hoyer_ref(x, 1), dtype=dtype,
                              factor=4)
        assert_allclose_dtype(host(lpcore.normalize(dev(x), 1.3, axis=1)),
                              normalize_ref(x, 1.3, 1), dtype=dtype, scale=1.0)
        w = lpcore.normalize(x, 1.3, axis=1)
        g = rng.standard_normal(x.shape).astype(dtype)
        assert_allclose_dtype(host(lpcore.project_tangent(dev(w), dev(g), 1.3, axis=1)),
                              tangent_ref(w, g, 1.3), dtype=dtype,
                              scale=np.abs(g).max(), factor=4)
        if dtype == np.float32:
            t64 = tiny.astype(np.float64)
            np.testing.assert_allclose(host(lpcore.norm(dev(tiny), 7.5, axis=1)),
                                       norm_ref(t64, 7.5, 1), rtol=1e-5)


@pytest.mark.parametrize("kind", ["norm1", "norm2", "hoyer"])
def test_float32_sums_accumulate_in_float64(kind):
    # one 1.0 and 999 entries of 4e-8: a float32 running sum stays at 1.0
    # (each addend is below half an ulp of 1), losing 4e-5 relative; float64
    # partials keep it to the final float32 rounding
    x = np.full((1, 1000), 4e-8, dtype=np.float32)
    x[0, 0] = 1.0
    x64 = x.astype(np.float64)
    with launch_config(threads=4, items=64):
        if kind == "hoyer":
            got, want = lpcore.hoyer(dev(x), axis=1), hoyer_ref(x64, 1)
        else:
            p = 1.0 if kind == "norm1" else 2.0
            # p = 2: 999 * (4e-8)^2 is far below float32 resolution of 1: use larger entries
            if p == 2.0:
                x[0, 1:] = 2e-4
                x64 = x.astype(np.float64)
            got, want = lpcore.norm(dev(x), p, axis=1), norm_ref(x64, p, 1)
    np.testing.assert_allclose(host(got).astype(np.float64), want, rtol=2e-7)


@pytest.mark.parametrize("p", [1.0, 1.3, 2.0, 3.5, 7.9])
def test_the_float32_wide_power_spans_the_float32_range(p):
    # the one-pass float32 norm's |x|^p: float32 log2/exp2 of the mantissa and
    # of a fraction of two, an exact power of two in float64; neither the
    # largest float32 (^7.9 is 1e304) nor the smallest subnormal (^7.9 is
    # 1e-354, below float64: 0) may overflow, lose its scale or turn NaN.
    # The tolerance is twice pow_wide's bound (float32 roundings on a GPU;
    # the simulator computes them in float64)
    from numba import float64
    from lpcore.kernels.cuda._reduce import pow_wide

    @cuda.jit
    def k(x, e, out):
        i = cuda.grid(1)
        if i < x.size:
            out[i] = pow_wide(abs(float64(x[i])), e, x[i])

    x = np.array([0.0, 1.4e-45, 1e-40, 1.1754944e-38, 1e-20, 0.3, 0.5, 1.0, 3.0, 1e20, 3.4028235e38,
                  -2.5, np.inf, np.nan], np.float32)
    out = cuda.device_array(x.size, np.float64)
    k[1, x.size](cuda.to_device(x), p, out)
    got = out.copy_to_host()
    want = np.abs(x.astype(np.float64)) ** p
    finite = np.isfinite(want) & (want > 0)
    np.testing.assert_allclose(got[finite], want[finite], rtol=(3 * p + 2) * 1.2e-7)
    assert np.array_equal(got[~finite], want[~finite], equal_nan=True)


def test_lpsgd_step_many_on_device_is_atomic(rng):
    opt = lpcore.LpSGD(p=1.3, lr=0.1, momentum=0.9, variant="primal")
    ws = [dev(rng.standard_normal((2, 7))), dev(rng.standard_normal((3, 4)))]
    sts = [opt.init(w, axis=1) for w in ws]
    before = [host(w) for w in ws]
    gs = [dev(rng.standard_normal((2, 7))), dev(np.full((3, 4), np.inf))]
    with pytest.raises(ValueError, match=r"grad contains NaN or Inf in group \(0,\)"):
        opt.step_many(ws, gs, sts)
    for w, b, s in zip(ws, before, sts):
        np.testing.assert_array_equal(host(w), b)
        assert s.momentum_buffer is None and s.step == 0
    gs[1] = dev(rng.standard_normal((3, 4)))
    opt.step_many(ws, gs, sts)
    for w in ws:
        assert_on_sphere(host(w), 1.3, axis=1)


# ---------------------------------------------------------------------------
# the caller's stream (lpcore.cuda_stream)
@pytest.fixture
def launches(monkeypatch):
    """The stream of every kernel launch and device-to-host copy (simulator only:
    its kernels and arrays are Python objects that can be watched)."""
    if not D.simulated():
        pytest.skip("watches the simulator's launches")
    from numba.cuda.simulator import kernel as sim_kernel
    from numba.cuda.simulator.cudadrv import devicearray as sim_array
    seen = {"launch": [], "copy": []}
    get, copy = sim_kernel.FakeCUDAKernel.__getitem__, sim_array.FakeCUDAArray.copy_to_host

    def getitem(self, conf):
        seen["launch"].append(conf[2] if len(conf) > 2 else 0)
        return get(self, conf)

    def copy_to_host(self, ary=None, stream=0):
        seen["copy"].append(stream)
        return copy(self, ary, stream)

    monkeypatch.setattr(sim_kernel.FakeCUDAKernel, "__getitem__", getitem)
    monkeypatch.setattr(sim_array.FakeCUDAArray, "copy_to_host", copy_to_host)
    return seen


def _stream_workload(rng):
    """Results of one call of each kind of GPU work (reductions, writes, the
    LpSGD step with a mask, its error path), on the host."""
    w = rng.standard_normal((3, 9))
    g = rng.standard_normal((3, 9))
    m = rng.random((3, 9)) > 0.3
    dw = dev(w)
    out = [host(lpcore.norm(dev(w), 1.5, axis=1)), host(lpcore.hoyer(dev(w), axis=1)),
           host(lpcore.normalize(dev(w.T), 1.3, axis=0)),  # strided: gather and scatter
           host(lpcore.project_ball(dev(w), 1.4, axis=1)),
           host(lpcore.project_tangent(dev(w), dev(g), 1.5, axis=1)),
           host(lpcore.to_dual(dev(w), 1.5))]
    opt = lpcore.LpSGD(p=1.3, lr=0.1, momentum=0.9)
    st_ = opt.init(dw, axis=1)
    opt.step(dw, dev(g), st_, mask=dev(m))
    bad = g.copy()
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match=r"grad contains NaN or Inf in group \(1,\)"):
        opt.step(dw, dev(bad), st_)
    return out + [host(dw), host(st_.dual), host(st_.momentum_buffer)]


def test_work_inside_cuda_stream_is_enqueued_on_that_stream(launches):
    plain = _stream_workload(np.random.default_rng(5))
    assert set(launches["launch"]) == {0} and set(launches["copy"]) - {0} == set()
    launches["launch"].clear()
    launches["copy"].clear()
    s = cuda.stream()
    with lpcore.cuda_stream(s) as got:
        assert got is s and D.stream_handle() is s
        on_s = _stream_workload(np.random.default_rng(5))
    assert D.stream_handle() is None
    # every launch and every copy to the host (flags, the error path's
    # values) went to s; the results are the same
    assert len(launches["launch"]) > 20 and all(x is s for x in launches["launch"])
    lib = [c for c in launches["copy"] if not (isinstance(c, int) and c == 0)]
    assert lib and all(c is s for c in lib)
    for a, b in zip(plain, on_s):
        np.testing.assert_array_equal(a, b)


def test_cuda_stream_scratch_is_per_stream_and_the_block_is_per_thread():
    import threading

    from lpcore.kernels.cuda import _launch
    a = _launch.scratch("test.per_stream", (4,))
    s1, s2 = cuda.stream(), cuda.stream()
    with lpcore.cuda_stream(s1):
        b = _launch.scratch("test.per_stream", (4,))
        with lpcore.cuda_stream(s2):  # nested: the inner one wins, then the outer is back
            c = _launch.scratch("test.per_stream", (4,))
            assert _launch.stream() is s2
        assert _launch.stream() is s1
        assert _launch.scratch("test.per_stream", (4,)) is b
        other = []
        t = threading.Thread(target=lambda: other.append(_launch.stream()))
        t.start()
        t.join()
        assert other == [0]  # another thread is not inside this block
    assert a is not b and b is not c and a is not c
    assert _launch.stream() == 0
    with lpcore.cuda_stream(0):  # handle 0: the default stream itself
        assert _launch.stream() == 0
        assert _launch.scratch("test.per_stream", (4,)) is a


@pytest.mark.parametrize("bad, err, msg", [
    ("stream", TypeError, "stream must be None, an int handle"),
    (-3, ValueError, "a handle in \\[0, 2\\*\\*64\\)"),
    (True, TypeError, "stream must be None"),
    (1.5, TypeError, "stream must be None"),
])
def test_cuda_stream_refuses_what_is_no_stream(bad, err, msg):
    with pytest.raises(err, match=msg):
        with lpcore.cuda_stream(bad):
            pass  # pragma: no cover
    assert D.stream_handle() is None


def test_cuda_stream_takes_the_stream_protocols():
    class TorchLike:
        cuda_stream = 1234

    class Protocol:
        def __cuda_stream__(self):
            return (0, 5678)

    class CupyLike:
        ptr = 91

    for s, h in [(TorchLike(), 1234), (Protocol(), 5678), (CupyLike(), 91), (7, 7), (None, 0)]:
        with lpcore.cuda_stream(s):
            assert D.stream_int() == h
    if D.simulated():
        with lpcore.cuda_stream(1234):
            with pytest.raises(RuntimeError, match="simulator cannot run on a foreign stream"):
                lpcore.norm(dev(np.ones((2, 3))), 2, axis=1)
