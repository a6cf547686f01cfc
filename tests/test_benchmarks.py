"""The benchmarks' NumPy and PyTorch transcriptions of the LpSGD step compute
what lpcore computes, so that their timings compare the same work."""
import numpy as np
import pytest

import lpcore
from benchmarks.__main__ import np_lpsgd_dual


def _started(shape, p, lr, mu, seed=0):
    """Weights, the core's state after one step, and a second gradient (float64)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape)
    opt = lpcore.LpSGD(p, lr, momentum=mu)
    st = opt.init(w, axis=1)
    opt.step(w, rng.standard_normal(shape), st)
    return opt, w, st, rng.standard_normal(shape)


@pytest.mark.parametrize("p", [1.3, 2.0, 3.0])
def test_numpy_transcription_is_the_dual_step(p):
    opt, w, st, g = _started((5, 17), p, 0.05, 0.9)
    w2, buf, v = w.copy(), st.momentum_buffer.copy(), st.dual.copy()
    opt.step(w, g, st)
    np_lpsgd_dual(w2, g, buf, v, p, 0.05, 0.9)
    np.testing.assert_allclose(st.momentum_buffer, buf, rtol=1e-12)
    np.testing.assert_allclose(st.dual, v, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(w, w2, rtol=1e-10, atol=1e-14)


def test_torch_eager_step_is_lpsgd_first_step():
    torch = pytest.importorskip("torch")
    import lpcore_torch
    from benchmarks.__main__ import TorchDualStep

    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(12, 9), torch.nn.Tanh(), torch.nn.Linear(9, 7),
                                torch.nn.Tanh(), torch.nn.Linear(7, 3)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    nets[0](torch.randn(4, 12)).square().sum().backward()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        b.grad = a.grad.clone()
    ours = lpcore_torch.LpSGD(lpcore_torch.lp_param_groups(nets[0], p=1.3), lr=0.05, momentum=0.9)
    eager = TorchDualStep(lpcore_torch.lp_param_groups(nets[1], p=1.3), lr=0.05, momentum=0.9)
    ours.step()
    eager.step()
    for (name, a), b in zip(nets[0].named_parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=1e-6, msg=name)
