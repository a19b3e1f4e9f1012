"""Progressive delivery end to end: labelled traffic drives the rollout on the default go/no-go
score and gates, and every decision matches the evidence it recorded; a broken ensemble is rolled
back automatically; the state survives a router restart."""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from serving.config.delivery import CostConfig, ScoreConfig
from serving.evidence.cost import Usage, increase, stage_bill
from serving.evidence.evaluation import SCORE_TERMS
from tests.support import ADMIN_TOKEN, Server
from training.data import DEFAULT_TARGET, make_default_dataset

pytestmark = pytest.mark.integration
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FAST_ROLLOUT = {
    "ensemble": {
        "rollout_percentage": 10,
        "allowed_users": [],
        "shadow": {"enabled": True, "sample_rate": 1.0},
    },
    "cache": {"enabled": False},
    "rollout": {
        "enabled": True,
        "schedule": [10, 50, 100],
        "min_stage_seconds": 0,
        "min_labelled_samples": 40,
        "min_request_samples": 40,
        "evaluation_interval_s": 0.5,
        # Sample sizes only, for speed: every threshold, target, weight and the proceed bar of the
        # go/no-go score are the defaults, and so is the cost model (serving/evidence/cost.py).
        "score": {"min_labelled_samples": 40, "min_requests": 40},
    },
}
DEFAULT_SCORE = ScoreConfig()
HOLDING_BATCHES = 5
"""Batches of 100 labelled requests the go/no-go must say "hold" in a row before the test takes
the rollout to be held by its gates (a measured outcome, not a failure)."""


def labelled_rows(n: int, seed: int) -> list[tuple[dict, str]]:
    frame = make_default_dataset(n, seed=seed)
    labels = frame.pop(DEFAULT_TARGET)
    rows = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in frame.to_dict("records")
    ]
    return list(zip(rows, labels, strict=True))


def drive(server: Server, rows, start: int = 0) -> int:
    """Classify each row as a different user and send its true label back; returns requests sent."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for i, (row, label) in enumerate(rows):
            answer = client.post(
                "/api/classify", json={"features": row, "user_id": f"u{start + i}"}
            )
            assert answer.status_code == 200, answer.text
            feedback = client.post(
                "/api/feedback",
                json={"request_id": answer.json()["request_id"], "label": label, "rating": 8},
            )
            assert feedback.status_code == 200, feedback.text
    return len(rows)


def status(server: Server) -> dict:
    return httpx.get(f"{server.url}/api/status", headers=ADMIN, timeout=10).json()


@pytest.fixture
def rollout_server(trained_store):
    srv = Server(
        {"SERVING_FAULTS_ENABLED": "true"},
        flags=FAST_ROLLOUT,
        workdir=Path(tempfile.mkdtemp(prefix="rollout-")),
    ).start()
    yield srv
    srv.stop()


def passes(value: float | None, threshold: float, rule: str) -> bool:
    """Whether a recorded gate value passes its recorded rule ("value >= threshold" or "<")."""
    if value is None:  # an unbounded improvement (classic never right) is recorded as None
        return ">=" in rule
    return value >= threshold if ">=" in rule else value < threshold


def check_go_no_go_evidence(go: dict) -> None:
    """The recorded go/no-go used the default score, and its verdict follows from its terms."""
    assert go["threshold"] == DEFAULT_SCORE.proceed_threshold
    for term in SCORE_TERMS:
        if term.name in go["missing"]:
            continue
        recorded = go["terms"][term.name]
        assert recorded["threshold"] == getattr(DEFAULT_SCORE, term.minimum), term.name
        assert recorded["target"] == getattr(DEFAULT_SCORE, term.target), term.name
        assert recorded["weight"] == getattr(DEFAULT_SCORE, term.weight), term.name
    assert "cost" not in go["missing"], go["missing"]  # both arms measured, traffic observed
    cost = go["cost"]
    assert go["terms"]["cost"]["value"] == pytest.approx(cost["increase_at_full_rollout"])
    # the cost term follows from its recorded inputs and the default cost model
    inputs = cost["inputs"]
    usage = Usage(**{k: inputs[k] for k in Usage.__dataclass_fields__})
    expected = increase(stage_bill(usage, CostConfig(), 0.0), stage_bill(usage, CostConfig(), 1.0))
    assert cost["increase_at_full_rollout"] == pytest.approx(expected)
    for gate in go["failed_gates"]:
        assert not passes(gate["value"], gate["threshold"], gate["rule"]), gate
    failed = {g["gate"] for g in go["failed_gates"]}
    for term in SCORE_TERMS:
        if term.name in go["terms"]:
            value = go["terms"][term.name]["value"]
            ok = passes(value, go["terms"][term.name]["threshold"], f"value {term.rule}")
            assert ok == (term.gate not in failed), (term.gate, value)
    assert (go["score"] >= go["threshold"]) == ("score" not in failed)
    assert go["verdict"] == ("hold" if failed else "proceed")


def check_decision(decision: dict) -> None:
    """A decision of the automatic controller matches the evidence it recorded."""
    evidence, reasons = decision["evidence"], decision["reasons"]
    go = evidence["go_no_go"]
    if decision["action"] == "promote":
        assert go["verdict"] == "proceed" and go["failed_gates"] == [], go
        assert all(gate["passed"] for gate in evidence["gates"].values()), evidence["gates"]
        assert evidence["would_promote"] and not evidence["drift_frozen"]
        check_go_no_go_evidence(go)
        return
    assert decision["action"] == "hold", decision["action"]
    assert reasons and evidence["would_promote"] is False
    for reason in reasons:
        if reason.startswith("go/no-go says hold"):
            check_go_no_go_evidence(go)
            assert go["verdict"] == "hold" and go["failed_gates"]
            for gate in go["failed_gates"]:
                assert gate["gate"] in reason, (gate, reason)
        elif reason.startswith("not enough data for "):
            name = reason.removeprefix("not enough data for ").split(":")[0]
            gate = evidence["gates"][name]
            assert not gate["enough_data"] and gate["samples"] < gate["min_samples"], gate
        elif reason.startswith("go/no-go: "):
            assert (
                go["verdict"] == "not enough data" and reason[len("go/no-go: ") :] in go["reasons"]
            ), (reason, go)
        elif reason == "frozen: input drift detected":
            assert evidence["drift_frozen"]
        elif reason.startswith("sample_ratio"):
            assert evidence["sample_ratio"]["mismatch"], evidence["sample_ratio"]
        else:
            pytest.fail(f"a hold for a reason this test does not expect: {reason}")


def test_labelled_traffic_rolls_out_on_the_default_gates_as_its_evidence_says(rollout_server):
    srv, rows, sent, holding = rollout_server, labelled_rows(1500, seed=7), 0, 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and holding < HOLDING_BATCHES:
        if status(srv)["rollout"]["state"]["percentage"] >= 100:
            break
        sent += drive(srv, rows[sent % 1400 : sent % 1400 + 100], start=sent)
        holding = holding + 1 if status(srv)["go_no_go"]["verdict"] == "hold" else 0
    final = status(srv)
    log = httpx.get(
        f"{srv.url}/api/admin/rollout/decisions", headers=ADMIN, params={"limit": 500}
    ).json()["decisions"]
    automatic = [d for d in log if not d["manual"] and d["action"] in ("promote", "hold")]
    assert automatic, log
    for decision in automatic:
        check_decision(decision)

    promotions = [d["to"]["percentage"] for d in reversed(log) if d["action"] == "promote"]
    percentage = final["rollout"]["state"]["percentage"]
    assert promotions == [p for p in (50, 100) if p <= percentage]
    assert final["split"]["rollout_percentage"] == percentage
    if percentage < 100:  # held by the default gates: the latest word is the go/no-go's hold
        latest = next(d for d in log if d["action"] == "hold")
        assert any(r.startswith("go/no-go says hold") for r in latest["reasons"]), latest
        assert final["go_no_go"]["verdict"] == "hold", final["go_no_go"]
    evaluation = httpx.get(f"{srv.url}/api/admin/evaluation", headers=ADMIN).json()
    assert evaluation["arms"]["ensemble"]["accuracy"] > evaluation["arms"]["classic"]["accuracy"]
    cost = evaluation["cost"]
    assert [s["percentage"] for s in cost["stages"]] == [0, 10, 50, 100]
    assert cost["inputs"]["requests_source"] == "observed" and cost["missing"] == []
    assert cost["current"]["percentage"] == percentage
    print(  # the measured outcome, for the run's log
        f"\nrollout on default gates: {percentage:g} % after {sent} labelled requests; "
        f"cost increase at 100 % {cost['increase_at_full_rollout']:+.1%} at "
        f"{cost['inputs']['requests_per_second']:.1f} predictions/s; "
        f"go/no-go {final['go_no_go']['verdict']} {final['go_no_go']['failed_gates']}"
    )


def test_failing_ensemble_is_rolled_back_and_the_state_survives_a_restart(rollout_server):
    srv = rollout_server
    assert (
        httpx.put(
            f"{srv.url}/api/admin/faults", json={"error_rate": 1.0}, headers=ADMIN
        ).status_code
        == 200
    )
    rows, sent = labelled_rows(1200, seed=11), 0
    deadline = time.monotonic() + 180
    while not status(srv)["rollout"]["state"]["rolled_back"] and time.monotonic() < deadline:
        sent += drive(srv, rows[sent % 1100 : sent % 1100 + 100], start=sent)
    time.sleep(1.5)  # the shared evidence is rebuilt from the store at most every second
    state = status(srv)
    assert state["rollout"]["state"]["rolled_back"] and state["split"]["enabled"] is False
    rollback = next(
        d
        for d in httpx.get(f"{srv.url}/api/admin/rollout/decisions", headers=ADMIN).json()[
            "decisions"
        ]
        if d["action"] == "rollback"
    )
    assert any("error" in reason for reason in rollback["reasons"]), rollback["reasons"]
    answer = httpx.post(
        f"{srv.url}/api/classify",
        json={"features": rows[0][0], "user_id": "beta_bob"},
        headers={"X-Model-Preference": "ensemble"},
    ).json()
    assert (answer["model"], answer["reason"]) == ("classic", "kill_switch")

    labelled_before = state["arms"]["classic"]["labelled"]
    srv.stop()
    restarted = Server({}, workdir=srv.workdir).start()
    try:
        after = status(restarted)
        assert after["rollout"]["state"]["rolled_back"] and after["split"]["enabled"] is False
        assert (
            after["arms"]["classic"]["labelled"] == labelled_before
        )  # feedback joins replayed from the store
    finally:
        restarted.stop()
