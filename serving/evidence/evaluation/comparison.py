"""A/B comparisons of two arms: accuracy (difference of two proportions with a Newcombe
hybrid-score interval and a pooled z-test) and latency (p95 difference, Mann-Whitney U). These are
fixed-sample tests, for reports; a controller that re-judges as labels arrive uses the anytime-valid
`serving.evidence.sequential` instead."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ((0, 1) when n is 0)."""
    if n <= 0:
        return 0.0, 1.0
    z = float(stats.norm.ppf(1 - alpha / 2))
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def compare_accuracy(
    correct_a: int,
    n_a: int,
    correct_b: int,
    n_b: int,
    alpha: float = 0.05,
    min_samples: int = 100,
) -> dict:
    """Compare two accuracies (b - a, e.g. ensemble - classic).

    - `diff`: accuracy_b - accuracy_a.
    - `ci_low`, `ci_high`: (1 - alpha) Newcombe hybrid-score interval for the difference (method
      10 of Newcombe 1998: the two Wilson score intervals combined), which behaves well near 0
      and 1 where the Wald interval does not.
    - `z`, `p_value`: pooled two-proportion z-test, two-sided (`scipy.stats.norm`); identical to
      a chi-squared test of the 2x2 table without continuity correction. p = 1 when both arms
      are all right or all wrong.
    - `verdict`: "not enough data" while either n < min_samples, else "b better" / "a better"
      when p < alpha, else "no significant difference".
    """
    for name, value in (
        ("n_a", n_a),
        ("n_b", n_b),
        ("correct_a", correct_a),
        ("correct_b", correct_b),
    ):
        if value < 0:
            raise ValueError(f"{name} must not be negative")
    if correct_a > n_a or correct_b > n_b:
        raise ValueError("correct counts cannot exceed their sample sizes")
    result: dict[str, Any] = {
        "n_a": int(n_a),
        "n_b": int(n_b),
        "correct_a": int(correct_a),
        "correct_b": int(correct_b),
        "accuracy_a": correct_a / n_a if n_a else None,
        "accuracy_b": correct_b / n_b if n_b else None,
        "diff": None,
        "ci_low": None,
        "ci_high": None,
        "z": None,
        "p_value": None,
        "alpha": alpha,
        "min_samples": min_samples,
        "interval": "newcombe-wilson",
        "test": "two-proportion z-test (pooled)",
    }
    if n_a == 0 or n_b == 0:
        result["verdict"] = "not enough data"
        return result
    p_a, p_b = correct_a / n_a, correct_b / n_b
    diff = p_b - p_a
    low_a, high_a = wilson_interval(correct_a, n_a, alpha)
    low_b, high_b = wilson_interval(correct_b, n_b, alpha)
    ci_low = diff - math.sqrt((p_b - low_b) ** 2 + (high_a - p_a) ** 2)
    ci_high = diff + math.sqrt((high_b - p_b) ** 2 + (p_a - low_a) ** 2)
    pooled = (correct_a + correct_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        z, p_value = 0.0, 1.0
    else:
        z = diff / se
        p_value = float(2 * stats.norm.sf(abs(z)))
    result.update(diff=diff, ci_low=ci_low, ci_high=ci_high, z=z, p_value=p_value)
    if min(n_a, n_b) < min_samples:
        result["verdict"] = "not enough data"
    elif p_value < alpha:
        result["verdict"] = "b better" if diff > 0 else "a better"
    else:
        result["verdict"] = "no significant difference"
    return result


def compare_latency(
    samples_a: Sequence[float],
    samples_b: Sequence[float],
    min_samples: int = 100,
    alpha: float = 0.05,
) -> dict:
    """Compare two latency samples (ms), b against a.

    `p95_diff_ms` = p95(b) - p95(a) (linear-interpolated percentiles), also p50s; `p_value` of a
    two-sided Mann-Whitney U test (`scipy.stats.mannwhitneyu`, asymptotic with tie correction
    when samples are large). `verdict`: "not enough data" while either sample is smaller than
    `min_samples`, else "b slower" / "b faster" (by the U test at `alpha`, direction by the
    medians) or "no significant difference".
    """
    a = np.asarray([x for x in samples_a if x is not None and math.isfinite(x)], dtype=np.float64)
    b = np.asarray([x for x in samples_b if x is not None and math.isfinite(x)], dtype=np.float64)
    result: dict[str, Any] = {
        "n_a": int(a.size),
        "n_b": int(b.size),
        "p50_a_ms": float(np.percentile(a, 50)) if a.size else None,
        "p50_b_ms": float(np.percentile(b, 50)) if b.size else None,
        "p95_a_ms": float(np.percentile(a, 95)) if a.size else None,
        "p95_b_ms": float(np.percentile(b, 95)) if b.size else None,
        "p95_diff_ms": None,
        "u_statistic": None,
        "p_value": None,
        "alpha": alpha,
        "min_samples": min_samples,
        "test": "mann-whitney u (two-sided)",
    }
    if a.size == 0 or b.size == 0:
        result["verdict"] = "not enough data"
        return result
    result["p95_diff_ms"] = result["p95_b_ms"] - result["p95_a_ms"]
    test = stats.mannwhitneyu(b, a, alternative="two-sided")
    result["u_statistic"] = float(test.statistic)
    result["p_value"] = float(test.pvalue) if math.isfinite(test.pvalue) else 1.0
    if min(a.size, b.size) < min_samples:
        result["verdict"] = "not enough data"
    elif result["p_value"] < alpha:
        # U counts pairs with b > a: above half of all pairs means b tends to be slower.
        result["verdict"] = "b slower" if test.statistic > a.size * b.size / 2 else "b faster"
    else:
        result["verdict"] = "no significant difference"
    return result
