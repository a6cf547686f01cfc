"""Every public array function of lpcore, on every backend (``numpy`` always;
``cuda`` on a GPU or under the simulator step of ``.ci/run``):

* the result keeps the input's floating dtype (float32 stays float32);
* a call that raises writes nothing: inputs, ``out`` and optimizer state are
  unchanged;
* a bad call raises the same exception, with the same message, on every
  backend.

``test_the_registry_is_complete`` fails when a public function is neither
here nor listed as host-only with its reason, so a new function cannot skip
these checks.
"""
import numpy as np
import pytest

import lpcore


def _lpsgd_step(w, g):
    """One LpSGD step from the state of a weight on the sphere (built without
    ``init``, which projects ``w`` in place)."""
    opt = lpcore.LpSGD(p=1.5, lr=0.1, momentum=0.9)
    state = lpcore.LpSGDState(step=0, shape=tuple(w.shape), axis=(1,),
                              dual=lpcore.to_dual(w, 1.5))
    opt.step(w, g, state)
    return w


#: name -> (call(arrays) -> result, the names of its array arguments, the
#: argument made bad in the atomicity test, whether the call takes ``out``)
REGISTRY = {
    "norm": (lambda a: lpcore.norm(a["x"], 1.5, axis=1), ("x",), "x", False),
    "normalize": (lambda a: lpcore.normalize(a["x"], 1.5, axis=1, out=a.get("out")), ("x",),
                  "x", True),
    "all_finite": (lambda a: lpcore.all_finite(a["x"]), ("x",), None, False),
    "project_tangent": (lambda a: lpcore.project_tangent(a["w"], a["g"], 1.5, axis=1,
                                                         out=a.get("out")), ("w", "g"), "g",
                        True),
    "retract": (lambda a: lpcore.retract(a["w"], a["xi"], 1.5, axis=1, out=a.get("out")),
                ("w", "xi"), "xi", True),
    "to_dual": (lambda a: lpcore.to_dual(a["w"], 1.5, out=a.get("out")), ("w",), "w", True),
    "from_dual": (lambda a: lpcore.from_dual(a["v"], 1.5, out=a.get("out")), ("v",), "v", True),
    "project_ball": (lambda a: lpcore.project_ball(a["y"], 1.5, radius=0.5, axis=1,
                                                   out=a.get("out")), ("y",), "y", True),
    "hoyer": (lambda a: lpcore.hoyer(a["x"], axis=1), ("x",), "x", False),
    "hoyer_layer": (lambda a: lpcore.hoyer_layer(a["w"]), ("w",), "w", False),
    "hoyer_network": (lambda a: lpcore.hoyer_network([a["w"], a["x"]]), ("w", "x"), "x",
                      False),
    "LpSGD": (lambda a: _lpsgd_step(a["w"], a["g"]), ("w", "g"), "g", False),
    # "m": a mask with one inactive entry (the atomicity test's NaN is active)
    "drop_by_threshold": (lambda a: lpcore.drop_by_threshold(a["w"], a["m"], 0.5, axis=1)[0],
                          ("w", "m"), "w", False),
    "grow_by_score": (lambda a: lpcore.grow_by_score(a["g"], a["m"], 1, axis=1)[0],
                      ("g", "m"), "g", False),
    "mask_sparsity": (lambda a: lpcore.mask_sparsity([a["m"], a["m"]]), ("m",), None, False),
    "drop_smallest": (lambda a: lpcore.drop_smallest(a["w"], a["m"], 3)[0], ("w", "m"), "w",
                      False),
    "grow_random": (lambda a: lpcore.grow_random(a["m"], 1, 0)[0], ("m",), None, False),
    "adjust_to_sparsity": (lambda a: lpcore.adjust_to_sparsity([a["m"]], [a["w"]], [None],
                                                               0.5)[0][0], ("w", "m"), "w", False),
    # the learned-mask steps: "u" scores in [0, 1]; float64 results (the scores)
    "score_step": (lambda a: lpcore.score_step(a["u"], a["g"], a["w"], 0.1, axis=1,
                                               out=a.get("out")), ("u", "g", "w"), "g", True),
    "concave_step": (lambda a: lpcore.concave_step(a["u"], a["g"], a["w"], 0.1, 1e-3, axis=1,
                                                   out=a.get("out")), ("u", "g", "w"), "w", True),
    "calibrate_lambda": (lambda a: lpcore.calibrate_lambda(a["x"], 0.1, 7), ("x",), "x", False),
    "threshold_scores": (lambda a: lpcore.threshold_scores(a["u"], [a["w"]], 9), ("u", "w"),
                         "u", False),
    # Chase's channel statistics
    "unmasked_mean_magnitude": (lambda a: lpcore.unmasked_mean_magnitude(a["w"], a["m"]),
                                ("w", "m"), "w", False),
    "channel_sparsity": (lambda a: lpcore.channel_sparsity([a["m"], a["m"]]), ("m",), None,
                         False),
}

#: the public functions whose result is a mask, not the input's dtype
MASK_RESULTS = {"drop_by_threshold", "grow_by_score", "drop_smallest", "grow_random",
                "adjust_to_sparsity", "threshold_scores"}
#: the public functions whose result is float64 whatever the inputs (scores)
FLOAT64_RESULTS = {"score_step", "concave_step", "unmasked_mean_magnitude"}

#: public names that take no arrays of a backend, with the reason
HOST_ONLY = {
    "to_groups": "a NumPy layout helper for LpSGDState arrays",
    "group_positions": "a NumPy layout helper for LpSGDState arrays",
    "fan_in_axes": "shapes only",
    "participation_ratio": "a statistic of trained weights, read on the host like the layer report",
    "LpSGDState": "a container (its to_device/to_dict are tested in test_cuda.py)",
    "StepPlan": "made by LpSGD.plan / step_many (the LpSGD entry, both backends)",
    "FlagSet": "an exception class",
    "expected_hoyer": "scalar model", "p_for_hoyer": "scalar model",
    "fit_gamma_shape": "a fit on host samples", "predict_hoyer": "scalar model",
    "expected_pruned_fraction": "scalar model", "p_for_sparsity": "scalar model",
    "ramanujan_gap": "SciPy sparse linear algebra on the host",
    "ramanujan_gaps": "SciPy sparse linear algebra on the host",
    "generalization_bound": "a few norms of trained weights, on the host",
    "input_statistic": "a statistic of the training inputs, on the host",
    "weighted_spectral_gap": "SciPy sparse linear algebra on the host",
    "top_singular_values": "SciPy sparse linear algebra on the host",
    "random_mask": "masks live on the host",
    "make_method": "a factory (the methods on device arrays: test_topology.py, test_masklearn.py)",
    "drop_threshold_schedule": "a schedule (scalars)", "grow_ratio": "a schedule (scalars)",
    "regrow_ratio": "a schedule (scalars)", "threshold_gain": "a schedule (scalars)",
    "sparsity_schedule": "a schedule (scalars)",
    "ste_mask_grad": "a host helper; the methods' steps on both backends are score_step, concave_step",
    "normalize_per_feature": "a host helper; the methods' steps on both backends are score_step, concave_step",
    "concave_penalty": "a host helper; the methods' steps on both backends are score_step, concave_step",
    "concave_penalty_grad": "a host helper; the methods' steps on both backends are score_step, concave_step",
    "cuda_stream": "no array: a context for the GPU functions (tested in test_cuda.py)",
}


def test_the_registry_is_complete():
    public = set(lpcore.__all__)
    assert public == set(REGISTRY) | set(HOST_ONLY), (
        "every public function is checked on every backend or listed as host-only: "
        f"missing {sorted(public - set(REGISTRY) - set(HOST_ONLY))}, "
        f"stale {sorted((set(REGISTRY) | set(HOST_ONLY)) - public)}")


def _inputs(names, dtype, rng):
    """Arrays (4, 6) in ``dtype``, safely away from zero."""
    a = {}
    for k in names:
        v = rng.standard_normal((4, 6))
        v += np.sign(v) * 0.1
        if k == "xi":
            v *= 0.1
        if k == "v":  # a dual vector (on the q sphere)
            v = lpcore.to_dual(lpcore.normalize(v, 1.5, axis=1), 1.5)
        if k == "w":
            v = lpcore.normalize(v, 1.5, axis=1)
        if k == "u":
            v = rng.random((4, 6))
        a[k] = (np.arange(v.size).reshape(v.shape) != 0) if k == "m" else v.astype(dtype)
    return a


@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(backend, name, dtype, rng):
    call, names, _, _ = REGISTRY[name]
    a = {k: backend.put(v) for k, v in _inputs(names, dtype, rng).items()}
    r = call(a)
    if isinstance(r, (bool, float)):  # all_finite, hoyer_layer, hoyer_network
        return
    want = np.bool_ if name in MASK_RESULTS else np.float64 if name in FLOAT64_RESULTS else dtype
    assert backend.get(r).dtype == want, name


@pytest.mark.parametrize("name", sorted(n for n, e in REGISTRY.items() if e[2]))
def test_nothing_is_written_when_it_raises(backend, name, rng):
    call, names, bad, takes_out = REGISTRY[name]
    host = _inputs(names, np.float64, rng)
    host[bad][2, 3] = np.nan
    a = {k: backend.put(v.copy()) for k, v in host.items()}
    if takes_out:
        a["out"] = backend.put(np.full((4, 6), 7.0))
    with pytest.raises(ValueError, match="NaN or Inf"):
        call(a)
    for k, v in host.items():
        np.testing.assert_array_equal(backend.get(a[k]), v, err_msg=f"{name}: {k} changed")
    if takes_out:
        np.testing.assert_array_equal(backend.get(a["out"]), 7.0, err_msg=f"{name}: out written")


def _raised(f):
    try:
        f()
    except Exception as e:  # noqa: BLE001 - the point is to compare them
        return type(e), str(e)
    return None


_X = np.random.default_rng(5).standard_normal((3, 2, 5))
_XN = _X.copy()
_XN[2, 1, 3] = np.nan
_Z = _X.copy()
_Z[:, 1, :] = 0

#: bad calls, each given a function that puts an array on the backend
BAD_CALLS = {
    "norm-nan": lambda m: lpcore.norm(m(_XN), 1.5, axis=(0, 2)),
    "norm-p": lambda m: lpcore.norm(m(_X), -1.0),
    "norm-axis": lambda m: lpcore.norm(m(_X), 2, axis=3),
    "norm-overflow": lambda m: lpcore.norm(m(np.full((2, 3), 3e38, np.float32)), 2, axis=1),
    "normalize-zero": lambda m: lpcore.normalize(m(_Z), 1.5, axis=(0, 2)),
    "normalize-option": lambda m: lpcore.normalize(m(_X), 1.5, zero="drop"),
    "normalize-out-shape": lambda m: lpcore.normalize(m(_X), 1.5, out=m(np.zeros((3, 2, 4)))),
    "normalize-out-dtype": lambda m: lpcore.normalize(m(_X), 1.5,
                                                      out=m(np.zeros((3, 2, 5), np.int64))),
    "normalize-complex": lambda m: lpcore.normalize(m(_X.astype(np.complex128)), 2),
    "all_finite-complex": lambda m: lpcore.all_finite(m(_X.astype(np.complex128))),
    "hoyer-nan": lambda m: lpcore.hoyer(m(_XN), axis=-1),
    "hoyer-short": lambda m: lpcore.hoyer(m(_X[:, :1, :1]), axis=1),
    "tangent-zero-w": lambda m: lpcore.project_tangent(m(_Z), m(_X), 1.5, axis=(0, 2)),
    "tangent-nan-g": lambda m: lpcore.project_tangent(m(_X), m(_XN), 1.5, axis=2),
    "tangent-p": lambda m: lpcore.project_tangent(m(_X), m(_X), 1.0),
    "tangent-shape": lambda m: lpcore.project_tangent(m(_X), m(_X[:, :1]), 1.5),
    "retract-zero": lambda m: lpcore.retract(m(_X), m(-_X), 2, axis=0),
    "to_dual-nan": lambda m: lpcore.to_dual(m(_XN), 1.5),
    "from_dual-p": lambda m: lpcore.from_dual(m(_X), 1.0),
    "ball-nan": lambda m: lpcore.project_ball(m(_XN), 1.5, axis=(1, 2)),
    "ball-radius": lambda m: lpcore.project_ball(m(_X), 1.5, radius=-1.0),
    "lpsgd-nan-grad": lambda m: _lpsgd_step(m(_X[0].copy()), m(_XN[2])),
    "lpsgd-shape": lambda m: _lpsgd_step(m(_X[0].copy()), m(_X[1, :1])),
    "drop-nan": lambda m: lpcore.drop_by_threshold(m(_XN), m(_X > -1.0), 0.5, axis=(0, 2)),
    "drop-mask-dtype": lambda m: lpcore.drop_by_threshold(m(_X), m(_X), 0.5),
    "drop-mask-shape": lambda m: lpcore.drop_by_threshold(m(_X), m(_X[:1] > 0), 0.5),
    "drop-h": lambda m: lpcore.drop_by_threshold(m(_X), m(_X > 0), -0.5),
    "grow-nan": lambda m: lpcore.grow_by_score(m(_XN), m(_X > 0), 2, axis=(0, 2)),
    "grow-k": lambda m: lpcore.grow_by_score(m(_X), m(_X > -10.0), 1),
    "grow-mask-shape": lambda m: lpcore.grow_by_score(m(_X), m(_X[:1] > 0), 1),
    "mask_sparsity-empty": lambda m: lpcore.mask_sparsity([m(np.zeros((0, 3), bool))]),
    "drop_smallest-nan": lambda m: lpcore.drop_smallest(m(_XN), m(_X > -10.0), 2),
    "drop_smallest-k": lambda m: lpcore.drop_smallest(m(_X), m(_X > 0), 100),
    "drop_smallest-mask-dtype": lambda m: lpcore.drop_smallest(m(_X), m(_X), 1),
    "grow_random-k": lambda m: lpcore.grow_random(m(_X > -10.0), 1, 0),
    "grow_random-mask-dtype": lambda m: lpcore.grow_random(m(_X), 1, 0),
    "adjust-nan": lambda m: lpcore.adjust_to_sparsity([m(_X > 10.0)], [m(_X)], [m(_XN)], 0.0),
    "adjust-shape": lambda m: lpcore.adjust_to_sparsity([m(_X > 0)], [m(_X[:1])], [None], 0.9),
    "score_step-nan-latent": lambda m: lpcore.score_step(m(_X), m(_X), m(_XN), 0.1, axis=(0, 2)),
    "score_step-shape": lambda m: lpcore.score_step(m(_X), m(_X[:1]), m(_X), 0.1),
    "score_step-lr": lambda m: lpcore.score_step(m(_X), m(_X), m(_X), 0.0),
    "concave_step-m": lambda m: lpcore.concave_step(m(_X), None, None, 0.1, 1e-3, axis=2),
    "concave_step-nan-grad": lambda m: lpcore.concave_step(m(np.abs(_X) / 9), m(_XN), m(_X),
                                                           0.1, 1e-3),
    "concave_step-kind": lambda m: lpcore.concave_step(m(np.abs(_X) / 9), None, None, 0.1, 1e-3,
                                                       kind="l2"),
    "calibrate-nan": lambda m: lpcore.calibrate_lambda(m(_XN), 0.1, 3),
    "calibrate-k": lambda m: lpcore.calibrate_lambda(m(_X), 0.1, 31),
    "threshold-nan": lambda m: lpcore.threshold_scores(m(_XN), [m(_X)], 3),
    "threshold-sizes": lambda m: lpcore.threshold_scores(m(_X), [m(_X[:1])], 3),
    "umm-nan": lambda m: lpcore.unmasked_mean_magnitude(m(_XN), m(_X > -10.0), axis=(0, 2)),
    "umm-mask-shape": lambda m: lpcore.unmasked_mean_magnitude(m(_X), m(_X[:1] > 0)),
    "channel_sparsity-empty": lambda m: lpcore.channel_sparsity([]),
    "channel_sparsity-axes": lambda m: lpcore.channel_sparsity([m(_X > 0)], [None, None]),
    "channel_sparsity-none": lambda m: lpcore.channel_sparsity([m(np.zeros((0, 3), bool))]),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_the_same_error_on_every_backend(backend, case):
    call = BAD_CALLS[case]
    want = _raised(lambda: call(np.asarray))
    assert want is not None, case
    assert _raised(lambda: call(backend.put)) == want, case
