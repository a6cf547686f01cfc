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
"""
from __future__ import annotations

import math
import numbers

import numpy as np
from scipy import optimize, special, stats

from ._validate import check_p
from .hoyer import hoyer

__all__ = ["expected_hoyer", "p_for_hoyer", "fit_gamma_shape", "expected_pruned_fraction"]

_GRADIENTS = ("gamma", "gaussian")


def _ka(p, shape, gradient, fn):
    if gradient not in _GRADIENTS:
        raise ValueError(f"{fn}: gradient must be 'gamma' or 'gaussian', got {gradient!r}")
    p = np.asarray(p, dtype=np.float64)
    if not np.all(np.isfinite(p)) or np.any(p <= 1.0):
        raise ValueError(f"{fn}: p must satisfy 1 < p < inf, got {p if p.ndim else float(p)}")
    if gradient == "gaussian":
        return 0.5, 1.0 / (2.0 * (p - 1.0))
    k = check_p(shape, fn, lo=0.0, allow_inf=False, name="shape")
    return k, 1.0 / (p - 1.0)


def _rho(k, a):
    return np.exp(special.gammaln(k + a) - 0.5 * (special.gammaln(k) + special.gammaln(k + 2.0 * a)))


def _check_n(n, fn):
    n_arr = np.asarray(n)
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


def fit_gamma_shape(samples):
    """Maximum-likelihood Gamma shape ``k`` of the magnitudes ``|samples|``.

    Zeros are dropped (exactly-zero gradients carry no magnitude information:
    pruned or dead connections).  The scale is profiled out (location fixed
    at 0) by :func:`scipy.stats.gamma.fit`.

    Raises
    ------
    ValueError
        NaN/Inf in samples, fewer than 2 non-zero values, or all equal.

    Examples
    --------
    >>> import numpy as np, lpcore
    >>> g = np.random.default_rng(0).gamma(2.5, 3.0, size=100_000)
    >>> round(lpcore.fit_gamma_shape(g), 1)
    2.5
    """
    fn = "lpcore.fit_gamma_shape"
    x = np.abs(np.asarray(samples, dtype=np.float64)).ravel()
    if not np.all(np.isfinite(x)):
        i = int(np.flatnonzero(~np.isfinite(x))[0])
        raise ValueError(f"{fn}: samples contain NaN or Inf (first at flat index {i})")
    x = x[x > 0]
    if x.size < 2:
        raise ValueError(f"{fn}: need at least 2 non-zero samples, got {x.size}")
    if np.all(x == x[0]):
        raise ValueError(f"{fn}: all non-zero magnitudes are equal; the shape is unbounded")
    k, _, _ = stats.gamma.fit(x, floc=0.0)
    return float(k)


def expected_pruned_fraction(p, h, shape=1.0, gradient="gamma"):
    """Expected fraction of weights below ``h`` times the mean ``|w|`` of a group.

    ``P(X^a < h E[X^a]) = GammaCDF((h Gamma(k+a)/Gamma(k))^(1/a); k)``: the
    share of connections the semi-pruning drop rule removes at relative
    threshold ``h`` under the gamma model.  Vectorised over ``p`` and ``h``.

    Examples
    --------
    >>> import lpcore
    >>> lpcore.expected_pruned_fraction(1.1, 0.2) > lpcore.expected_pruned_fraction(2.0, 0.2)
    True
    """
    fn = "lpcore.expected_pruned_fraction"
    k, a = _ka(p, shape, gradient, fn)
    h = np.asarray(h, dtype=np.float64)
    if not np.all(np.isfinite(h)) or np.any(h < 0):
        raise ValueError(f"{fn}: h must be finite and >= 0")
    with np.errstate(divide="ignore"):
        lx = (np.log(h) + special.gammaln(k + a) - special.gammaln(k)) / a
    r = special.gammainc(k, np.exp(lx))
    return float(r) if np.ndim(r) == 0 else r
