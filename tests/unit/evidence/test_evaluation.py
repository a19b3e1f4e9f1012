"""Live evaluation windows, A/B statistics against scipy, and go/no-go normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from serving.config.delivery import CostConfig, ScoreConfig
from serving.evidence.cost import Usage, cost_report
from serving.evidence.evaluation import (
    COST_KEY,
    ArmWindow,
    EvaluationWindows,
    compare_accuracy,
    compare_latency,
    go_no_go,
    normalise,
    wilson_interval,
)
from tests.doubles import FakeClock


# ---------------------------------------------------------------------------- ArmWindow
def test_an_empty_window_has_no_rates():
    snap = ArmWindow(clock=FakeClock()).snapshot()
    assert snap["count"] == 0 and snap["labelled"] == 0
    for key in (
        "error_rate",
        "fallback_rate",
        "accuracy",
        "p50_latency_ms",
        "p95_latency_ms",
        "p99_latency_ms",
        "cpu_seconds_per_request",
        "satisfaction",
    ):
        assert snap[key] is None


def test_percentiles_match_numpy_and_cache_hits_are_not_latency_samples():
    rng = np.random.default_rng(1)
    latencies = rng.lognormal(3, 0.5, size=500)
    window = ArmWindow(clock=FakeClock())
    for value in latencies:
        window.record_request(
            float(value), error=False, fallback=False, cached=False, cpu_seconds=None
        )
    for _ in range(100):
        window.record_request(0.01, error=False, fallback=False, cached=True, cpu_seconds=None)
    window.record_request(None, error=True, fallback=True, cached=False, cpu_seconds=None)
    snap = window.snapshot()
    assert snap["count"] == 601
    assert snap["latency_samples"] == 500
    assert snap["cached"] == 100 and snap["cache_hit_rate"] == pytest.approx(100 / 601)
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    assert snap["p50_latency_ms"] == pytest.approx(p50)
    assert snap["p95_latency_ms"] == pytest.approx(p95)
    assert snap["p99_latency_ms"] == pytest.approx(p99)
    assert window.latencies() == pytest.approx(list(latencies))


def test_rates_accuracy_cpu_and_satisfaction():
    window = ArmWindow(clock=FakeClock())
    for i in range(200):
        window.record_request(
            10.0, error=i < 4, fallback=i < 2, cached=False, cpu_seconds=0.002 if i % 2 else None
        )
    for i in range(50):
        window.record_label(correct=i < 40, rating=[8, 6][i % 2] if i < 10 else None)
    snap = window.snapshot()
    assert snap["error_rate"] == pytest.approx(0.02)
    assert snap["success_rate"] == pytest.approx(0.98)
    assert snap["fallback_rate"] == pytest.approx(0.01)
    assert snap["cpu_samples"] == 100
    assert snap["cpu_seconds_per_request"] == pytest.approx(0.002)
    assert (
        snap["labelled"] == 50 and snap["correct"] == 40 and snap["accuracy"] == pytest.approx(0.8)
    )
    assert snap["rated"] == 10 and snap["satisfaction"] == pytest.approx(0.7)


def test_old_events_age_out_with_the_clock():
    clock = FakeClock()
    window = ArmWindow(max_age_s=60, clock=clock)
    window.record_request(100.0, False, False, False, None)
    window.record_label(False)
    clock.now += 30
    window.record_request(5.0, False, False, False, None)
    window.record_label(True)
    assert window.snapshot()["count"] == 2
    clock.now += 31  # the first events are now 61 s old
    snap = window.snapshot()
    assert snap["count"] == 1 and snap["p95_latency_ms"] == 5.0
    assert snap["labelled"] == 1 and snap["accuracy"] == 1.0
    clock.now += 100
    assert window.snapshot()["count"] == 0


def test_the_window_is_bounded_in_events():
    window = ArmWindow(max_events=10, clock=FakeClock())
    for i in range(25):
        window.record_request(float(i), False, False, False, None)
        window.record_label(i >= 15)
    snap = window.snapshot()
    assert snap["count"] == 10 and snap["latency_samples"] == 10
    assert window.latencies() == [float(i) for i in range(15, 25)]
    assert snap["accuracy"] == 1.0


def test_window_arguments_are_checked():
    with pytest.raises(ValueError):
        ArmWindow(max_events=0)
    with pytest.raises(ValueError):
        ArmWindow(max_age_s=0)


# ---------------------------------------------------------------------------- EvaluationWindows
def test_windows_per_arm_with_cpu_per_request():
    windows = EvaluationWindows(clock=FakeClock())
    windows.record_request("classic", 2.0, cpu_seconds=0.001)
    windows.record_request("ensemble", 30.0, cpu_seconds=0.004)
    windows.record_label("shadow", True)
    snap = windows.snapshot()
    assert set(snap) == {"classic", "ensemble", "cascade", "shadow"}
    assert snap["classic"]["cpu_seconds_per_request"] == pytest.approx(0.001)
    assert snap["ensemble"]["cpu_seconds_per_request"] == pytest.approx(0.004)
    assert snap["shadow"]["cpu_seconds_per_request"] is None and snap["shadow"]["labelled"] == 1
    assert "cost_per_request" not in snap["classic"]  # cost is the bill's (serving.evidence.cost)
    with pytest.raises(KeyError):
        windows["nope"]


def test_replay_feedback_rebuilds_labels_including_shadow():
    windows = EvaluationWindows(clock=FakeClock())
    rows = [
        {"arm": "classic", "predicted": "a", "label": "a", "rating": 8, "shadow_predicted": "b"},
        {"arm": "classic", "predicted": "a", "label": "b", "rating": None, "shadow_predicted": "b"},
        {
            "arm": "ensemble",
            "predicted": "c",
            "label": "c",
            "rating": 10,
            "shadow_predicted": None,
            "correct": True,
        },
    ]
    assert windows.replay_feedback(rows) == 3
    snap = windows.snapshot()
    assert (snap["classic"]["labelled"], snap["classic"]["correct"]) == (2, 1)
    assert snap["classic"]["satisfaction"] == pytest.approx(0.8)
    assert (snap["shadow"]["labelled"], snap["shadow"]["correct"]) == (2, 1)
    assert (snap["ensemble"]["labelled"], snap["ensemble"]["correct"]) == (1, 1)
    assert snap["classic"]["count"] == 0  # requests are not persisted
    windows.clear()
    assert windows.snapshot()["classic"]["labelled"] == 0


def test_compare_uses_the_windows():
    windows = EvaluationWindows(clock=FakeClock())
    for i in range(150):
        windows.record_request("classic", 5.0 + i % 7, cpu_seconds=None)
        windows.record_request("ensemble", 40.0 + i % 11, cpu_seconds=None)
        windows.record_label("classic", i % 10 < 7)
        windows.record_label("ensemble", i % 10 < 9)
    result = windows.compare()
    assert result["accuracy"]["verdict"] == "b better"
    assert result["latency"]["verdict"] == "b slower"


# ---------------------------------------------------------------------------- compare_accuracy
def test_wilson_interval_matches_scipy():
    for k, n in [(0, 20), (7, 20), (20, 20), (412, 500)]:
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        low, high = wilson_interval(k, n, alpha=0.05)
        assert low == pytest.approx(ci.low, abs=1e-12)
        assert high == pytest.approx(ci.high, abs=1e-12)


@pytest.mark.parametrize(
    "counts", [(700, 1000, 760, 1000), (150, 200, 130, 180), (90, 120, 118, 120)]
)
def test_z_test_matches_the_chi_squared_test_of_the_2x2_table(counts):
    correct_a, n_a, correct_b, n_b = counts
    result = compare_accuracy(correct_a, n_a, correct_b, n_b)
    table = [[correct_a, n_a - correct_a], [correct_b, n_b - correct_b]]
    chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
    assert result["z"] ** 2 == pytest.approx(chi2)
    assert result["p_value"] == pytest.approx(p)
    assert result["diff"] == pytest.approx(correct_b / n_b - correct_a / n_a)
    assert result["ci_low"] < result["diff"] < result["ci_high"]


def test_z_test_by_hand():
    result = compare_accuracy(700, 1000, 760, 1000)
    pooled = 1460 / 2000
    z = 0.06 / math.sqrt(pooled * (1 - pooled) * (2 / 1000))
    assert result["z"] == pytest.approx(z)
    assert result["p_value"] == pytest.approx(2 * (1 - stats.norm.cdf(z)))
    assert result["verdict"] == "b better"
    assert compare_accuracy(760, 1000, 700, 1000)["verdict"] == "a better"


@pytest.mark.parametrize(
    "counts, expected",
    [
        # Newcombe (1998), Statistics in Medicine 17:873-890, table II, method 10
        ((48, 80, 56, 70), (0.0524, 0.3339)),
        ((3, 10, 9, 10), (0.1705, 0.8090)),
    ],
)
def test_newcombe_interval_matches_the_published_examples(counts, expected):
    result = compare_accuracy(*counts, min_samples=1)
    assert result["interval"] == "newcombe-wilson"
    assert result["ci_low"] == pytest.approx(expected[0], abs=5e-5)
    assert result["ci_high"] == pytest.approx(expected[1], abs=5e-5)


def test_compare_accuracy_edge_cases():
    small = compare_accuracy(40, 50, 45, 50)
    assert small["verdict"] == "not enough data" and small["p_value"] is not None
    empty = compare_accuracy(0, 0, 10, 10)
    assert empty["verdict"] == "not enough data" and empty["diff"] is None
    perfect = compare_accuracy(200, 200, 200, 200)
    assert perfect["p_value"] == 1.0 and perfect["verdict"] == "no significant difference"
    assert compare_accuracy(150, 200, 152, 200)["verdict"] == "no significant difference"
    with pytest.raises(ValueError):
        compare_accuracy(11, 10, 1, 10)
    with pytest.raises(ValueError):
        compare_accuracy(-1, 10, 1, 10)


# ---------------------------------------------------------------------------- compare_latency
def test_compare_latency_matches_scipy():
    rng = np.random.default_rng(7)
    a = rng.gamma(2.0, 3.0, size=400)
    b = rng.gamma(2.0, 3.0, size=300) + 4.0
    result = compare_latency(list(a), list(b))
    expected = stats.mannwhitneyu(b, a, alternative="two-sided")
    assert result["p_value"] == pytest.approx(expected.pvalue)
    assert result["u_statistic"] == pytest.approx(expected.statistic)
    assert result["p95_diff_ms"] == pytest.approx(np.percentile(b, 95) - np.percentile(a, 95))
    assert result["verdict"] == "b slower"
    assert compare_latency(list(b), list(a))["verdict"] == "b faster"


def test_compare_latency_edge_cases():
    assert compare_latency([1.0] * 50, [2.0] * 50)["verdict"] == "not enough data"
    assert compare_latency([], [1.0])["p95_diff_ms"] is None
    same = compare_latency([5.0] * 200, [5.0] * 200)
    assert same["verdict"] == "no significant difference" and same["p95_diff_ms"] == 0.0


# ---------------------------------------------------------------------------- go / no-go
def _snapshot(
    *,
    acc_c=0.70,
    acc_e=0.805,
    n=4000,
    satisfaction=0.9,
    cost_increase=0.3,
    errors=0,
    requests=1000,
    shadow=None,
) -> dict:
    """Arms as `EvaluationWindows.snapshot()` has them, and a minimal bill (`cost_increase` None
    leaves the bill out, as before any traffic was priced)."""

    def arm(acc, count, errs, sat):
        labelled = n
        return {
            "count": count,
            "labelled": labelled,
            "correct": round(acc * labelled),
            "accuracy": acc,
            "satisfaction": sat,
            "rated": 50 if sat is not None else 0,
            "cpu_seconds_per_request": 0.001,
            "error_rate": errs / count if count else None,
            "success_rate": 1 - errs / count if count else None,
        }

    snap = {
        "classic": arm(acc_c, 5000, 0, 0.7),
        "ensemble": arm(acc_e, requests, errors, satisfaction),
    }
    snap["shadow"] = shadow or {"labelled": 0, "correct": 0}
    if cost_increase is not None:
        snap[COST_KEY] = {
            "inputs": {"requests_per_second": 10.0, "router_cpu_seconds_per_request": 0.002},
            "arms": {
                "classic": {"cost_per_request": 1e-6},
                "ensemble": {"cost_per_request": 1e-6 * (1 + cost_increase)},
            },
            "increase_at_full_rollout": cost_increase,
        }
    return snap


def test_normalise_is_linear_and_clipped_in_both_directions():
    assert normalise(0.10, 0.10, 0.15) == 0.0
    assert normalise(0.125, 0.10, 0.15) == pytest.approx(0.5)
    assert normalise(0.15, 0.10, 0.15) == 1.0
    assert normalise(0.50, 0.10, 0.15) == 1.0
    assert normalise(-0.2, 0.10, 0.15) == 0.0
    assert normalise(0.75, 1.0, 0.5) == pytest.approx(0.5)  # cost runs downhill
    assert normalise(-0.3, 1.0, 0.5) == 1.0
    with pytest.raises(ValueError):
        normalise(1, 2, 2)


def test_a_clearly_better_ensemble_proceeds_with_every_input_reported():
    result = go_no_go(_snapshot(), ScoreConfig())
    assert result["verdict"] == "proceed" and result["failed_gates"] == []
    terms = result["terms"]
    assert terms["accuracy"]["value"] == pytest.approx(0.15) and terms["accuracy"][
        "score"
    ] == pytest.approx(1.0)
    assert terms["satisfaction"]["score"] == 1.0
    assert terms["cost"]["value"] == pytest.approx(0.3) and terms["cost"]["score"] == 1.0
    assert terms["stability"]["value"] == 1.0 and terms["stability"]["score"] == 1.0
    for term in terms.values():
        assert {"value", "threshold", "target", "margin", "weight", "score"} <= set(term)
    assert result["score"] == pytest.approx(1.0)
    assert result["inputs"]["classic_accuracy"] == pytest.approx(0.7)


def test_score_weights_each_normalised_term():
    # accuracy halfway (12.5 %), satisfaction halfway (0.7), cost halfway (+75 %), stability halfway
    snap = _snapshot(acc_e=0.7875, satisfaction=0.7, cost_increase=0.75, errors=55, requests=10_000)
    result = go_no_go(snap, ScoreConfig())
    terms = result["terms"]
    assert terms["accuracy"]["score"] == pytest.approx(0.5)
    assert terms["satisfaction"]["score"] == pytest.approx(0.5)
    assert terms["cost"]["score"] == pytest.approx(0.5)
    assert terms["stability"]["score"] == pytest.approx(0.5)
    assert result["score"] == pytest.approx(0.5)
    assert result["verdict"] == "hold"
    # +12.5 % observed, but 4,000 labels per arm do not yet prove +10 % at any look
    assert result["failed_gates"][0]["gate"] == "accuracy_evidence"
    assert result["failed_gates"][1:] == [
        {
            "gate": "score",
            "value": pytest.approx(0.5),
            "threshold": 0.75,
            "rule": "value >= threshold",
        }
    ]


def test_gates_fail_with_value_and_threshold():
    snap = _snapshot(acc_e=0.735, satisfaction=0.5, cost_increase=1.5, errors=20, requests=1000)
    result = go_no_go(snap, ScoreConfig())
    failed = {g["gate"]: g for g in result["failed_gates"]}
    assert set(failed) == {
        "accuracy_improvement",
        "accuracy_evidence",
        "satisfaction",
        "cost_increase",
        "stability",
        "score",
    }
    assert failed["accuracy_improvement"]["value"] == pytest.approx(0.05)
    assert failed["accuracy_improvement"]["threshold"] == 0.10
    assert failed["cost_increase"]["value"] == pytest.approx(1.5)
    assert failed["stability"]["value"] == pytest.approx(0.98)
    assert result["terms"]["accuracy"]["margin"] == pytest.approx(-0.05)
    assert result["terms"]["cost"]["margin"] == pytest.approx(-0.5)
    assert result["score"] == 0.0 and result["verdict"] == "hold"


def test_exactly_at_the_minimum_passes_the_gate_but_scores_zero():
    result = go_no_go(_snapshot(acc_e=0.77), ScoreConfig())
    assert result["terms"]["accuracy"]["value"] == pytest.approx(0.10)
    assert result["terms"]["accuracy"]["score"] == pytest.approx(0.0, abs=1e-9)
    assert "accuracy_improvement" not in {g["gate"] for g in result["failed_gates"]}
    assert result["score"] == pytest.approx(0.6)  # 0.3 + 0.2 + 0.1


def test_missing_satisfaction_renormalises_but_missing_cost_fails_closed():
    result = go_no_go(_snapshot(satisfaction=None), ScoreConfig())
    assert result["missing"] == ["satisfaction"]
    assert result["terms"]["accuracy"]["weight_used"] == pytest.approx(0.4 / 0.7)
    assert result["verdict"] == "proceed"
    unknown = go_no_go(_snapshot(satisfaction=None, cost_increase=None), ScoreConfig())
    assert unknown["missing"] == ["satisfaction", "cost"]
    assert unknown["terms"]["cost"]["status"] == "unknown"
    assert unknown["terms"]["cost"]["score"] == 0.0
    # the cost weight stays in: accuracy 0.4 and stability 0.1 of 0.7, not of 0.5
    assert unknown["terms"]["accuracy"]["weight_used"] == pytest.approx(0.4 / 0.7)
    assert unknown["score"] == pytest.approx(0.5 / 0.7)
    gate = {g["gate"]: g for g in unknown["failed_gates"]}["cost_increase"]
    assert gate["value"] is None and "fail closed" in gate["rule"]
    assert unknown["verdict"] == "hold"


def test_not_enough_data():
    result = go_no_go(_snapshot(n=150), ScoreConfig())
    assert result["verdict"] == "not enough data" and result["score"] is None
    assert go_no_go(_snapshot(requests=100), ScoreConfig())["verdict"] == "not enough data"
    assert (
        go_no_go(_snapshot(n=150, acc_e=0.95), ScoreConfig(), min_samples=100)["verdict"]
        == "proceed"
    )
    assert go_no_go({}, ScoreConfig())["verdict"] == "not enough data"


def test_shadow_labels_count_towards_ensemble_accuracy_when_asked():
    snap = _snapshot(acc_e=0.805, n=100)
    snap["classic"].update(labelled=4000, correct=2800)
    snap["shadow"] = {"labelled": 3900, "correct": round(0.805 * 3900)}
    assert go_no_go(snap, ScoreConfig())["verdict"] == "proceed"
    assert go_no_go(snap, ScoreConfig(include_shadow_labels=False))["verdict"] == "not enough data"


def test_classic_never_right_is_an_unbounded_improvement():
    result = go_no_go(_snapshot(acc_c=0.0), ScoreConfig())
    assert result["terms"]["accuracy"]["score"] == 1.0
    assert result["terms"]["accuracy"]["value"] is None


def test_score_config_is_validated_and_documented():
    with pytest.raises(ValidationError):
        ScoreConfig(accuracy_improvement_target=0.05)
    with pytest.raises(ValidationError):
        ScoreConfig(cost_increase_target=1.5)
    with pytest.raises(ValidationError):
        ScoreConfig(stability_target=0.98)
    with pytest.raises(ValidationError):
        ScoreConfig(weight_accuracy=0, weight_satisfaction=0, weight_cost=0, weight_stability=0)
    with pytest.raises(ValidationError):
        ScoreConfig(unknown=1)
    defaults = ScoreConfig()
    assert (
        defaults.weight_accuracy,
        defaults.weight_satisfaction,
        defaults.weight_cost,
        defaults.weight_stability,
    ) == (0.4, 0.3, 0.2, 0.1)
    assert defaults.proceed_threshold == 0.75
    for name, field in ScoreConfig.model_fields.items():
        assert field.description, f"{name} has no docstring"


# ---------------------------------------------------------------------------- the cost term
def _bill(rate: float) -> dict:
    """The bill (serving.evidence.cost) at `rate` predictions/s: router 2 ms of its own per
    prediction, classic 0.3 ms in the router, the ensemble service 3 ms (test_cost.py by hand)."""
    usage = Usage(
        requests_per_second=rate,
        router_cpu_seconds_per_request=0.002,
        classic_cpu_seconds_per_request=0.0003,
        ensemble_cpu_seconds_per_request=0.003,
    )
    return cost_report(usage, CostConfig(), [10, 25, 50, 75, 100], 10.0)


def test_the_cost_term_is_the_deployments_increase_at_full_rollout():
    snap = _snapshot(cost_increase=None)
    snap[COST_KEY] = _bill(100.0)
    result = go_no_go(snap, ScoreConfig())
    term = result["terms"]["cost"]
    # classic alone 4.933e-5 $/s, all ensemble 6.37e-5 $/s at 100 predictions/s
    assert term["value"] == pytest.approx(6.37 / 4.933 - 1)  # +29 %: under the 50 % target
    assert term["score"] == 1.0 and term["threshold"] == 1.0 and term["target"] == 0.5
    assert term["margin"] == pytest.approx(1.0 - term["value"])
    inputs = result["inputs"]
    assert inputs["cost_increase"] == term["value"]
    assert inputs["router_cpu_seconds_per_request"] == 0.002
    assert inputs["requests_per_second"] == 100.0
    assert inputs["classic_cost_per_request"] == pytest.approx(4.933e-7)
    assert inputs["ensemble_cost_per_request"] == pytest.approx(6.37e-7)
    evidence = result["cost"]
    assert [s["percentage"] for s in evidence["stages"]] == [0, 10, 25, 50, 75, 100]
    assert evidence["stages"][-1]["increase"] == pytest.approx(term["value"])
    assert evidence["stages"][0]["replicas"] == {"router": 1.0, "classic": 0.0, "ensemble": 0.0}
    assert evidence["plan"]["max_per_request"] == 0.001 and "config" not in evidence
    assert result["verdict"] == "proceed"


def test_at_low_traffic_the_ensembles_standing_replica_holds_the_rollout():
    snap = _snapshot(cost_increase=None)
    snap[COST_KEY] = _bill(10.0)
    result = go_no_go(snap, ScoreConfig())
    failed = {g["gate"]: g for g in result["failed_gates"]}
    assert set(failed) == {"cost_increase"}  # the score itself still clears 0.75
    assert failed["cost_increase"]["value"] == pytest.approx(2.392 / 0.8983 - 1)  # +166 %
    assert failed["cost_increase"]["threshold"] == 1.0
    assert failed["cost_increase"]["rule"] == "value < threshold"
    assert result["terms"]["cost"]["score"] == 0.0 and result["verdict"] == "hold"


def test_the_cost_gate_needs_strictly_less_than_its_maximum():
    def failed(increase):
        return {g["gate"] for g in go_no_go(_snapshot(cost_increase=increase))["failed_gates"]}

    assert "cost_increase" in failed(1.0)
    assert "cost_increase" not in failed(0.999)
    assert go_no_go(_snapshot(cost_increase=0.75))["terms"]["cost"]["score"] == pytest.approx(0.5)
    assert go_no_go(_snapshot(cost_increase=-0.2))["terms"]["cost"]["score"] == 1.0


def test_the_bill_is_reported_before_there_is_enough_data():
    snap = _snapshot(n=10, cost_increase=None)
    snap[COST_KEY] = _bill(10.0)
    result = go_no_go(snap, ScoreConfig())
    assert result["verdict"] == "not enough data"
    assert result["cost"]["increase_at_full_rollout"] == pytest.approx(2.392 / 0.8983 - 1)
    assert go_no_go(_snapshot(cost_increase=None))["cost"] is None


def test_accuracy_gate_needs_anytime_valid_evidence_of_the_minimum_improvement():
    """+15 % observed at 400 labels per arm clears the point-estimate gate but not the
    anytime-valid one (the rollout re-judges every tick); more labels at the same rates do."""
    few = go_no_go(_snapshot(n=400), ScoreConfig())
    assert "accuracy_improvement" not in {g["gate"] for g in few["failed_gates"]}
    assert few["accuracy_evidence"]["p_value"] >= 0.05
    assert few["verdict"] == "hold"
    assert "accuracy_evidence" in {g["gate"] for g in few["failed_gates"]}
    many = go_no_go(_snapshot(n=4000), ScoreConfig())
    assert many["accuracy_evidence"]["passed"] and many["accuracy_evidence"]["relative_low"] > 0.1
    assert many["verdict"] == "proceed"
