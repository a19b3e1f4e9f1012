"""Choose the cascade's first stage and threshold by measurement (models/cascade.py serves it).

Candidates: classic (its linear head over the shared features) and each of the seven members as
served (on its fast path). For every candidate and confidence score the threshold is fitted on the
**validation** split to the goal: the lowest escalation rate whose accuracy is within `tolerance`
(default 1 point) of the stacked ensemble's on validation. Each candidate's served cost is timed in
process (median of many calls on 1 and 64 rows of the design matrix, one thread), and the first
stage chosen is the one with the lowest expected cost per row of a one-row call:

    cost(first stage) + escalation rate x cost(the rest of the ensemble)

(a member first stage is reused by the escalated rows, so "the rest" is the ensemble less that
member; after classic it is the whole ensemble). The **test** split only reports the choice: the
cascade's accuracy and escalation rate at the fitted threshold, and the accuracy-vs-escalation
table.

Caveat: the stacker is fitted on the validation split and the boosted members stop early on it, so
the ensemble's validation accuracy is a little optimistic; the goal is then a little strict, and
the test figures are what to quote.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from models.cascade import (
    DEFAULT_TOLERANCE,
    SCORES,
    ThresholdFit,
    escalation_table,
    evaluate,
    fit_threshold,
)

CostRows = (1, 64)
"""Batch sizes the served cost is timed at (a lone request, a full adaptive batch)."""


def time_call(
    call: Callable[[np.ndarray], Any], X: np.ndarray, rows: int, budget_s: float = 0.3
) -> float:
    """Median seconds of `call` on the first `rows` rows of X (after a warm-up call), repeated for
    about `budget_s` (at least 5 and at most 500 times)."""
    batch = np.ascontiguousarray(X[:rows])
    call(batch)
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < 500 and (len(samples) < 5 or time.perf_counter() - started < budget_s):
        t0 = time.perf_counter()
        call(batch)
        samples.append(time.perf_counter() - t0)
    return float(np.median(samples))


def measure_costs(
    calls: Mapping[str, Callable[[np.ndarray], Any]], X: np.ndarray, rows=CostRows
) -> dict[str, dict[str, float]]:
    """{name: {"1": seconds, "64": seconds}}: each call's median time per call at each size."""
    return {name: {str(n): time_call(call, X, n) for n in rows} for name, call in calls.items()}


def choose_cascade(
    val: Mapping[str, np.ndarray],
    test: Mapping[str, np.ndarray],
    full_val: np.ndarray,
    full_test: np.ndarray,
    y_val: np.ndarray,
    y_test: np.ndarray,
    costs: Mapping[str, Mapping[str, float]],
    ensemble_costs: Mapping[str, float],
    members: tuple[str, ...],
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict[str, Any]:
    """The cascade spec and its evidence (what the ensemble's metadata keeps under `cascade`).

    `val`, `test`: each candidate's probabilities on the validation and test splits; `full_*`:
    the stacked ensemble's; `costs`: `measure_costs` of the candidates, `ensemble_costs` the
    ensemble's own; `members`: which candidates are ensemble members (reused on escalation).
    """
    one = "1"
    candidates: dict[str, dict[str, Any]] = {}
    fits: dict[str, ThresholdFit] = {}
    for name in val:
        fit = min(
            (fit_threshold(val[name], full_val, y_val, score, tolerance) for score in SCORES),
            key=lambda f: (f.escalation_rate, -f.accuracy),
        )
        fits[name] = fit
        first_cost = costs[name][one]
        rest = ensemble_costs[one] - first_cost if name in members else ensemble_costs[one]
        expected = first_cost + fit.escalation_rate * max(rest, 0.0)
        tested = evaluate(test[name], full_test, y_test, fit.threshold, fit.score)
        candidates[name] = {
            "score": fit.score,
            "threshold": fit.threshold,
            "first_stage_accuracy": round(fit.first_stage_accuracy, 6),
            "validation": {
                "escalation_rate": round(fit.escalation_rate, 6),
                "accuracy": round(fit.accuracy, 6),
            },
            "test": tested,
            "seconds_per_call": {k: round(v, 7) for k, v in costs[name].items()},
            "expected_seconds_per_row": round(expected, 7),
        }
    chosen = min(candidates, key=lambda n: candidates[n]["expected_seconds_per_row"])
    fit = fits[chosen]
    full_test_accuracy = float(np.mean(np.argmax(full_test, axis=1) == y_test))
    first_test_accuracy = float(np.mean(np.argmax(test[chosen], axis=1) == y_test))
    return {
        "first_stage": chosen,
        "score": fit.score,
        "threshold": fit.threshold,
        "goal": {
            "metric": "accuracy",
            "tolerance": tolerance,
            "relative_to": "the stacked ensemble on the validation split",
            "choose": "lowest escalation rate reaching the goal, per candidate and score",
            "first_stage": "lowest expected seconds per row of a one-row call: "
            "first stage + escalation rate x the rest of the ensemble",
        },
        "validation": fit.as_dict(),
        "test": {
            **evaluate(test[chosen], full_test, y_test, fit.threshold, fit.score),
            "ensemble_accuracy": round(full_test_accuracy, 6),
            "first_stage_accuracy": round(first_test_accuracy, 6),
        },
        "table": escalation_table(test[chosen], full_test, y_test, fit.score),
        "ensemble_seconds_per_call": {k: round(v, 7) for k, v in ensemble_costs.items()},
        "expected_seconds_per_row": candidates[chosen]["expected_seconds_per_row"],
        "candidates": candidates,
    }


def summary_lines(cascade: Mapping[str, Any]) -> list[str]:
    """The cascade's part of the training summary: the candidates, the choice, the table."""
    header = ("first stage", "score", "threshold", "val esc", "val acc", "test esc", "test acc")
    rows: list[tuple[str, ...]] = [(*header, "1 row ms", "64 rows ms", "expected ms/row")]
    for name, c in cascade["candidates"].items():
        marker = "* " if name == cascade["first_stage"] else "  "
        rows.append(
            (
                marker + name,
                c["score"],
                f"{c['threshold']:.4f}",
                f"{c['validation']['escalation_rate']:.3f}",
                f"{c['validation']['accuracy']:.4f}",
                f"{c['test']['escalation_rate']:.3f}",
                f"{c['test']['accuracy']:.4f}",
                *_ms(c["seconds_per_call"]["1"], c["seconds_per_call"]["64"]),
                *_ms(c["expected_seconds_per_row"]),
            )
        )
    test, ens = cascade["test"], cascade["ensemble_seconds_per_call"]
    rows.append(
        ("  (ensemble)", "", "", "1.000", "", "1.000", f"{test['ensemble_accuracy']:.4f}")
        + _ms(ens["1"], ens["64"], ens["1"])
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    tolerance = cascade["goal"]["tolerance"] * 100
    lines = [f"cascade candidates (goal: within {tolerance:g} point(s) of the ensemble's accuracy"]
    lines[0] += " on validation, lowest escalation; * = lowest expected cost per row):"
    lines += [
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows
    ]
    first = cascade["first_stage"]
    lines.append(
        f"cascade: {first} first, escalating {cascade['score']} < {cascade['threshold']:.4f}: "
        f"test accuracy {test['accuracy']:.4f} with {test['escalation_rate'] * 100:.1f} % "
        f"escalated (ensemble {test['ensemble_accuracy']:.4f}, {first} alone "
        f"{test['first_stage_accuracy']:.4f})"
    )
    table = cascade["table"]
    lines.append("cascade accuracy vs escalation (test split, least confident escalated first):")
    lines.append("  escalated " + " ".join(f"{r['escalation'] * 100:6.0f}%" for r in table))
    lines.append("  accuracy  " + " ".join(f"{r['accuracy']:7.4f}" for r in table))
    return lines


def _ms(*seconds: float) -> tuple[str, ...]:
    return tuple(f"{s * 1000.0:.3f}" for s in seconds)
