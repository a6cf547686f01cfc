"""The training loop the trainer tests share."""
import torch
from torch import nn


def random_batch(g):
    """32 samples of 20 features with random labels of 4 classes."""
    return torch.randn(32, 20, generator=g), torch.randint(0, 4, (32,), generator=g)


def train_steps(net, opt, tr, n, seed=0, after=None, batch=random_batch):
    """``n`` steps of cross-entropy on ``batch(generator)``, then ``tr.step()``
    and ``after(t)``."""
    g = torch.Generator().manual_seed(seed)
    for t in range(n):
        x, y = batch(g)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        tr.step()
        if after is not None:
            after(t)


def assert_resumes_identically(setup, steps, tmp_path, before=23, after=45):
    """Train ``before`` steps, checkpoint (model, optimizer, trainer state and
    tensor state), train ``after`` more; a fresh ``setup(seed=7)`` loaded from
    the checkpoint and trained the same ``after`` steps ends bitwise equal."""
    a_net, a_opt, a_tr = setup(seed=0)
    steps(a_net, a_opt, a_tr, before)
    torch.save({"m": a_net.state_dict(), "o": a_opt.state_dict(), "t": a_tr.state_dict(),
                "tt": a_tr.tensor_state()}, tmp_path / "ck.pt")
    steps(a_net, a_opt, a_tr, after, seed=5)
    b_net, b_opt, b_tr = setup(seed=7)
    ck = torch.load(tmp_path / "ck.pt", weights_only=False)
    b_net.load_state_dict(ck["m"])
    b_opt.load_state_dict(ck["o"])
    b_tr.load_state_dict(ck["t"])
    b_tr.load_tensor_state(ck["tt"])
    steps(b_net, b_opt, b_tr, after, seed=5)
    for (ka, va), (kb, vb) in zip(a_net.state_dict().items(), b_net.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
