"""Live evaluation: rolling metrics per arm, A/B statistics, and the go/no-go score for a rollout.

Arms: "classic", "ensemble" and "cascade" (dynamic selection, served by the ensemble service) are
the arms that answered requests; "shadow" holds the ensemble's predictions made in shadow mode for
requests classic answered (they get labels, not latency: a shadow call never delays an answer). The
go/no-go and the rollout compare the ensemble with classic; the cascade has its own window and
its own comparison with classic (`compare(candidate="cascade")`).

- `ArmWindow`: a bounded rolling window (at most `max_events` events no older than `max_age_s`)
  of requests (latency, error, fallback, cache hit, CPU seconds) and labels (correct, rating).
- `EvaluationWindows`: one window per arm.
- `compare_accuracy`: difference of two proportions with a Newcombe hybrid-score interval
  (Wilson intervals combined, Newcombe 1998 method 10) and a pooled two-proportion z-test.
- `compare_latency`: p95 difference and a two-sided Mann-Whitney U test.
- `ScoreConfig` / `go_no_go`: a weighted 0..1 score from accuracy, satisfaction, cost and
  stability, and the gates that must all pass before the rollout proceeds. The cost term reads the
  deployment's bill (serving/evidence/cost.py) from the snapshot's "cost" entry.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from serving.config.delivery import ScoreConfig
from serving.evidence import sequential

ARMS: tuple[str, ...] = ("classic", "ensemble", "cascade", "shadow")
"""The arms the windows track by default."""

COST_KEY = "cost"
"""Snapshot entry (beside the arms) holding `serving.evidence.cost.cost_report(...)`."""


# ---------------------------------------------------------------------------- windows
class ArmWindow:
    """Rolling live metrics of one arm, bounded in size and age; thread-safe.

    Requests and labels are kept in two deques of at most `max_events` entries each; entries older
    than `max_age_s` (by the injected `clock`, epoch seconds by default) are dropped whenever the
    window is touched. Cache hits count as requests but are left out of the latency samples (a
    cache hit says nothing about the model's speed).
    """

    def __init__(
        self,
        max_events: int = 10_000,
        max_age_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ):
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        if max_age_s <= 0:
            raise ValueError("max_age_s must be positive")
        self.max_events = int(max_events)
        self.max_age_s = float(max_age_s)
        self._clock = clock
        self._lock = threading.Lock()
        # (time, latency_ms or None, error, fallback, cached, cpu_seconds or None)
        self._requests: deque[tuple[float, float | None, bool, bool, bool, float | None]] = deque(
            maxlen=self.max_events
        )
        # (time, correct, rating or None)
        self._labels: deque[tuple[float, bool, int | None]] = deque(maxlen=self.max_events)

    def record_request(
        self,
        latency_ms: float | None,
        error: bool,
        fallback: bool,
        cached: bool,
        cpu_seconds: float | None,
        at: float | None = None,
    ) -> None:
        """Count one request to this arm.

        `error`: the arm failed it (also when the router then answered by fallback);
        `fallback`: classic answered in the arm's place; `cached`: answered from the cache (no
        latency sample); `cpu_seconds`: CPU time the arm spent on it, None when unknown; `at`:
        when it was answered (replays from the shared store), default now.
        """
        if cached or latency_ms is None or not math.isfinite(latency_ms):
            latency = None
        else:
            latency = float(latency_ms)
        cpu = None if cpu_seconds is None or not math.isfinite(cpu_seconds) else float(cpu_seconds)
        now = self._clock()
        stamp = now if at is None else float(at)
        with self._lock:
            self._requests.append((stamp, latency, bool(error), bool(fallback), bool(cached), cpu))
            self._prune(now)

    def record_label(
        self, correct: bool, rating: int | None = None, at: float | None = None
    ) -> None:
        """Count one labelled prediction of this arm, with the user's 1..10 rating if given."""
        now = self._clock()
        stamp = now if at is None else float(at)
        with self._lock:
            self._labels.append((stamp, bool(correct), None if rating is None else int(rating)))
            self._prune(now)

    def latencies(self) -> list[float]:
        """The latency samples (ms) in the window, oldest first (cache hits excluded)."""
        with self._lock:
            self._prune(self._clock())
            return [r[1] for r in self._requests if r[1] is not None]

    def clear(self) -> None:
        """Forget everything (e.g. when a new rollout stage starts)."""
        with self._lock:
            self._requests.clear()
            self._labels.clear()

    def _prune(self, now: float) -> None:
        horizon = now - self.max_age_s
        for events in (self._requests, self._labels):
            while events and events[0][0] < horizon:
                events.popleft()

    def snapshot(self) -> dict:
        """The window's metrics as a JSON-able dict; rates and percentiles are None without data.

        Keys: `count` (requests), `errors`, `error_rate`, `success_rate` (1 - error_rate),
        `fallbacks`, `fallback_rate`, `cached`, `cache_hit_rate`, `latency_samples`,
        `p50_latency_ms`, `p95_latency_ms`, `p99_latency_ms` (linear-interpolated percentiles of
        the non-cached latencies), `cpu_samples`, `cpu_seconds_per_request` (mean over requests
        with a CPU measurement), `labelled`, `correct`, `accuracy`, `rated`, `satisfaction`
        (mean rating / 10).
        """
        with self._lock:
            self._prune(self._clock())
            requests = list(self._requests)
            labels = list(self._labels)
        count = len(requests)
        errors = sum(1 for r in requests if r[2])
        fallbacks = sum(1 for r in requests if r[3])
        cached = sum(1 for r in requests if r[4])
        latencies = np.array([r[1] for r in requests if r[1] is not None], dtype=np.float64)
        cpu = [r[5] for r in requests if r[5] is not None]
        labelled = len(labels)
        correct = sum(1 for entry in labels if entry[1])
        ratings = [entry[2] for entry in labels if entry[2] is not None]
        if latencies.size:
            p50, p95, p99 = (float(v) for v in np.percentile(latencies, [50, 95, 99]))
        else:
            p50 = p95 = p99 = None
        error_rate = errors / count if count else None
        return {
            "count": count,
            "errors": errors,
            "error_rate": error_rate,
            "success_rate": None if error_rate is None else 1.0 - error_rate,
            "fallbacks": fallbacks,
            "fallback_rate": fallbacks / count if count else None,
            "cached": cached,
            "cache_hit_rate": cached / count if count else None,
            "latency_samples": int(latencies.size),
            "p50_latency_ms": p50,
            "p95_latency_ms": p95,
            "p99_latency_ms": p99,
            "cpu_samples": len(cpu),
            "cpu_seconds_per_request": float(np.mean(cpu)) if cpu else None,
            "labelled": labelled,
            "correct": correct,
            "accuracy": correct / labelled if labelled else None,
            "rated": len(ratings),
            "satisfaction": float(np.mean(ratings)) / 10.0 if ratings else None,
        }


class EvaluationWindows:
    """One `ArmWindow` per arm ("classic", "ensemble", "cascade", "shadow"); what a request
    costs is serving/evidence/cost.py's business (it reads the arms' CPU from these windows)."""

    def __init__(
        self,
        arms: Sequence[str] = ARMS,
        max_events: int = 10_000,
        max_age_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ):
        self.windows: dict[str, ArmWindow] = {
            arm: ArmWindow(max_events=max_events, max_age_s=max_age_s, clock=clock) for arm in arms
        }
        self.forced_labels: dict[str, int] = {}
        """Labels of requests whose arm was chosen, not assigned at random (header, preference,
        allow-list, direct endpoint, fallback): reported per arm, never compared."""

    def __getitem__(self, arm: str) -> ArmWindow:
        """The window of `arm` (KeyError for an unknown arm)."""
        return self.windows[arm]

    def record_request(
        self,
        arm: str,
        latency_ms: float | None,
        error: bool = False,
        fallback: bool = False,
        cached: bool = False,
        cpu_seconds: float | None = None,
    ) -> None:
        """Shorthand for `self[arm].record_request(...)`."""
        self.windows[arm].record_request(latency_ms, error, fallback, cached, cpu_seconds)

    def record_label(self, arm: str, correct: bool, rating: int | None = None) -> None:
        """Shorthand for `self[arm].record_label(...)`."""
        self.windows[arm].record_label(correct, rating)

    def replay_requests(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Rebuild the request windows from stored outcomes (`StateStore.requests_since`, every
        replica's), oldest first, each at the time it was answered. Returns the rows replayed."""
        replayed = 0
        for row in rows:
            window = self.windows.get(row.get("arm"))
            if window is not None:
                window.record_request(
                    row.get("latency_ms"),
                    bool(row.get("error")),
                    bool(row.get("fallback")),
                    bool(row.get("cached")),
                    row.get("cpu_seconds"),
                    at=row.get("created_at"),
                )
                replayed += 1
        return replayed

    def replay_feedback(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Rebuild the label windows from stored feedback (`StateStore.feedback_since`).

        Only rows whose arm was assigned at random (`randomised`, missing = True) are labels
        here; the others are counted in `forced_labels`. Each row's label goes to its serving arm
        and, when it carries a shadow prediction, to the "shadow" window (without the rating,
        which judged the served answer). Only labels are
        rebuilt here (`replay_requests` rebuilds the request counters). Returns the number of rows
        replayed. A row's label counts from the row's `created_at` (the prediction's time) when it
        has one, else from now.
        """
        replayed = 0
        for row in rows:
            arm, at = row.get("arm"), row.get("created_at")
            if not row.get("randomised", True):  # only randomised traffic is A/B evidence
                self.forced_labels[str(arm)] = self.forced_labels.get(str(arm), 0) + 1
                replayed += 1
                continue
            if arm in self.windows:
                correct = row.get("correct")
                if correct is None:
                    correct = row.get("predicted") == row.get("label")
                self.windows[arm].record_label(bool(correct), row.get("rating"), at=at)
            shadow = row.get("shadow_predicted")
            if shadow is not None and "shadow" in self.windows:
                self.windows["shadow"].record_label(shadow == row.get("label"), at=at)
            replayed += 1
        return replayed

    def clear(self) -> None:
        """Empty every window."""
        for window in self.windows.values():
            window.clear()

    def snapshot(self) -> dict[str, dict]:
        """{arm: ArmWindow.snapshot()} for every arm, with `forced_labelled`: labels of traffic
        whose arm was not assigned at random (left out of `labelled`)."""
        out = {arm: window.snapshot() for arm, window in self.windows.items()}
        for arm, snap in out.items():
            snap["forced_labelled"] = self.forced_labels.get(arm, 0)
        return out

    def compare(
        self,
        baseline: str = "classic",
        candidate: str = "ensemble",
        alpha: float = 0.05,
        min_samples: int = 100,
    ) -> dict:
        """A/B statistics of `candidate` against `baseline`: accuracy and latency comparisons."""
        a = self.windows[baseline].snapshot()
        b = self.windows[candidate].snapshot()
        return {
            "baseline": baseline,
            "candidate": candidate,
            "accuracy": compare_accuracy(
                a["correct"],
                a["labelled"],
                b["correct"],
                b["labelled"],
                alpha=alpha,
                min_samples=min_samples,
            ),
            "latency": compare_latency(
                self.windows[baseline].latencies(),
                self.windows[candidate].latencies(),
                min_samples=min_samples,
                alpha=alpha,
            ),
        }


# ---------------------------------------------------------------------------- A/B statistics
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


# ---------------------------------------------------------------------------- go / no-go
def normalise(value: float, zero_at: float, one_at: float) -> float:
    """Linear 0..1 score: 0 at `zero_at`, 1 at `one_at`, clipped (works in either direction)."""
    if one_at == zero_at:
        raise ValueError("zero_at and one_at must differ")
    return float(min(1.0, max(0.0, (value - zero_at) / (one_at - zero_at))))


def candidate_accuracy(
    snapshot: Mapping[str, Mapping[str, Any]], include_shadow: bool = True
) -> tuple[int, int]:
    """(correct, labelled) of the ensemble: its own labels, plus the shadow arm's if asked."""
    correct = labelled = 0
    arms = ("ensemble", "shadow") if include_shadow else ("ensemble",)
    for arm in arms:
        snap = snapshot.get(arm) or {}
        correct += int(snap.get("correct") or 0)
        labelled += int(snap.get("labelled") or 0)
    return correct, labelled


def go_no_go(
    snapshot: Mapping[str, Mapping[str, Any]],
    config: ScoreConfig | None = None,
    min_samples: int | None = None,
) -> dict:
    """Score the ensemble against classic from an `EvaluationWindows.snapshot()`, plus under
    `COST_KEY` the deployment's bill (`serving.evidence.cost.cost_report`): the cost term is its
    `increase_at_full_rollout` (missing without it).

    Returns every input, and per term its value, threshold (minimum) and target, margin (value -
    minimum; for cost, maximum - value, so positive is good), weight and 0..1 score; the weighted
    `score`; `failed_gates` (each {"gate", "value", "threshold", "rule"}); `missing` (terms left
    out for lack of data); `cost` (the bill's figures behind the cost term); and `verdict`: "not
    enough data" (too few labels or requests), "proceed" (no gate failed and score >=
    proceed_threshold) or "hold". `min_samples` overrides `config.min_labelled_samples`.
    """
    config = config or ScoreConfig()
    min_labelled = config.min_labelled_samples if min_samples is None else int(min_samples)
    classic = snapshot.get("classic") or {}
    ensemble = snapshot.get("ensemble") or {}
    correct_c, n_c = int(classic.get("correct") or 0), int(classic.get("labelled") or 0)
    correct_e, n_e = candidate_accuracy(snapshot, config.include_shadow_labels)
    acc_c = correct_c / n_c if n_c else None
    acc_e = correct_e / n_e if n_e else None
    cost = snapshot.get(COST_KEY) or {}
    cost_inputs, cost_arms = cost.get("inputs") or {}, cost.get("arms") or {}
    inputs = {
        "classic_accuracy": acc_c,
        "classic_labelled": n_c,
        "ensemble_accuracy": acc_e,
        "ensemble_labelled": n_e,
        "ensemble_satisfaction": ensemble.get("satisfaction"),
        "ensemble_rated": ensemble.get("rated", 0),
        "classic_cpu_seconds_per_request": classic.get("cpu_seconds_per_request"),
        "ensemble_cpu_seconds_per_request": ensemble.get("cpu_seconds_per_request"),
        "router_cpu_seconds_per_request": cost_inputs.get("router_cpu_seconds_per_request"),
        "requests_per_second": cost_inputs.get("requests_per_second"),
        "classic_cost_per_request": (cost_arms.get("classic") or {}).get("cost_per_request"),
        "ensemble_cost_per_request": (cost_arms.get("ensemble") or {}).get("cost_per_request"),
        "cost_increase": cost.get("increase_at_full_rollout"),
        "ensemble_requests": int(ensemble.get("count") or 0),
        "ensemble_success_rate": ensemble.get("success_rate"),
        "include_shadow_labels": config.include_shadow_labels,
    }
    result: dict[str, Any] = {
        "inputs": inputs,
        "terms": {},
        "score": None,
        "threshold": config.proceed_threshold,
        "failed_gates": [],
        "missing": [],
        "reasons": [],
        "cost": cost_evidence(cost) if cost else None,
    }
    if n_c < min_labelled or n_e < min_labelled:
        result["reasons"].append(
            f"need {min_labelled} labelled predictions per arm, have classic {n_c}, ensemble {n_e}"
        )
    if inputs["ensemble_requests"] < config.min_requests:
        result["reasons"].append(
            f"need {config.min_requests} ensemble requests, have {inputs['ensemble_requests']}"
        )
    if result["reasons"]:
        result["verdict"] = "not enough data"
        return result

    evidence = accuracy_evidence(correct_c, n_c, correct_e, n_e, config)
    result["accuracy_evidence"] = evidence
    if not evidence["passed"]:
        result["failed_gates"].append(
            _gate(
                "accuracy_evidence",
                evidence["p_value"],
                config.alpha,
                "<",
            )
        )
    values = _term_values(acc_c, acc_e, inputs)
    terms: dict[str, dict] = {}
    for term in SCORE_TERMS:
        value = values[term.name]
        if value is None and term.name in FAIL_CLOSED:
            result["missing"].append(term.name)
            terms[term.name] = _unknown(term, config)
            result["failed_gates"].append(_unknown_gate(term, config, cost))
            continue
        if value is None:
            result["missing"].append(term.name)
            continue
        terms[term.name], passed = term.judge(value, config)
        if not passed:
            result["failed_gates"].append(
                _gate(term.gate, value, getattr(config, term.minimum), term.rule)
            )
    total_weight = sum(t["weight"] for t in terms.values())
    score = (
        sum(t["weight"] * t["score"] for t in terms.values()) / total_weight
        if total_weight
        else 0.0
    )
    for term in terms.values():
        term["weight_used"] = term["weight"] / total_weight if total_weight else 0.0
    result["terms"] = terms
    result["score"] = score
    if score < config.proceed_threshold:
        result["failed_gates"].append(_gate("score", score, config.proceed_threshold, ">="))
    result["verdict"] = "hold" if result["failed_gates"] else "proceed"
    return result


def accuracy_evidence(
    correct_c: int, n_c: int, correct_e: int, n_e: int, config: ScoreConfig
) -> dict[str, Any]:
    """Is the ensemble's relative improvement over classic at least `accuracy_improvement_min`,
    anytime-valid? The rollout re-judges every tick, so the accuracy gate is the one-sided
    mixture test of H0: acc_e - acc_c <= accuracy_improvement_min * acc_c
    (`serving.evidence.sequential`), not the point estimate: passes when its always-valid
    p-value is below `config.alpha`. `relative_low`: the anytime-valid lower bound of the
    improvement, relative to classic's observed accuracy."""
    acc_c = correct_c / n_c if n_c else 0.0
    needed = config.accuracy_improvement_min * acc_c
    seq = sequential.difference(correct_c, n_c, correct_e, n_e, config.alpha, margin=-needed)
    p = seq["noninferiority_p_value"]
    low = seq["noninferiority_low"]
    return {
        "method": seq["method"],
        "null": f"ensemble - classic accuracy <= {needed:.4f} "
        f"({config.accuracy_improvement_min:g} x classic)",
        "p_value": p,
        "alpha": config.alpha,
        "diff": seq["diff"],
        "lower_bound": low,
        "relative_low": low / acc_c if low is not None and acc_c > 0 else None,
        "cs_low": seq["cs_low"],
        "cs_high": seq["cs_high"],
        "passed": bool(p is not None and p < config.alpha),
    }


FAIL_CLOSED = ("cost",)
"""Terms that may not be left out: without their inputs the term is `unknown`, it scores 0 with
its full weight (the other weights are not renormalised around it) and its gate fails, so the
verdict is hold. (Satisfaction needs ratings users may never give: it stays optional.)"""


def _unknown(term: ScoreTerm, config: ScoreConfig) -> dict[str, Any]:
    return {
        "value": None,
        "status": "unknown",
        "threshold": getattr(config, term.minimum),
        "target": getattr(config, term.target),
        "margin": None,
        "weight": getattr(config, term.weight),
        "score": 0.0,
        "unit": term.unit,
    }


def _unknown_gate(term: ScoreTerm, config: ScoreConfig, cost: Mapping[str, Any]) -> dict:
    why = "; ".join(cost.get("missing") or []) or "no bill"
    return {
        "gate": term.gate,
        "value": None,
        "threshold": getattr(config, term.minimum),
        "rule": f"unknown ({why}): fail closed",
    }


@dataclass(frozen=True)
class ScoreTerm:
    """One row of the go/no-go table: which config fields bound it and which way is better."""

    name: str
    gate: str
    unit: str
    minimum: str
    """ScoreConfig field scoring 0 and bounding the gate (for cost: the maximum allowed)."""
    target: str
    """ScoreConfig field scoring 1."""
    weight: str
    lower_is_better: bool = False

    @property
    def rule(self) -> str:
        return "<" if self.lower_is_better else ">="

    def judge(self, value: float, config: ScoreConfig) -> tuple[dict, bool]:
        """The term's report (value, threshold, target, margin, weight, 0..1 score) and whether
        its gate passes; an infinite value (classic never right) scores 1 and shows as None."""
        minimum, target = getattr(config, self.minimum), getattr(config, self.target)
        margin = minimum - value if self.lower_is_better else value - minimum
        passed = value < minimum if self.lower_is_better else value >= minimum
        finite = math.isfinite(value)
        report = {
            "value": value if finite else None,
            "threshold": minimum,
            "target": target,
            "margin": margin if finite else None,
            "weight": getattr(config, self.weight),
            "score": normalise(value, minimum, target) if finite else float(value > 0),
            "unit": self.unit,
        }
        return report, passed


SCORE_TERMS: tuple[ScoreTerm, ...] = (
    ScoreTerm(
        "accuracy",
        "accuracy_improvement",
        "relative improvement over classic",
        "accuracy_improvement_min",
        "accuracy_improvement_target",
        "weight_accuracy",
    ),
    ScoreTerm(
        "satisfaction",
        "satisfaction",
        "mean rating / 10",
        "satisfaction_min",
        "satisfaction_target",
        "weight_satisfaction",
    ),
    ScoreTerm(
        "cost",
        "cost_increase",
        "relative increase of the deployment's cost per request, 100 % ensemble vs classic alone",
        "cost_increase_max",
        "cost_increase_target",
        "weight_cost",
        lower_is_better=True,
    ),
    ScoreTerm(
        "stability",
        "stability",
        "success rate",
        "stability_min",
        "stability_target",
        "weight_stability",
    ),
)
"""The go/no-go score's terms, in report order."""


def _term_values(
    acc_c: float | None, acc_e: float | None, inputs: Mapping[str, Any]
) -> dict[str, float | None]:
    """Each term's raw value from the inputs; None when the term has no data."""
    if acc_c and acc_c > 0:
        improvement = (acc_e - acc_c) / acc_c
    else:  # classic never right: any correct ensemble answer is an unbounded improvement
        improvement = math.inf if acc_e and acc_e > 0 else 0.0
    cost = inputs["cost_increase"]
    success = inputs["ensemble_success_rate"]
    return {
        "accuracy": improvement,
        "satisfaction": inputs["ensemble_satisfaction"],
        "cost": cost,
        "stability": 1.0 if success is None else float(success),
    }


def cost_evidence(cost: Mapping[str, Any]) -> dict[str, Any]:
    """The figures of a `cost_report` that the go/no-go records with its verdict (and the status
    page shows): inputs, $/request per arm and now, and each stage's bill, without the per-app
    detail and the configuration (those are in the evaluation report)."""
    stages = []
    for stage in cost.get("stages") or []:
        apps = stage.get("apps") or {}
        stages.append(
            {
                "percentage": stage.get("percentage"),
                "in_schedule": stage.get("in_schedule"),
                "cost_per_request": stage.get("per_request"),
                "monthly": stage.get("per_month"),
                "increase": stage.get("increase"),
                "replicas": {name: app.get("replicas") for name, app in apps.items()},
            }
        )
    arms = {
        arm: {
            "cost_per_request": figures.get("cost_per_request"),
            "monthly": figures.get("monthly"),
            "work_cost_per_request": (figures.get("work") or {}).get("cost"),
        }
        for arm, figures in (cost.get("arms") or {}).items()
    }
    return {
        "currency": cost.get("currency"),
        "inputs": cost.get("inputs"),
        "arms": arms,
        "current": cost.get("current"),
        "stages": stages,
        "increase_at_full_rollout": cost.get("increase_at_full_rollout"),
        "traffic_for_increase": cost.get("traffic_for_increase"),
        "missing": cost.get("missing"),
        "plan": cost.get("plan"),
    }


def _gate(name: str, value: float, threshold: float, rule: str) -> dict:
    return {
        "gate": name,
        "value": value if math.isfinite(value) else None,
        "threshold": threshold,
        "rule": f"value {rule} threshold",
    }
