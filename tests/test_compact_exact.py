"""compact() copies exactly or leaves alone: subclasses with their own
forward, a Flatten over other axes, a Linear over a convolution's length
axis, a module used twice, float64 models, torch's global RNG (the defects a
hostile-input round found)."""
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from lpcore_torch import compact  # noqa: E402


def _kill(layer, channel=1):
    with torch.no_grad():
        layer.weight[channel] = 0
        if layer.bias is not None:
            layer.bias[channel] = 0


def _same_outputs(net, x, atol=1e-6):
    net.eval()
    small = compact(net).eval()
    with torch.no_grad():
        assert torch.allclose(net(x), small(x), atol=atol)
    return small


class Twice(nn.Linear):
    def forward(self, x):
        return 2 * super().forward(x)


class LeakyReLU(nn.ReLU):
    def forward(self, x):
        return torch.where(x > 0, x, 0.1 * x)


def test_subclasses_keep_their_forward():
    torch.manual_seed(0)
    for net in (nn.Sequential(Twice(4, 6), nn.ReLU(), nn.Linear(6, 3)),
                nn.Sequential(nn.Linear(4, 6), LeakyReLU(), nn.Linear(6, 3))):
        _kill(net[0])
        with torch.no_grad():
            net[0].bias[1] = 0.5 if isinstance(net[1], LeakyReLU) else 0.0
        small = _same_outputs(net, torch.randn(5, 4))
        assert type(small[0]) is type(net[0]) and type(small[1]) is type(net[1])


def test_a_flatten_over_other_axes_is_left_alone():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.Flatten(0), nn.Linear(30, 3))
    _kill(net[0])
    small = _same_outputs(net, torch.randn(5, 4))
    assert small[0].out_features == 6


def test_a_linear_over_the_length_axis_is_left_alone():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU(), nn.Linear(8, 2))
    _kill(net[0])
    small = _same_outputs(net, torch.randn(3, 1, 8))
    assert small[0].out_channels == 4


def test_a_module_used_twice_stays_shared():
    torch.manual_seed(0)
    lin = nn.Linear(5, 5)
    net = nn.Sequential(lin, nn.ReLU(), lin, nn.ReLU(), nn.Linear(5, 2))
    _kill(lin)
    small = _same_outputs(net, torch.randn(4, 5))
    assert small[0] is small[2]


def test_float64_batchnorm_dtype_and_device_kept():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 4 * 4, 2)).double()
    _kill(net[0])
    with torch.no_grad():
        net[1].running_mean[1] = 0.0
        net[1].bias[1] = -1.0  # the dead channel's shift is cut by the ReLU
    small = _same_outputs(net, torch.randn(2, 1, 6, 6, dtype=torch.float64))
    assert small[1].num_features == 3 and small[1].running_mean.dtype == torch.float64
    assert small[0].weight.dtype == torch.float64


def test_torchs_global_rng_is_untouched():
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    _kill(net[0])
    torch.manual_seed(1)
    compact(net)
    a = torch.rand(3)
    torch.manual_seed(1)
    assert torch.equal(a, torch.rand(3))
