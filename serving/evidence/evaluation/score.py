"""The rollout's go/no-go: a weighted 0..1 score of the ensemble against classic from accuracy,
satisfaction, cost and stability, and the gates that must all pass before the rollout proceeds.
The accuracy gate is anytime-valid (`serving.evidence.sequential`); the cost term reads the
deployment's bill (`serving.evidence.cost`) from the snapshot's `COST_KEY` entry and fails closed
without it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from serving.config.delivery import ScoreConfig
from serving.evidence import sequential

COST_KEY = "cost"
"""Snapshot entry (beside the arms) holding `serving.evidence.cost.cost_report(...)`."""


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
    correct_c, n_c = int(classic.get("correct") or 0), int(classic.get("labelled") or 0)
    correct_e, n_e = candidate_accuracy(snapshot, config.include_shadow_labels)
    acc_c = correct_c / n_c if n_c else None
    acc_e = correct_e / n_e if n_e else None
    cost = snapshot.get(COST_KEY) or {}
    inputs = _inputs(snapshot, (correct_c, n_c), (correct_e, n_e), cost, config)
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
    terms = _judge_terms(_term_values(acc_c, acc_e, inputs), config, cost, result)
    total_weight = sum(t["weight"] for t in terms.values())
    score = (
        sum(t["weight"] * t["score"] for t in terms.values()) / total_weight
        if total_weight
        else 0.0
    )
    for report in terms.values():
        report["weight_used"] = report["weight"] / total_weight if total_weight else 0.0
    result["terms"] = terms
    result["score"] = score
    if score < config.proceed_threshold:
        result["failed_gates"].append(_gate("score", score, config.proceed_threshold, ">="))
    result["verdict"] = "hold" if result["failed_gates"] else "proceed"
    return result


def _inputs(
    snapshot: Mapping[str, Mapping[str, Any]],
    classic_labels: tuple[int, int],
    ensemble_labels: tuple[int, int],
    cost: Mapping[str, Any],
    config: ScoreConfig,
) -> dict[str, Any]:
    """The figures the verdict is taken on, as the report shows them."""
    classic = snapshot.get("classic") or {}
    ensemble = snapshot.get("ensemble") or {}
    (correct_c, n_c), (correct_e, n_e) = classic_labels, ensemble_labels
    acc_c = correct_c / n_c if n_c else None
    acc_e = correct_e / n_e if n_e else None
    cost_inputs, cost_arms = cost.get("inputs") or {}, cost.get("arms") or {}
    return {
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


def _judge_terms(
    values: Mapping[str, float | None],
    config: ScoreConfig,
    cost: Mapping[str, Any],
    result: dict[str, Any],
) -> dict[str, dict]:
    """Each term's report, in `SCORE_TERMS` order; terms without data go to `result["missing"]`
    (left out, or scored 0 and failed when they fail closed), failed gates to
    `result["failed_gates"]`."""
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
    return terms


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
        improvement = ((acc_e or 0.0) - acc_c) / acc_c
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
