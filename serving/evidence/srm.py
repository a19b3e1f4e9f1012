"""Sample-ratio mismatch: is the split the split?

Before trusting a comparison, check that the arms received the shares the configuration asks
for. A sticky-hash bug, a proxy that retries one arm's requests, a replica on old flags or an arm
whose users give feedback less often all show up as a ratio off the configured one, and all of
them bias the comparison.

The check is sequential, because the controllers re-run it every tick: the Dirichlet-multinomial
Bayes factor of Lindon & Malek (2020, "Anytime-valid inference for multinomial count data",
the method behind the `ssrm-test` package), written here with scipy. Under H0 the counts are
multinomial with the configured probabilities p; under H1 the probabilities follow a Dirichlet
prior centred on p (concentration `DEFAULT_CONCENTRATION`). The Bayes factor

    BF = [B(a + n) / B(a)] / prod(p_i ^ n_i),   a = concentration * p

is a nonnegative martingale under H0 with mean 1, so by Ville's inequality
P(ever BF >= 1/alpha) <= alpha: flagging at the first look where it crosses errs at most alpha
however often one looks. 1/BF is the always-valid p-value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
from scipy import special

DEFAULT_ALPHA = 0.001
"""A mismatch halts decisions, so false alarms must be rare; real mismatches are usually gross
and cross even this bound within a few hundred observations."""
DEFAULT_CONCENTRATION = 100.0


def log_bayes_factor(counts, expected, concentration: float = DEFAULT_CONCENTRATION) -> float:
    """log BF of H1 (Dirichlet around `expected`) against H0 (exactly `expected`)."""
    n = np.asarray(counts, float)
    p = np.asarray(expected, float)
    p = p / p.sum()
    if np.any((p == 0) & (n > 0)):
        return math.inf  # an arm the split never assigns received traffic: certain mismatch
    keep = p > 0
    n, p = n[keep], p[keep]
    a = concentration * p
    log_b = lambda x: float(np.sum(special.gammaln(x)) - special.gammaln(np.sum(x)))  # noqa: E731
    return log_b(a + n) - log_b(a) - float(np.sum(n * np.log(p)))


def check(
    counts: Mapping[str, int],
    weights: Mapping[str, float],
    alpha: float = DEFAULT_ALPHA,
    concentration: float = DEFAULT_CONCENTRATION,
) -> dict:
    """The SRM verdict for observed `counts` per arm against configured `weights` (any scale).

    Returns the counts, expected shares, observed shares, the always-valid p-value, and
    `mismatch` (p < alpha). Arms missing from `counts` count 0; arms not in `weights` are an
    immediate mismatch when they have counts (the split never sends traffic there).
    """
    names = sorted(set(weights) | {k for k, v in counts.items() if v})
    total_w = float(sum(max(0.0, float(w)) for w in weights.values()))
    expected = [max(0.0, float(weights.get(k, 0.0))) / total_w if total_w else 0.0 for k in names]
    observed = [int(counts.get(k, 0)) for k in names]
    n = sum(observed)
    result = {
        "counts": dict(zip(names, observed, strict=True)),
        "expected_share": dict(zip(names, expected, strict=True)),
        "observed_share": {k: (c / n if n else None) for k, c in zip(names, observed, strict=True)},
        "n": n,
        "alpha": alpha,
        "method": f"Dirichlet-multinomial Bayes factor (concentration {concentration:g}), "
        "anytime-valid",
        "p_value": 1.0,
        "mismatch": False,
    }
    if n == 0 or total_w == 0:
        return result
    log_bf = log_bayes_factor(observed, expected, concentration)
    p_value = 0.0 if math.isinf(log_bf) else float(min(1.0, math.exp(-log_bf)))
    result.update(p_value=p_value, mismatch=p_value < alpha)
    return result


def rollout_counts(rows: Iterable[Mapping]) -> dict[str, int]:
    """Randomised labelled feedback rows per side of the rollout's split: "classic", and
    "ensemble" for every arm of the ensemble service (ensemble, cascade)."""
    out = {"classic": 0, "ensemble": 0}
    for row in rows:
        if not row.get("randomised", True):
            continue
        arm = row.get("arm")
        if arm == "classic":
            out["classic"] += 1
        elif arm in ("ensemble", "cascade"):
            out["ensemble"] += 1
    return out
