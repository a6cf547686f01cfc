"""The torch binding on the GPU: ``LpSGD`` and ``SparseTrainer`` on CUDA tensors.

The same tests run in two ways:

* on a machine with a GPU and torch built for CUDA, on real CUDA tensors
  (``.cuda()``), against the same run on CPU tensors;
* under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, the simulator step
  of ``.ci/run``), on CPU tensors that the binding hands to lpcore as
  simulator device arrays over their memory (the ``gpu`` fixture replaces
  the functions of ``lpcore_torch._convert`` that know what a CUDA tensor
  is): the optimizer and the trainer then take their GPU code paths
  through lpcore's CUDA kernels, on a stream of the test's own.  What the
  simulator cannot show: torch's ``__cuda_array_interface__`` and
  ``torch.as_tensor`` of a numba array, torch's current stream, speed.

Skipped when neither a GPU nor the simulator is there.
"""
import contextlib
import copy
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from numba import cuda  # noqa: E402

if not cuda.is_available():
    if os.environ.get("LPCORE_REQUIRE_CUDA"):  # .ci/run's simulator step: never skip silently
        raise RuntimeError("LPCORE_REQUIRE_CUDA is set but numba.cuda has no GPU or simulator")
    pytest.skip("no GPU and no CUDA simulator (NUMBA_ENABLE_CUDASIM=1)", allow_module_level=True)

import lpcore  # noqa: E402
import lpcore_torch  # noqa: E402
from lpcore import _device as D  # noqa: E402
from lpcore_torch import _convert as C  # noqa: E402
from naive import norm_ref  # noqa: E402

pytestmark = pytest.mark.cuda
nn = torch.nn


class GPU:
    """Where the test's GPU tensors live and how the binding sees them."""

    def __init__(self, monkeypatch):
        self.sim = D.simulated()
        if not self.sim and not torch.cuda.is_available():
            pytest.skip("numba sees a GPU but this torch has no CUDA")
        # with its index: a tensor moved to "cuda" is on "cuda:0", and
        # torch.device("cuda:0") != torch.device("cuda")
        self.device = torch.device("cpu") if self.sim else \
            torch.device("cuda", torch.cuda.current_device())
        self._mp = monkeypatch
        self.stream = cuda.stream() if self.sim else None
        self.launches = []

    def to(self, x):
        return x.to(self.device)

    @contextlib.contextmanager
    def on(self):
        """Inside: the binding treats this fixture's tensors as GPU tensors."""
        if not self.sim:
            yield
            return
        from numba.cuda.simulator import kernel as sim_kernel
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
        real_view = C.core_view
        get = sim_kernel.FakeCUDAKernel.__getitem__

        def core_view(t):
            return FakeCUDAArray(real_view(t))

        def from_core(a, device):
            return torch.from_numpy(a._ary if isinstance(a, FakeCUDAArray) else a)

        def address(t):  # a device array over the tensor, reachable by the kernels
            from lpcore.kernels.cuda._pointers import register
            register(core_view(t.reshape(-1)))
            return t.data_ptr()

        @contextlib.contextmanager
        def stream_of(tensors):
            with lpcore.cuda_stream(self.stream):
                yield

        def getitem(kern, conf):
            self.launches.append(conf[2] if len(conf) > 2 else 0)
            return get(kern, conf)

        with self._mp.context() as m:
            m.setattr(C, "core_view", core_view)
            m.setattr(C, "from_core", from_core)
            m.setattr(C, "stream_of", stream_of)
            m.setattr(C, "address", address)
            m.setattr(C, "on_gpu", lambda t: True)
            m.setattr(sim_kernel.FakeCUDAKernel, "__getitem__", getitem)
            yield


@pytest.fixture
def gpu(monkeypatch):
    from lpcore.kernels.cuda import launch_config
    # small blocks: every launch is a few simulated blocks
    with launch_config(threads=2, items=4, max_blocks=2):
        yield GPU(monkeypatch)


def _net(seed=0, width=6):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 3))


def _batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 5, generator=g), torch.randint(0, 3, (8,), generator=g))
            for _ in range(n)]


def _train(net, opt, batches, gpu=None, trainer=None):
    for x, y in batches:
        if gpu is not None:
            x, y = gpu.to(x), gpu.to(y)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        with gpu.on() if gpu is not None else contextlib.nullcontext():
            opt.step()
            if trainer is not None:
                trainer.step()


def _assert_close(a, b, rtol):
    np.testing.assert_allclose(a.detach().cpu().numpy(), b.detach().cpu().numpy(), rtol=rtol,
                               atol=rtol)


def test_lpsgd_on_gpu_tensors_matches_the_cpu_step(gpu, variant="dual"):
    ref = _net()
    net = copy.deepcopy(ref).to(gpu.device)
    kw = dict(lr=0.1, momentum=0.9, weight_decay=1e-3, variant=variant)
    opt_ref = lpcore_torch.LpSGD(lpcore_torch.lp_param_groups(ref, p=1.3), **kw)
    with gpu.on():
        opt = lpcore_torch.LpSGD(lpcore_torch.lp_param_groups(net, p=1.3), **kw)
    mask = torch.rand(6, 5, generator=torch.Generator().manual_seed(1)) > 0.3
    opt_ref.set_mask(ref[0].weight, mask)
    opt.set_mask(net[0].weight, gpu.to(mask))
    ptrs = [q.data_ptr() for q in net.parameters()]
    batches = _batches(2)
    _train(ref, opt_ref, batches)
    _train(net, opt, batches, gpu)
    assert [q.data_ptr() for q in net.parameters()] == ptrs  # stepped in place
    for a, b in zip(net.parameters(), ref.parameters()):
        _assert_close(a, b, 1e-5)
    for a, b in zip(net.parameters(), ref.parameters()):
        for k in ("dual", "momentum_buffer"):
            if k in opt_ref.state[b]:
                assert opt.state[a][k].device == gpu.device
                _assert_close(opt.state[a][k], opt_ref.state[b][k], 1e-5)
    w = net[0].weight.detach().cpu().numpy()
    assert np.all(w[~mask.numpy()] == 0)
    np.testing.assert_allclose(norm_ref(w.astype(np.float64), 1.3, 1), 1.0, rtol=1e-5)
    if gpu.sim:  # every kernel went to the step's stream (torch's current one on a GPU)
        assert gpu.launches and all(s is gpu.stream for s in gpu.launches)


def test_lpsgd_on_gpu_allocates_nothing_per_step(gpu, monkeypatch):
    if not gpu.sim:
        pytest.skip("counts the simulator's allocations (on a GPU: benchmarks/gpu_profile.py)")
    net = _net().to(gpu.device)
    with gpu.on():
        opt = lpcore_torch.LpSGD(lpcore_torch.lp_param_groups(net, p=1.4), lr=0.1,
                                 momentum=0.9)
    batches = _batches(3)
    _train(net, opt, batches[:1], gpu)  # the first step makes the momentum buffers
    made = []
    real = cuda.device_array
    monkeypatch.setattr(cuda, "device_array",
                        lambda *a, **k: made.append(a) or real(*a, **k))
    _train(net, opt, batches[1:], gpu)
    assert made == []


def test_lpsgd_on_gpu_bad_gradient_names_it_and_changes_nothing(gpu):
    net = _net().to(gpu.device)
    with gpu.on():
        opt = lpcore_torch.LpSGD(lpcore_torch.lp_param_groups(net, p=1.3), lr=0.1,
                                 momentum=0.9)
    _train(net, opt, _batches(1), gpu)
    before = [q.detach().clone() for q in net.parameters()]
    state = {k: v.clone() for k, v in opt.state[net[2].weight].items() if torch.is_tensor(v)}
    x, y = _batches(1, seed=3)[0]
    opt.zero_grad()
    nn.functional.cross_entropy(net(gpu.to(x)), gpu.to(y)).backward()
    net[2].weight.grad[4, 1] = float("nan")
    with gpu.on():
        opt.step()  # found on the device: nothing is written, nothing waited for
    for a, b in zip(net.parameters(), before):
        assert torch.equal(a.detach(), b)
    for k, v in state.items():
        assert torch.equal(opt.state[net[2].weight][k], v)
    # raised at the next step (or check / state_dict), naming the parameter and group
    with gpu.on(), pytest.raises(ValueError, match=r"earlier step: 2\.weight: grad contains "
                                                   r"NaN or Inf in group \(4,\)"):
        opt.step()
    for a, b in zip(net.parameters(), before):
        assert torch.equal(a.detach(), b)
    assert opt.state[net[2].weight]["step"] == 1
    net[2].weight.grad[4, 1] = 0.0
    with gpu.on():
        opt.step()  # the guard was cleared by raising: the optimizer goes on
        opt.check()
    assert opt.state[net[2].weight]["step"] == 2
    # a bad plain gradient (a bias) stops the constrained step too
    before = [q.detach().clone() for q in net.parameters()]
    net[0].bias.grad[1] = float("inf")
    with gpu.on():
        opt.step()
        with pytest.raises(ValueError, match=r"gradient of 0\.bias"):
            opt.check()
    for a, b in zip(net.parameters(), before):
        assert torch.equal(a.detach(), b)
    # check="immediate" raises in the step itself
    with gpu.on():
        opt2 = lpcore_torch.LpSGD(lpcore_torch.lp_param_groups(net, p=1.3), lr=0.1,
                                  momentum=0.9, check="immediate")
        net[0].bias.grad[1] = 0.0
        net[2].weight.grad[4, 1] = float("nan")
        with pytest.raises(ValueError, match=r"2\.weight: grad contains NaN"):
            opt2.step()


def test_lpsgd_step_on_gpu_makes_three_launches_and_never_waits(gpu, monkeypatch):
    """Issue 26's count: the optimizer step over constrained device tensors is a fixed
    number of launches (three, whatever the number of tensors), no synchronisation and no
    allocation after the first step; its only device-to-host traffic is the guard's
    asynchronous copy into pinned memory."""
    if not gpu.sim:
        pytest.skip("counts the simulator's launches and copies")
    torch.manual_seed(0)
    net = nn.Sequential(*[nn.Linear(6, 6, bias=False) for _ in range(9)])  # 8 constrained
    with gpu.on():
        opt = lpcore_torch.LpSGD(lpcore_torch.lp_param_groups(net, p=1.3), lr=0.1, momentum=0.9)
    assert len(opt.constrained_weights()) == 8
    net[8].weight.requires_grad_(False)  # no plain tensor: lpcore's launches alone
    batches = [(torch.randn(4, 6), None) for _ in range(3)]

    def step(x):
        opt.zero_grad()
        net(gpu.to(x)).square().mean().backward()
        with gpu.on():
            opt.step()
    step(batches[0][0])  # the first step builds the plan
    from numba.cuda.simulator.cudadrv import devicearray as sim_array
    made, copies, syncs = [], [], []
    real = cuda.device_array
    monkeypatch.setattr(cuda, "device_array", lambda *a, **k: made.append(a) or real(*a, **k))
    copy = sim_array.FakeCUDAArray.copy_to_host
    monkeypatch.setattr(sim_array.FakeCUDAArray, "copy_to_host",
                        lambda self, ary=None, stream=0: copies.append(ary) or copy(self, ary,
                                                                                   stream))
    monkeypatch.setattr(cuda, "synchronize", lambda: syncs.append(1))
    monkeypatch.setattr(type(gpu.stream), "synchronize", lambda self: syncs.append(1))
    n0 = len(gpu.launches)
    step(batches[1][0])
    assert len(gpu.launches) - n0 == 3
    assert all(s is gpu.stream for s in gpu.launches[n0:])
    assert made == [] and syncs == []
    assert len(copies) == 1 and copies[0] is not None and copies[0].size == 1  # the guard


def _lpss(device=None):
    net = _net(width=8)
    if device is not None:
        net = net.to(device)
    opt = lpcore_torch.LpSGD(lpcore_torch.lp_param_groups(net, p=1.3, target_sparsity=0.5),
                             lr=0.1, momentum=0.9)
    tr = lpcore_torch.SparseTrainer(net, opt, method="lpss", target_sparsity=0.5,
                                    init_sparsity=0.2, begin=1, end=3, frequency=1,
                                    finalize="exact")
    return net, opt, tr


def test_sparse_trainer_lpss_on_gpu_reaches_the_target_with_masks_on_the_device(gpu):
    ref, opt_ref, tr_ref = _lpss()
    _train(ref, opt_ref, _batches(4), trainer=tr_ref)
    with gpu.on():
        net, opt, tr = _lpss(gpu.device)
    _train(net, opt, _batches(4), gpu, trainer=tr)
    assert tr.sparsity == 0.5
    for it, it_ref in zip(tr.items, tr_ref.items):
        assert it.mask.device == gpu.device
        # the same decisions as on the CPU (latent values from the GPU kernels)
        assert torch.equal(it.mask.cpu(), it_ref.mask)
        w = it.weight.detach().cpu().numpy()
        m = it.mask.cpu().numpy()
        assert np.all(w[~m] == 0)
        live = np.abs(w).sum(1) > 0
        np.testing.assert_allclose(norm_ref(w[live].astype(np.float64), 1.3, 1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("method", ["lpss", "set", "scl", "concave", "chase"])
def test_sparse_trainer_decision_on_gpu_copies_no_tensor_to_the_host(gpu, monkeypatch, method):
    """Issue 26, item 5: the topology updates on GPU tensors decide on the device
    (LpSS; SET with its exact adjustment at ``end``; SCL's score steps every step;
    the concave lottery's steps, ticket and rewind; Chase's channel removal and
    zeroed biases; RigL, magnitude and IMP share SET's binding path and are compared with the host in test_topology.py).
    Inside ``trainer.step()`` no tensor is copied to the host
    (the binding's host copies are watched, and every device-to-host copy is a
    count of at most 4 integers); the masks change as in the same run on the CPU."""
    if not gpu.sim:
        pytest.skip("watches the simulator's copies")
    import lpcore_torch.sparse as S
    from numba.cuda.simulator.cudadrv import devicearray as sim_array

    def make():
        net = _net(width=8)
        opt = lpcore_torch.LpSGD(lpcore_torch.lp_param_groups(net, p=1.3), lr=0.1, momentum=0.9)
        kw = dict(begin=0, end=4, frequency=2) if method == "imp" else \
            dict(begin=1, end=4, frequency=1)
        return net, opt, lpcore_torch.SparseTrainer(net, opt, method=method, target_sparsity=0.6,
                                                    init_sparsity=0.2, **kw)
    ref, opt_ref, tr_ref = make()
    _train(ref, opt_ref, _batches(5), trainer=tr_ref)
    with gpu.on():
        net, opt, tr = make()
    start = [it.mask.clone() for it in tr.items]
    watching, sizes, hosted = [False], [], []
    copy = sim_array.FakeCUDAArray.copy_to_host
    monkeypatch.setattr(sim_array.FakeCUDAArray, "copy_to_host",
                        lambda self, ary=None, stream=0:
                        (watching[0] and sizes.append(self.size)) or copy(self, ary, stream))
    for mod in (S, C):
        real = mod.host
        monkeypatch.setattr(mod, "host", lambda t, real=real: (watching[0] and hosted.append(
            tuple(t.shape))) or real(t))
    for x, y in _batches(5):
        opt.zero_grad()
        nn.functional.cross_entropy(net(gpu.to(x)), gpu.to(y)).backward()
        with gpu.on():
            opt.step()
            watching[0] = True
            tr.step()
            watching[0] = False
    assert hosted == []
    assert sizes and max(sizes) <= 4, sizes
    assert any(not torch.equal(it.mask, m) for it, m in zip(tr.items, start))
    for it, it_ref in zip(tr.items, tr_ref.items):
        assert torch.equal(it.mask, it_ref.mask)
        assert torch.all(it.weight[~it.mask] == 0)
    with gpu.on():
        assert tr.sparsity == tr_ref.sparsity > 0.2


def test_sparse_trainer_rigl_with_torch_sgd_on_gpu_tensors(gpu):
    # RigL deciding on the device; torch's SGD momentum reset by torch ops
    net = _net(width=8).to(gpu.device)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    with gpu.on():
        tr = lpcore_torch.SparseTrainer(net, opt, method="rigl", target_sparsity=0.6,
                                        begin=1, end=3, frequency=1)
    _train(net, opt, _batches(4), gpu, trainer=tr)
    assert tr.sparsity == pytest.approx(0.6, abs=0.02)
    for it in tr.items:
        assert it.mask.device == gpu.device
        assert torch.all(it.weight[~it.mask] == 0)


def test_arrays_lpcore_makes_become_tensors_without_a_copy():
    """The masks, indices and gates a method makes on the device reach torch
    through ``from_core`` as views of the same memory, on the same device
    (``torch.as_tensor`` of a ``__cuda_array_interface__`` object without a
    device returned a host copy in old torch releases: pytorch#54139)."""
    if D.simulated() or not torch.cuda.is_available():
        pytest.skip("torch.as_tensor of a numba array needs a GPU and torch built for CUDA")
    dev = torch.device("cuda", torch.cuda.current_device())
    for a in (np.arange(6.0).reshape(2, 3), np.array([True, False, True]),
              np.array([3, 1], np.int64)):
        d = cuda.to_device(a)
        t = C.from_core(d, dev)
        assert t.device == dev and t.data_ptr() == d.device_ctypes_pointer.value
        np.testing.assert_array_equal(t.cpu().numpy(), a)


def test_cli_device_cuda_trains_on_the_gpu(tmp_path):
    if D.simulated() or not torch.cuda.is_available():
        pytest.skip("needs a GPU and torch built for CUDA")
    import json

    from lpcore_torch import cli
    out = tmp_path / "r"
    cli.main(["--device", "cuda", "--dataset", "digits", "--epochs", "2", "--out", str(out),
              "--quiet"])
    m = json.loads((out / "metrics.json").read_text())
    assert m["device"] == "cuda" and m["test_accuracy"] > 0.5


def test_lpsgd_on_gpu_channels_last_conv_weights(gpu):
    # weights and gradients that are not contiguous: stepped on a contiguous
    # copy on the device and written back
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(12, 2))
    ref = ref.to(memory_format=torch.channels_last)
    net = copy.deepcopy(ref).to(gpu.device)
    assert not net[0].weight.is_contiguous()
    opt_ref = lpcore_torch.LpSGD(lpcore_torch.lp_param_groups(ref, p=1.5), lr=0.1, momentum=0.9)
    with gpu.on():
        opt = lpcore_torch.LpSGD(lpcore_torch.lp_param_groups(net, p=1.5), lr=0.1,
                                 momentum=0.9)
    g = torch.Generator().manual_seed(2)
    for _ in range(2):
        x, y = torch.randn(4, 2, 4, 4, generator=g), torch.randint(0, 2, (4,), generator=g)
        for model, o, dev in ((ref, opt_ref, None), (net, opt, gpu)):
            o.zero_grad()
            xx = x if dev is None else dev.to(x)
            yy = y if dev is None else dev.to(y)
            nn.functional.cross_entropy(model(xx.contiguous(memory_format=torch.channels_last)),
                                        yy).backward()
            with dev.on() if dev is not None else contextlib.nullcontext():
                o.step()
    for a, b in zip(net.parameters(), ref.parameters()):
        _assert_close(a, b, 1e-5)
    w = net[0].weight.detach().cpu().reshape(3, -1).numpy().astype(np.float64)
    np.testing.assert_allclose(norm_ref(w, 1.5, 1), 1.0, rtol=1e-5)


def test_a_whole_training_step_captured_in_a_cuda_graph_replays_like_eager(gpu):
    """DESIGN section 9: forward, backward and LpSGD's masked step captured with
    torch.cuda.graph replay as the same steps run eagerly (the step count and
    the learning-rate decay in device memory, no synchronisation to break the
    capture).  Real GPU only: the simulator has no graphs."""
    if gpu.sim:
        pytest.skip("CUDA graph capture needs a real GPU")

    def make():
        net = _net(seed=3, width=16).to(gpu.device)
        groups = lpcore_torch.lp_param_groups(net, p=1.3)
        groups[0]["lr_decay"] = 0.01  # decayed on the device; the plain group's lr is fixed
        opt = lpcore_torch.LpSGD(groups, lr=0.05, momentum=0.9)
        g = torch.Generator().manual_seed(1)
        for w, _ in opt.constrained_weights():
            opt.set_mask(w, (torch.rand(w.shape, generator=g) > 0.3).to(gpu.device))
        return net, opt
    eager, opt_e = make()
    graphed, opt_g = make()
    data = [(x.to(gpu.device), y.to(gpu.device)) for x, y in _batches(9, seed=4)]

    def train(net, opt, x, y):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    for x, y in data:
        train(eager, opt_e, x, y)
    static_x, static_y = data[0][0].clone(), data[0][1].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for x, y in data[:3]:  # warm-up: compiles, makes the state and the plan
            train(graphed, opt_g, x, y)
    torch.cuda.current_stream().wait_stream(side)
    opt_g.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        nn.functional.cross_entropy(graphed(static_x), static_y).backward()
        opt_g.step()
    for x, y in data[3:]:
        static_x.copy_(x)
        static_y.copy_(y)
        graph.replay()
    torch.cuda.synchronize()
    opt_g.check()
    for a, b in zip(eager.parameters(), graphed.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    w = graphed[0].weight
    assert opt_g.state[w]["step"] == opt_e.state[eager[0].weight]["step"] == 9
