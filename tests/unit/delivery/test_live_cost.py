"""LiveEvaluation measures the router's own CPU per prediction and the traffic, and prices the
deployment with them: in the evaluation report, the go/no-go and the rollout's evidence."""

from __future__ import annotations

import pytest

from serving.config.flags import parse_flag_config
from serving.delivery.live import LiveEvaluation
from serving.results import RoutedPrediction
from serving.store import StateStore
from tests.doubles import FakeClock

CLASSES = ["high", "low"]


def served(request_id: str, arm: str) -> list[RoutedPrediction]:
    return [
        RoutedPrediction("high", {"high": 0.9, "low": 0.1}, arm, "v1", request_id, False, False, "")
    ]


def live_with_traffic(tmp_path, flags=None, in_process=("classic",)):
    """10 s of traffic: 90 classic predictions (0.3 ms of model CPU each, in the router) and 10
    ensemble ones (3 ms each, as the service reports), while the router process spends 2 ms of its
    own per prediction."""
    clock, cpu = FakeClock(), FakeClock(5.0)
    live = LiveEvaluation(
        StateStore(f"sqlite:///{tmp_path / 'state.db'}"),
        parse_flag_config(flags),
        None,
        CLASSES,
        clock=clock,
        in_process_arms=in_process,
        cpu_clock=cpu,
    )
    for i in range(90):
        live.record(served(f"c{i}", "classic"), 1.0, 0.0003)
    for i in range(10):
        live.record(served(f"e{i}", "ensemble"), 5.0, 0.003)
    clock.advance(10.0)
    cpu.advance(100 * 0.002 + 90 * 0.0003)
    return live


def test_the_report_prices_the_deployment_from_what_the_router_measured(tmp_path):
    report = live_with_traffic(tmp_path).report()
    cost = report["cost"]
    inputs = cost["inputs"]
    assert inputs["requests_per_second"] == pytest.approx(10.0)
    assert inputs["requests_source"] == "observed" and inputs["window_s"] == pytest.approx(10.0)
    assert inputs["router_cpu_seconds_per_request"] == pytest.approx(0.002)  # classic's CPU out
    assert inputs["classic_cpu_seconds_per_request"] == pytest.approx(0.0003)
    assert inputs["ensemble_cpu_seconds_per_request"] == pytest.approx(0.003)
    assert inputs["classic_in_router"] is True and inputs["shadow_rate"] == 0.0
    # the same figures as tests/unit/evidence/test_cost.py computes by hand at 10 predictions/s
    assert cost["increase_at_full_rollout"] == pytest.approx(2.392 / 0.8983 - 1)
    assert cost["current"]["percentage"] == 10.0  # the flags' rollout_percentage
    # the gate's maximum and target, and the traffic at which the increase reaches them
    gate = cost["traffic_for_increase"]
    assert [t["increase"] for t in gate] == [1.0, 0.5]
    assert gate[0]["requests_per_second"] == pytest.approx(23.097, 1e-3)
    assert report["go_no_go"]["inputs"]["cost_increase"] == cost["increase_at_full_rollout"]
    assert report["go_no_go"]["cost"]["stages"][0]["cost_per_request"] == pytest.approx(8.983e-7)
    assert set(report["arms"]) == {"classic", "ensemble", "cascade", "shadow"}


def test_a_remote_classic_leaves_the_whole_process_cpu_to_the_router(tmp_path):
    inputs = live_with_traffic(tmp_path, in_process=()).report()["cost"]["inputs"]
    assert inputs["router_cpu_seconds_per_request"] == pytest.approx(0.00227)
    assert inputs["classic_in_router"] is False


def test_an_assumed_traffic_replaces_the_observed_one(tmp_path):
    flags = {"cost": {"requests_per_second": 100}}
    cost = live_with_traffic(tmp_path, flags).report()["cost"]
    assert cost["inputs"]["requests_per_second"] == 100.0
    assert cost["inputs"]["requests_source"] == "assumed"
    assert cost["increase_at_full_rollout"] == pytest.approx(6.37 / 4.933 - 1)


def test_the_rollout_decision_records_the_bill(tmp_path):
    flags = {
        "rollout": {"enabled": True, "min_stage_seconds": 0},
        "ensemble": {"shadow": {"enabled": True, "sample_rate": 0.5}},
    }
    live = live_with_traffic(tmp_path, flags)
    decision = live.tick(force=True)
    evidence = decision["evidence"]["go_no_go"]
    assert evidence["cost"]["increase_at_full_rollout"] == pytest.approx(2.392 / 0.8983 - 1)
    assert evidence["cost"]["inputs"]["shadow_rate"] == 0.5
    assert decision["action"] == "hold"  # too few labels, whatever the cost


def test_counting_predictions_for_the_bill_leaves_feedback_joins_working(tmp_path):
    live = live_with_traffic(tmp_path)
    joined = live.feedback("c1", "high", rating=8)
    assert joined["status"] == "recorded" and joined["correct"] is True
    assert live.report()["cost"]["inputs"]["requests_per_second"] == pytest.approx(10.0)
