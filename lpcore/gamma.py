"""Expected Hoyer sparsity of LpSGD stationary weights under the gamma hypothesis.

Model (DESIGN section 4).  At a stationary point of LpSGD, ``|w_i|`` is
proportional to ``|d_i|^(1/(p-1))``.  If the gradient magnitudes are i.i.d.
``Gamma(k, theta)``, then ``|w_i| ~ X_i^a`` with ``X_i ~ Gamma(k, 1)`` and
``a = 1/(p-1)`` (theta cancels: Hoyer's measure is scale-invariant).  As n
grows, ``||w||_1 / ||w||_2 -> sqrt(n) rho`` with
``rho = Gamma(k+a) / sqrt(Gamma(k) Gamma(k+2a))``, so
``E[H] ~= sqrt(n) (1 - rho) / (sqrt(n) - 1)``.

With ``gradient="gaussian"`` the gradient entries are Gaussian: ``|g| =
sqrt(Y)`` with ``Y ~ Gamma(1/2)``, i.e. ``k = 1/2`` and ``a = 1/(2(p-1))``.

The large-n formula is biased at finite n, badly so for heavy tails (small p);
``method="monte_carlo"`` simulates the model exactly in the log domain.
This derivation is the library's stated model (the paper's formula may differ
in form); the tests check it against simulation.

* :func:`expected_hoyer` - the predicted Hoyer sparsity at ``(n, p)`` (and
  gamma shape ``k``); :func:`p_for_hoyer` - its inverse in p.
* :func:`fit_gamma_shape` - ``k`` from data (maximum likelihood or moments);
  :func:`predict_hoyer` - the prediction from a gradient sample.
* :func:`expected_pruned_fraction` - the share of a group below the
  semi-pruning drop threshold ``h * mean|w|`` under the model;
  :func:`p_for_sparsity` - the p at which that share equals a target.
"""
from __future__ import annotations

import functools
import math
import numbers

import numpy as np
from scipy import optimize, special, stats

from ._validate import check_p
from .hoyer import hoyer
from .layout import to_groups

__all__ = ["expected_hoyer", "p_for_hoyer", "fit_gamma_shape", "predict_hoyer", "expected_pruned_fraction",
           "p_for_sparsity"]

_GRADIENTS = ("gamma", "gaussian")


def _ka(p, shape, gradient, fn):
    if gradient not in _GRADIENTS:
        raise ValueError(f"{fn}: gradient must be 'gamma' or 'gaussian', got {gradient!r}")
    pa = np.asarray(p)
    if pa.dtype.kind not in "iuf":  # strings ('1.3'), bools, complex, objects
        raise TypeError(f"{fn}: p must be a real number or array, got {p!r}")
    p = pa.astype(np.float64)
    if not np.all(np.isfinite(p)) or np.any(p <= 1.0):
        raise ValueError(f"{fn}: p must satisfy 1 < p < inf, got {p if p.ndim else float(p)}")
    if gradient == "gaussian":
        return 0.5, 0.5 / (p - 1.0)
    k = check_p(shape, fn, lo=0.0, allow_inf=False, name="shape")
    return k, 1.0 / (p - 1.0)


def _rho(k, a):
    return np.exp(special.gammaln(k + a) - 0.5 * (special.gammaln(k) + special.gammaln(k + 2.0 * a)))


def _check_n(n, fn):
    try:
        n_arr = np.asarray(n)
    except ValueError:  # a ragged list
        raise TypeError(f"{fn}: n must be an integer or an array of integers, got {n!r}") \
            from None
    if n_arr.dtype.kind not in "iu" and not (n_arr.dtype.kind == "f" and np.all(n_arr == np.round(n_arr))):
        raise TypeError(f"{fn}: n must be an integer (group length), got {n!r}")
    if np.any(n_arr < 2):
        raise ValueError(f"{fn}: n must be >= 2 (Hoyer sparsity is undefined for n = 1), got {n!r}")
    return n_arr.astype(np.float64)


def expected_hoyer(n, p, shape=1.0, method="asymptotic", gradient="gamma",
                   n_groups=256, seed=0):
    """Expected Hoyer sparsity of a length-``n`` group at exponent ``p``.

    Parameters
    ----------
    n : int or array of int
        Group length (fan-in), ``n >= 2``.
    p : float or array
        ``1 < p < inf``.
    shape : float
        Gamma shape ``k > 0`` of the gradient magnitudes (``gradient="gamma"``).
    method : {"asymptotic", "monte_carlo"}
        The large-n closed form (vectorised over ``n`` and ``p``), or the mean
        over ``n_groups`` simulated groups (scalar ``n`` and ``p``; seeded,
        computed in the log domain, exact for every p).
    gradient : {"gamma", "gaussian"}
        The gradient model.
    n_groups, seed : int
        Monte Carlo sample size and seed.

    Returns
    -------
    float or ndarray
        In [0, 1].  The asymptotic value is clamped: near p = 1 the raw formula
        exceeds 1 by up to ``1/(sqrt(n) - 1)``.

    Examples
    --------
    >>> import lpcore
    >>> round(lpcore.expected_hoyer(10_000, 2.0), 4)   # k = 1, a = 1: rho = 1/sqrt(2)
    0.2959
    >>> lpcore.expected_hoyer(1000, 1.1) > lpcore.expected_hoyer(1000, 1.5)
    True
    """
    fn = "lpcore.expected_hoyer"
    nf = _check_n(n, fn)
    k, a = _ka(p, shape, gradient, fn)
    if method == "asymptotic":
        sn = np.sqrt(nf)
        r = np.clip(sn * (1.0 - _rho(k, a)) / (sn - 1.0), 0.0, 1.0)
        return float(r) if np.ndim(r) == 0 else r
    if method != "monte_carlo":
        raise ValueError(f"{fn}: method must be 'asymptotic' or 'monte_carlo', got {method!r}")
    if np.ndim(nf) or np.ndim(a):
        raise ValueError(f"{fn}: method='monte_carlo' takes scalar n and p")
    if not isinstance(n_groups, numbers.Integral) or n_groups < 1:
        raise ValueError(f"{fn}: n_groups must be a positive integer, got {n_groups!r}")
    n = int(nf)
    rng = np.random.default_rng(seed)
    dist = stats.loggamma(k)  # log X for X ~ Gamma(k): no underflow for small k
    per_batch = max(1, 4_000_000 // n)
    total = 0.0
    done = 0
    while done < n_groups:
        b = min(per_batch, n_groups - done)
        lw = float(a) * dist.rvs(size=(b, n), random_state=rng)
        lw -= lw.max(axis=1, keepdims=True)
        total += float(np.sum(hoyer(np.exp(lw), axis=1)))
        done += b
    return total / n_groups


def p_for_hoyer(target, n, shape=1.0, gradient="gamma"):
    """The exponent p at which :func:`expected_hoyer` (asymptotic) equals ``target``.

    Solved by Brent's method on ``log(p - 1)`` over ``p in [1 + 1e-6, 1 + 1e6]``
    (E[H] decreases monotonically in p).

    Raises
    ------
    ValueError
        If ``target`` is not in (0, 1) or no p in that range reaches it.

    Examples
    --------
    >>> import lpcore
    >>> p = lpcore.p_for_hoyer(0.5, 1000)
    >>> round(lpcore.expected_hoyer(1000, p), 10)
    0.5
    """
    fn = "lpcore.p_for_hoyer"
    target = float(target)
    n = int(_check_n(n, fn))
    if not 0.0 < target < 1.0:
        raise ValueError(f"{fn}: target={target} is unreachable; Hoyer sparsity lies in (0, 1)")
    sn = math.sqrt(n)
    k, _ = _ka(2.0, shape, gradient, fn)
    scale = 0.5 if gradient == "gaussian" else 1.0

    def f(u):  # u = log(p - 1); raw (unclamped) asymptotic formula
        a = scale / math.exp(u)
        return sn * (1.0 - float(_rho(k, a))) / (sn - 1.0) - target

    lo, hi = math.log(1e-6), math.log(1e6)
    flo, fhi = f(lo), f(hi)
    if not (flo > 0.0 > fhi):
        raise ValueError(f"{fn}: target={target} is unreachable for n={n} with p in "
                         f"[1 + 1e-6, 1 + 1e6] (expected Hoyer spans [{fhi + target:.3g}, "
                         f"{min(1.0, flo + target):.3g}])")
    u = optimize.brentq(f, lo, hi, xtol=1e-14, rtol=1e-14)
    return 1.0 + math.exp(u)


def _magnitudes(samples, fn):
    """float64 ``|samples|``; ValueError naming the first NaN/Inf."""
    a = np.abs(np.asarray(samples, dtype=np.float64))
    if not np.all(np.isfinite(a)):
        i = int(np.flatnonzero(~np.isfinite(a.ravel()))[0])
        raise ValueError(f"{fn}: samples contain NaN or Inf (first at flat index {i})")
    return a


def fit_gamma_shape(samples, method="mle", axis=None):
    """Gamma shape ``k`` of the magnitudes ``|samples|``.

    Parameters
    ----------
    samples : array_like
        E.g. a layer's gradient, momentum buffer or LpSGD dual state.
    method : {"mle", "moments"}
        ``"mle"``: maximum likelihood (:func:`scipy.stats.gamma.fit`, location
        0, scale profiled out).  ``"moments"``: match the ratio Hoyer's measure
        depends on, ``r = mean|x| / sqrt(mean x^2)``; for ``Gamma(k)``,
        ``r^2 = k / (k + 1)``, so ``k = r^2 / (1 - r^2)``.
    axis : None, int or tuple of ints
        The axes of one group (one output unit's fan-in).  Given, each group's
        magnitudes are divided by the group's mean before pooling, so that
        units with different gradient scales (the model's theta, which may
        differ from unit to unit) do not masquerade as a heavy tail.

    Zeros are dropped (exactly-zero gradients carry no magnitude information:
    pruned or dead connections).

    Raises
    ------
    ValueError
        NaN/Inf in samples, fewer than 2 non-zero values, or all equal.

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> g = np.random.default_rng(0).gamma(2.5, 3.0, size=100_000)
    >>> round(lpcore.fit_gamma_shape(g), 1), round(lpcore.fit_gamma_shape(g, "moments"), 1)
    (2.5, 2.5)
    """
    fn = "lpcore.fit_gamma_shape"
    if method not in ("mle", "moments"):
        raise ValueError(f"{fn}: method must be 'mle' or 'moments', got {method!r}")
    a = _magnitudes(samples, fn)
    if axis is not None:
        g = to_groups(a, axis)
        cnt = np.count_nonzero(g, axis=1)
        mean = g.sum(axis=1) / np.maximum(cnt, 1)
        g = g[cnt > 0] / mean[cnt > 0, None]
        x = g.ravel()
    else:
        x = a.ravel()
    x = x[x > 0]
    if x.size < 2:
        raise ValueError(f"{fn}: need at least 2 non-zero samples, got {x.size}")
    if np.all(x == x[0]):
        raise ValueError(f"{fn}: all non-zero magnitudes are equal; the shape is unbounded")
    if method == "moments":
        r2 = np.mean(x) ** 2 / np.mean(x * x)
        return float(r2 / (1.0 - r2))
    k, _, _ = stats.gamma.fit(x, floc=0.0)
    return float(k)


def _pruned_fraction_mc(a, h, log_x):
    """Share of entries below ``h`` times their own group's mean, for ``|w| = X^a``.

    ``log_x`` holds ``log X`` for a batch of groups (rows); the work is done in
    the log domain (subtract each group's maximum before exponentiating), so
    it is exact for every exponent ``a``.
    """
    lw = a * log_x
    lw = lw - lw.max(axis=1, keepdims=True)
    w = np.exp(lw)
    tau = h * w.mean(axis=1, keepdims=True)
    return float(np.mean(w < tau))


def _pruned_fraction_large_n(k, a, h):
    """``GammaCDF((h Gamma(k+a)/Gamma(k))^(1/a); k)`` (unvalidated)."""
    with np.errstate(divide="ignore"):
        lx = (np.log(h) + special.gammaln(k + a) - special.gammaln(k)) / a
    return special.gammainc(k, np.exp(lx))


@functools.lru_cache(maxsize=16)
def _log_draws(k, n, n_groups, seed):
    """``log X`` for ``n_groups`` groups of ``n`` seeded ``Gamma(k)`` draws (read-only;
    the same draws serve every p, so the Monte Carlo form is deterministic in p)."""
    x = stats.loggamma(k).rvs(size=(n_groups, n), random_state=np.random.default_rng(seed))
    x.setflags(write=False)
    return x


def _check_groups(n_groups, fn):
    if n_groups is not None and (not isinstance(n_groups, numbers.Integral) or n_groups < 1):
        raise ValueError(f"{fn}: n_groups must be a positive integer, got {n_groups!r}")


#: the most Monte Carlo draws one group length may take (2 GB of float64)
_MAX_DRAWS = 250_000_000


def _draws_for(k, n, n_groups, seed, fn):
    """The draws for groups of length ``n``: ``n_groups`` groups, or by default
    about 400,000 draws in all (at least 64 groups)."""
    count = (max(64, 400_000 // int(n)) if n_groups is None else int(n_groups)) * int(n)
    if count > _MAX_DRAWS:
        raise ValueError(f"{fn}: n={int(n)} needs {count:.3g} Monte Carlo draws, more than "
                         f"{_MAX_DRAWS:.3g}; for long groups use n=None (the large-n form)")
    return _log_draws(float(k), int(n), max(64, 400_000 // int(n)) if n_groups is None
                      else int(n_groups), int(seed))


_P_LO, _P_HI = 1.0 + 1e-6, 1.0 + 1e6


def _check_h(h, fn):
    h = np.asarray(h, dtype=np.float64)
    if not np.all(np.isfinite(h)) or np.any(h < 0):
        raise ValueError(f"{fn}: h must be finite and >= 0, got {h if h.ndim else float(h)}")
    return h


def expected_pruned_fraction(p, h, shape=1.0, gradient="gamma", n=None, n_groups=None, seed=0):
    """Expected fraction of weights below ``h`` times the mean ``|w|`` of a group.

    Large-n form (``n=None``): ``P(X^a < h E[X^a]) = GammaCDF((h Gamma(k+a)/Gamma(k))^(1/a); k)``,
    the share of connections the semi-pruning drop rule removes at relative
    threshold ``h`` under the gamma model.  Vectorised over ``p`` and ``h``.

    Finite-group form (``n`` given): the drop rule compares each weight with
    its *own group's* mean ``|w|``, which for heavy tails (small p) and small
    groups sits far above ``E[X^a]``: at p = 1.05, n = 64 the fraction is
    about 0.96 against 0.9995 for large n (and it can never exceed
    ``(n - 1)/n``).  Computed by seeded Monte Carlo over ``n_groups`` groups of
    ``n`` i.i.d. draws in the log domain (default: about 400,000 draws in
    all); vectorised over ``p``, ``h`` and ``n`` by broadcasting.

    Examples
    --------
    >>> import lpcore
    >>> lpcore.expected_pruned_fraction(1.1, 0.2) > lpcore.expected_pruned_fraction(2.0, 0.2)
    True
    >>> round(lpcore.expected_pruned_fraction(1.3, 0.2), 3)
    0.7
    >>> bool(lpcore.expected_pruned_fraction(1.05, 0.2, n=64) < 0.98)
    True
    """
    fn = "lpcore.expected_pruned_fraction"
    k, a = _ka(p, shape, gradient, fn)
    h = _check_h(h, fn)
    if n is None:
        r = _pruned_fraction_large_n(k, a, h)
        return float(r) if np.ndim(r) == 0 else r
    nf = _check_n(n, fn)
    _check_groups(n_groups, fn)
    try:
        a_b, h_b, n_b = np.broadcast_arrays(a, h, nf)
    except ValueError:
        raise ValueError(f"{fn}: p, h and n do not broadcast together") from None
    out = np.empty(a_b.shape)
    for idx in np.ndindex(a_b.shape):
        out[idx] = _pruned_fraction_mc(float(a_b[idx]), float(h_b[idx]),
                                       _draws_for(k, n_b[idx], n_groups, seed, fn))
    return float(out) if out.ndim == 0 else out


def p_for_sparsity(target, h, shape=1.0, gradient="gamma", n=None, n_groups=None, seed=0,
                   unreachable="raise"):
    """The exponent p at which :func:`expected_pruned_fraction` equals ``target``.

    This is how LpSS picks p from the target sparsity (DESIGN section 5): the
    semi-pruning drop rule stops removing connections once the share of
    active weights below ``h * mean|w|`` is exhausted, and at an LpSGD
    stationary point that share is ``expected_pruned_fraction(p, h, ...)``,
    which falls monotonically from 1 (p -> 1+) to 0 (p -> inf) for
    ``0 < h < 1``.  Solved by Brent's method on ``log(p - 1)`` over
    ``p in [1 + 1e-6, 1 + 1e6]``.

    Parameters
    ----------
    target : float or array_like
        Fraction in (0, 1).
    h : float or array_like
        Relative drop threshold, ``0 < h < 1``.
    shape, gradient
        The gradient model, as :func:`expected_pruned_fraction`.
    n : None, int or array_like of int
        Group length (fan-in).  ``None`` inverts the large-n closed form;
        an integer inverts the finite-group Monte Carlo form (the same seeded
        draws for every p, so the function being inverted is deterministic).
    n_groups, seed
        Monte Carlo sample size and seed (with ``n``).
    unreachable : {"raise", "clip"}
        With ``n`` given, a group can lose at most ``n - 1`` of its ``n``
        connections to the drop rule (the largest weight is never below the
        mean).  ``"clip"`` aims such groups at ``(n - 1.5)/n`` instead of
        raising (e.g. a 3x3 convolution on one input channel, n = 9, cannot
        be 90% sparse per group; the other layers carry the target).

    Returns
    -------
    float or ndarray
        Broadcast over ``target``, ``h`` and ``n``.

    Raises
    ------
    ValueError
        ``target`` outside (0, 1) or NaN, ``h`` outside (0, 1), or a target no
        p reaches (with ``n`` given the fraction never exceeds ``(n - 1)/n``);
        the message names the argument and the offending entry.

    Examples
    --------
    >>> import lpcore
    >>> p = lpcore.p_for_sparsity(0.9, 0.2)
    >>> round(p, 3), round(lpcore.expected_pruned_fraction(p, 0.2), 6)
    (1.166, 0.9)
    >>> lpcore.p_for_sparsity([0.5, 0.8], 0.2).round(3).tolist()
    [1.467, 1.232]
    >>> lpcore.p_for_sparsity(0.9, 0.2, n=[9, 256], unreachable="clip").round(3).tolist()
    [1.066, 1.148]
    """
    fn = "lpcore.p_for_sparsity"
    t = np.asarray(target, dtype=np.float64)
    bad = ~((t > 0.0) & (t < 1.0))  # NaN lands here too
    if bad.any():
        i = np.unravel_index(int(np.flatnonzero(bad)[0]), t.shape) if t.ndim else ()
        raise ValueError(f"{fn}: target must lie in (0, 1), got {float(t[i])}"
                         + (f" at index {tuple(int(j) for j in i)}" if t.ndim else ""))
    hh = _check_h(h, fn)
    if np.any((hh <= 0.0) | (hh >= 1.0)):
        raise ValueError(f"{fn}: h must lie in (0, 1) (the fraction is monotone in p only "
                         f"there), got {hh if hh.ndim else float(hh)}")
    k, _ = _ka(2.0, shape, gradient, fn)
    scale = 0.5 if gradient == "gaussian" else 1.0
    if unreachable not in ("raise", "clip"):
        raise ValueError(f"{fn}: unreachable must be 'raise' or 'clip', got {unreachable!r}")
    nf = None if n is None else _check_n(n, fn)
    _check_groups(n_groups, fn)
    if nf is not None and unreachable == "clip":
        t = np.minimum(t, (nf - 1.5) / nf)
    try:
        t_b, h_b, n_b = np.broadcast_arrays(t, hh, np.zeros(()) if nf is None else nf)
    except ValueError:
        raise ValueError(f"{fn}: target, h and n do not broadcast together") from None
    out = np.empty(t_b.shape)
    for idx in np.ndindex(t_b.shape):
        tv, hv = float(t_b[idx]), float(h_b[idx])
        lx = None if nf is None else _draws_for(k, n_b[idx], n_groups, seed, fn)

        def f(u, hv=hv, tv=tv, lx=lx):  # u = log(p - 1)
            a = scale * math.exp(-u)
            frac = _pruned_fraction_large_n(k, a, hv) if lx is None else \
                _pruned_fraction_mc(a, hv, lx)
            return float(frac) - tv
        lo, hi = math.log(_P_LO - 1.0), math.log(_P_HI - 1.0)
        flo, fhi = f(lo), f(hi)
        if not (flo > 0.0 > fhi):
            where = f" at index {tuple(int(j) for j in idx)}" if t_b.ndim else ""
            nn_txt = "" if nf is None else f", n={int(n_b[idx])}"
            raise ValueError(f"{fn}: target={tv}{where} is unreachable for h={hv}{nn_txt}: "
                             f"p in [1 + 1e-6, 1 + 1e6] gives fractions in "
                             f"[{fhi + tv:.4g}, {flo + tv:.4g}]")
        out[idx] = 1.0 + math.exp(optimize.brentq(f, lo, hi, xtol=1e-12, rtol=1e-12))
    return float(out) if out.ndim == 0 else out


def _hoyer_plugin(samples, p, axis):
    """Mean Hoyer of ``|samples|^(1/(p-1))`` over the non-zero groups."""
    fn = "lpcore.predict_hoyer"
    a = _magnitudes(samples, fn)
    g = to_groups(a, axis) if axis is not None else a.reshape(1, -1)
    m = g.max(axis=1)
    g = g[m > 0] / m[m > 0, None]  # max-scaled: the power cannot underflow to all-zero
    if g.shape[0] == 0 or g.shape[1] < 2:
        raise ValueError(f"{fn}: need a non-zero group of at least 2 samples")
    return float(np.mean(hoyer(g ** (1.0 / (p - 1.0)), axis=1)))


def predict_hoyer(samples, n, p, fit="mle", axis=None, gradient="gamma", n_groups=200, seed=0):
    """Predicted Hoyer sparsity of a layer's LpSGD weights from a magnitude sample.

    Fits the gamma shape to ``samples`` (a layer's gradient, momentum buffer
    or dual state; :func:`fit_gamma_shape` with ``fit`` and per-group scale
    removal over ``axis``) and returns the exact finite-n
    :func:`expected_hoyer` (Monte Carlo) for groups of length ``n`` at ``p``.
    ``fit="empirical"`` fits nothing: it is the plug-in value, the mean Hoyer
    of ``|samples|^(1/(p-1))`` over the groups along ``axis`` (the stationary
    LpSGD weights if the sample were the dual state; all-zero groups are
    skipped; ``n`` is not used).
    With ``gradient="gaussian"`` nothing is fitted (``k = 1/2`` on the
    squared magnitudes) and ``samples`` is not read.

    Returns
    -------
    (hoyer, k) : (float, float or None)

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> g = np.random.default_rng(0).gamma(1.0, size=(64, 256))
    >>> h, k = lpcore.predict_hoyer(g, 256, 1.5, axis=1)
    >>> round(k, 1), h == lpcore.expected_hoyer(256, 1.5, shape=k, method="monte_carlo", n_groups=200)
    (1.0, True)
    """
    if gradient == "gaussian":
        return expected_hoyer(n, p, method="monte_carlo", gradient="gaussian",
                              n_groups=n_groups, seed=seed), None
    if fit == "empirical":
        return _hoyer_plugin(samples, p, axis), None
    k = fit_gamma_shape(samples, fit, axis=axis)
    return expected_hoyer(n, p, shape=k, method="monte_carlo", n_groups=n_groups, seed=seed), k
