"""Anytime-valid inference for controllers that look again and again.

A controller re-judges its evidence every few seconds and acts at the first verdict; a
fixed-sample test per look then errs far more often than its alpha (measured with this code's
non-inferiority z-test, equal arms, a look every 25 labels per arm from 200: 19.9 % false `go`
by 1,000 labels per arm, 29.4 % by 5,000). The tests here stay valid however often one looks
and whenever one stops.

Method: the normal-mixture sequential probability ratio test (mSPRT, Robbins 1970; Johari et
al. 2017 "Peeking at A/B tests"; the closed-form boundaries of Howard et al. 2021), applied to
the Gaussian approximation of the estimate as in the asymptotic confidence sequences of
Waudby-Smith et al. 2021 ("Time-uniform central limit theory"). With an estimate `d` of a
difference `theta` and its (plug-in) variance `V`, the information is `I = 1 / V` and the score
`X = I * (d - theta0)` behaves like a Brownian motion with drift `theta - theta0` in time `I`.
Mixing its likelihood ratio over a normal prior N(0, tau^2) on the drift gives

    M = (1 + tau^2 I)^(-1/2) * exp(tau^2 X^2 / (2 (1 + tau^2 I)))

a nonnegative martingale under theta0, so by Ville's inequality P(ever M >= 1/alpha) <= alpha:
rejecting at the first look where M >= 1/alpha errs at most alpha, at any number of looks.
The one-sided version mixes over a half-normal prior (drift > 0 only). Inverting the test
gives a confidence sequence; 1/M is an always-valid p-value (`running_min` makes it monotone
when a caller keeps its history).

`tau` sets where the boundary is tightest: `DEFAULT_TAU = 0.05` (5 accuracy points) makes it
tightest around a thousand labels per arm at accuracy 0.8. Any `tau` keeps the error bound;
only the power and the time to a decision change.

The variance is estimated with a +1/2 continuity correction on each proportion, so an arm
that is all right (or all wrong) does not give V = 0. The guarantee is asymptotic (as the
Gaussian approximation is): from the controllers' minimum of 200 labels per arm the seeded
simulation (`python -m serving.evidence.simulate`) measures it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import optimize, stats

DEFAULT_TAU = 0.05
"""Mixture scale (standard deviation of the prior on the difference)."""


# ---------------------------------------------------------------------------- variance
def _p_smooth(k: np.ndarray | float, n: np.ndarray | float) -> np.ndarray:
    return (np.asarray(k, float) + 0.5) / (np.asarray(n, float) + 1.0)


def proportion_variance(k, n) -> np.ndarray:
    """Plug-in variance of k/n (smoothed, never 0)."""
    p = _p_smooth(k, n)
    return p * (1 - p) / np.maximum(np.asarray(n, float), 1.0)


def difference_variance(k_c, n_c, k_t, n_t) -> np.ndarray:
    """Plug-in variance of k_t/n_t - k_c/n_c, unpooled (the arms are independent)."""
    return proportion_variance(k_c, n_c) + proportion_variance(k_t, n_t)


# ---------------------------------------------------------------------------- the mixture
def log_mixture(estimate, theta0, variance, tau: float = DEFAULT_TAU, one_sided: bool = False):
    """log M of the normal mixture (two-sided) or half-normal mixture (one-sided: evidence that
    the parameter is ABOVE theta0) at `estimate` with `variance`; vectorised over arrays."""
    info = 1.0 / np.asarray(variance, float)
    x = info * (np.asarray(estimate, float) - theta0)
    s = 1.0 + tau * tau * info
    log_m = -0.5 * np.log(s) + (tau * tau * x * x) / (2.0 * s)
    if one_sided:
        log_m = log_m + math.log(2.0) + stats.norm.logcdf(tau * x / np.sqrt(s))
    return log_m


def always_valid_p(estimate, theta0, variance, tau: float = DEFAULT_TAU, one_sided=False):
    """min(1, 1/M): a p-value valid at any look (reject where it is below alpha)."""
    return np.minimum(1.0, np.exp(-log_mixture(estimate, theta0, variance, tau, one_sided)))


def radius(variance, alpha: float, tau: float = DEFAULT_TAU) -> np.ndarray:
    """Half-width of the two-sided (1 - alpha) normal-mixture confidence sequence:
    sqrt(V (1 + tau^2 I) / (tau^2 I) * (2 log(1/alpha) + log(1 + tau^2 I))) with I = 1/V."""
    v = np.asarray(variance, float)
    ti = tau * tau / v
    return np.sqrt(v * (1.0 + ti) / ti * (2.0 * math.log(1.0 / alpha) + np.log1p(ti)))


def one_sided_bound(estimate: float, variance: float, alpha: float, tau: float = DEFAULT_TAU):
    """Lower (1 - alpha) confidence-sequence bound of the one-sided mixture: the smallest
    theta0 the half-normal mixture does not reject (upper bound: negate the estimate)."""
    target = math.log(1.0 / alpha)

    def excess(theta0: float) -> float:
        return float(log_mixture(estimate, theta0, variance, tau, one_sided=True)) - target

    width = float(radius(variance, alpha, tau))
    low = estimate - 2 * width - 1.0
    if excess(estimate) >= 0:  # cannot happen for alpha < 1/2, guard anyway
        return estimate
    return float(optimize.brentq(excess, low, estimate, xtol=1e-9))


def running_min(p_values: Sequence[float]) -> list[float]:
    """The always-valid p-value sequence made monotone (a caller that keeps its history)."""
    return list(np.minimum.accumulate(np.asarray(p_values, float)))


# ---------------------------------------------------------------------------- reports
def difference(
    k_c: int,
    n_c: int,
    k_t: int,
    n_t: int,
    alpha: float,
    margin: float = 0.0,
    tau: float = DEFAULT_TAU,
) -> dict:
    """Anytime-valid comparison of a challenger (t) with a control (c): the difference t - c,
    its (1 - alpha) confidence sequence, the always-valid two-sided p-value (H0: equal) and the
    one-sided non-inferiority p-value (H0: t <= c - margin) and lower bound. None without data."""
    out: dict = {
        "method": f"normal-mixture mSPRT / confidence sequence (tau {tau:g})",
        "diff": None,
        "cs_low": None,
        "cs_high": None,
        "level": 1 - alpha,
        "p_value": None,
        "noninferiority_p_value": None,
        "noninferiority_low": None,
    }
    if n_c <= 0 or n_t <= 0:
        return out
    d = k_t / n_t - k_c / n_c
    v = float(difference_variance(k_c, n_c, k_t, n_t))
    r = float(radius(v, alpha, tau))
    out.update(
        diff=d,
        cs_low=d - r,
        cs_high=d + r,
        p_value=float(always_valid_p(d, 0.0, v, tau)),
        noninferiority_p_value=float(always_valid_p(d, -margin, v, tau, one_sided=True)),
        noninferiority_low=one_sided_bound(d, v, alpha, tau),
    )
    return out


def proportion(k: int, n: int, alpha: float, tau: float = DEFAULT_TAU) -> dict:
    """Anytime-valid (1 - alpha) confidence sequence of a single proportion k/n (e.g. the shadow
    agreement), clipped to [0, 1]."""
    if n <= 0:
        return {"rate": None, "cs_low": None, "cs_high": None, "level": 1 - alpha}
    p = k / n
    r = float(radius(proportion_variance(k, n), alpha, tau))
    return {"rate": p, "cs_low": max(0.0, p - r), "cs_high": min(1.0, p + r), "level": 1 - alpha}
