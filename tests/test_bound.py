"""The norm-based bound and the authors' Ramanujan gaps (seed 003), against
hand computations, dense eigenvalues and the formula's limits."""
import math

import numpy as np
import pytest

import lpcore


def _hand(rho, n, k, L, d_max, x, degs, delta=0.001):
    return ((rho + 1) / n * 2 ** 1.5 * (1 + math.sqrt(2 * (L * math.log(2 * d_max)
                                                           + math.log(k)))) * x
            * math.prod(degs) + 3 * math.sqrt(math.log(2 * (rho + 2) ** 2 / delta) / (2 * n)))


def test_bound_matches_a_hand_computation_on_a_tiny_masked_network():
    conv = np.ones((2, 3, 2, 2))                 # a dense 2x2 kernel: deg 2
    lin = np.arange(1.0, 13.0).reshape(2, 6)
    mask = np.ones((2, 6), bool)
    mask[0, :4] = False                          # in-degrees 2 and 6: deg sqrt(6)
    head = np.array([[1.0, -1.0], [0.5, 2.0]])
    got = lpcore.generalization_bound([conv, lin, head], n=50, k=2, x=3.0,
                                      masks=[None, mask, None])
    rho = (math.sqrt(24) * np.linalg.norm(lin * mask) * np.linalg.norm(head))
    assert got["rho"] == pytest.approx(rho)
    assert got["degrees"] == pytest.approx([2.0, math.sqrt(6)])
    assert got["d_max"] == pytest.approx(6.0) and got["depth"] == 3
    assert got["bound"] == pytest.approx(_hand(rho, 50, 2, 3, 6.0, 3.0, [2.0, math.sqrt(6)]))


def test_a_masked_conv_uses_its_densest_channels_spatial_field():
    w = np.ones((2, 4, 3, 3))
    m = np.zeros(w.shape, bool)
    m[0, :, :2, :2] = True       # 4 positions per input channel
    m[1, :2, 0, 0] = True
    got = lpcore.generalization_bound([w, np.ones((3, 2))], n=10, k=3, x=1.0, masks=[m, None])
    assert got["degrees"] == pytest.approx([2.0])


def test_bound_limits():
    rng = np.random.default_rng(0)
    ws = [rng.standard_normal((8, 5)), rng.standard_normal((3, 8))]
    base = lpcore.generalization_bound(ws, n=1000, k=3, x=2.0)
    # rho scales with a layer's scale; the complexity term is linear in rho + 1
    scaled = lpcore.generalization_bound([3 * ws[0], ws[1]], n=1000, k=3, x=2.0)
    assert scaled["rho"] == pytest.approx(3 * base["rho"])
    assert scaled["complexity"] / base["complexity"] == pytest.approx(
        (3 * base["rho"] + 1) / (base["rho"] + 1))
    # more samples: both terms shrink; the dense network's masks change nothing
    assert lpcore.generalization_bound(ws, n=10**6, k=3, x=2.0)["bound"] < base["bound"]
    same = lpcore.generalization_bound(ws, n=1000, k=3, x=2.0,
                                       masks=[np.ones((8, 5)), np.ones((3, 8))])
    assert same["bound"] == pytest.approx(base["bound"])
    assert base["degrees"] == pytest.approx([math.sqrt(5)])


def test_input_statistic():
    x = np.array([[1.0, 2.0], [3.0, 0.0]])
    assert lpcore.input_statistic(x) == pytest.approx(math.sqrt(10.0))
    with pytest.raises(ValueError, match="input_statistic: x contains NaN"):
        lpcore.input_statistic(np.array([[np.nan, 1.0]]))


@pytest.mark.parametrize("bad, match", [
    (dict(n=0), "n must be an integer >= 1"), (dict(k=1.5), "k must be an integer"),
    (dict(delta=1.0), "delta must be"), (dict(x=float("nan")), "x must be"),
    (dict(masks=[None]), "masks has 1 entries for 2 weights"),
])
def test_bound_refuses_bad_input(bad, match):
    kw = dict(n=10, k=2, x=1.0)
    kw.update(bad)
    with pytest.raises(ValueError, match=match):
        lpcore.generalization_bound([np.ones((3, 4)), np.ones((2, 3))], **kw)


def _dense_gaps(b):
    """The gaps from numpy.linalg.eigvalsh of the bipartite adjacency."""
    b = b[:, b.any(axis=0)]
    b = b[b.any(axis=1)].astype(float)
    G, n = b.shape
    a = np.zeros((G + n, G + n))
    a[:G, G:], a[G:, :G] = b, b.T
    ev = np.sort(np.abs(np.linalg.eigvalsh(a)))[::-1]
    lam1, lam2 = ev[0], ev[2]
    dl, dr = b.sum() / n, b.sum() / G
    return 2 * math.sqrt(lam1 - 1) - lam2, math.sqrt(dl - 1) + math.sqrt(dr - 1) - lam2


@pytest.mark.parametrize("seed", range(6))
def test_ramanujan_gaps_match_dense_eigenvalues(seed):
    rng = np.random.default_rng(seed)
    m = rng.random((12 + seed, 20)) < 0.4
    m[0] = False                 # a zero-degree output node: dropped
    m[:, 3] = False              # a zero-degree input node: dropped
    g = lpcore.ramanujan_gaps(m)
    ds, dr = _dense_gaps(m)
    assert g["delta_s"] == pytest.approx(ds, abs=1e-9)
    assert g["delta_r"] == pytest.approx(dr, abs=1e-9)
    assert g["delta_r_normalized"] == pytest.approx(
        dr / (math.sqrt(g["d_left"] - 1) + math.sqrt(g["d_right"] - 1)))


def test_ramanujan_gaps_none_below_degree_3_and_the_iterative_mean():
    assert lpcore.ramanujan_gaps(np.eye(6, dtype=bool)) is None
    m = np.zeros((6, 9), bool)
    m[:, :3] = True              # three inputs of degree 6: d_L = 6, d_R = 18 / 6 = 3
    m[:3, 3:6] = True            # three of degree 3: all six outputs kept, d_R = 1.5 < 3
    m[0, 6:] = True              # three of degree 1: d_L = 1 < 3
    g = lpcore.ramanujan_gaps(m, iterative_mean=True)
    want = lpcore.ramanujan_gaps(m[:, :3])  # the one subgraph that scores
    assert g == pytest.approx(want)
    assert lpcore.ramanujan_gaps(m[:, 6:], iterative_mean=True) is None


def test_the_torch_binding_reads_layers_and_masks():
    torch = pytest.importorskip("torch")
    import lpcore_torch
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 4 * 4, 8), torch.nn.ReLU(),
                              torch.nn.Linear(8, 3))
    mask = torch.rand(8, 64) > 0.5
    net[3].register_buffer("weight_mask", mask)
    with torch.no_grad():
        net[3].weight.mul_(mask)
    x = torch.rand(20, 1, 6, 6)
    got = lpcore_torch.generalization_bound(net, x, 3)
    ws = [m.weight.detach().double().numpy() for m in (net[0], net[3], net[5])]
    want = lpcore.generalization_bound(ws, n=20, k=3, x=lpcore.input_statistic(x.numpy()),
                                       masks=[None, mask.numpy(), None])
    assert got["bound"] == pytest.approx(want["bound"])
    assert got["degrees"][0] == pytest.approx(3.0)
    assert got["degrees"][1] == pytest.approx(math.sqrt(int(mask.sum(1).max())))


def _authors_conv_gaps(weight):
    """Hoang et al.'s construction, step by step as their code does it
    (``VITA-Group/ramanujan-on-pai``: ``lib/graphs/generate_unstructured_
    bipartie_graphs.py`` and ``lib/graphs/scores.py``): a (c_out, c_in, kH, kW)
    weight reshaped to (c_out, -1) and transposed, so the input nodes are the
    c_in * kH * kW kernel positions (numbered first) and the outputs the
    c_out channels; an undirected edge per nonzero entry; zero-degree nodes
    dropped; degrees of the input and output sides; the symmetric adjacency's
    eigenvalues by magnitude, lambda1 the first, lambda2 the third."""
    c_out = weight.shape[0]
    w = np.transpose(weight.reshape(c_out, -1))
    dim_in, dim_out = w.shape
    ii, jj = np.nonzero(np.abs(w) > 0)
    adj = np.zeros((dim_in + dim_out,) * 2)
    adj[ii, jj + dim_in] = adj[jj + dim_in, ii] = 1.0
    deg = adj.sum(axis=0)
    keep = deg != 0
    dim_in = int(keep[:dim_in].sum())
    adj, deg = adj[np.ix_(keep, keep)], deg[keep]
    d_l, d_r = deg[:dim_in].mean(), deg[dim_in:].mean()
    ev = sorted(np.abs(np.linalg.eigvalsh(adj)), reverse=True)
    lam1, lam2 = ev[0], ev[2]
    return 2 * math.sqrt(lam1 - 1) - lam2, math.sqrt(d_l - 1) + math.sqrt(d_r - 1) - lam2


@pytest.mark.parametrize("seed", range(3))
def test_ramanujan_gaps_of_a_conv_layer_as_the_authors_unroll_it(seed):
    rng = np.random.default_rng(seed)
    m = rng.random((16, 3, 3, 3)) < 0.5
    m[1] = False                        # an output channel with no connection
    m[:, 2, 0, 0] = False               # a kernel position no output uses
    g = lpcore.ramanujan_gaps(m)
    ds, dr = _authors_conv_gaps(m.astype(float))
    assert g["delta_s"] == pytest.approx(ds, abs=1e-9)
    assert g["delta_r"] == pytest.approx(dr, abs=1e-9)
