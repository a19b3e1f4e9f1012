"""Two replicas' LiveEvaluation on one store: joins anywhere, one set of counts, one bill."""

from __future__ import annotations

import numpy as np
import pytest

from serving.config.flags import parse_flag_config
from serving.delivery.live import LiveEvaluation
from serving.delivery.request_ids import RequestIds
from serving.errors import NotFound, StoreUnavailable
from serving.results import RoutedPrediction
from serving.store import StateStore
from tests.doubles import FakeClock

CLASSES = ["high", "low"]
SECRET = "shared-secret-of-the-replicas"


def replica(store: StateStore, name: str, clock: FakeClock, cpu: FakeClock) -> LiveEvaluation:
    return LiveEvaluation(
        store,
        parse_flag_config(None),
        None,
        CLASSES,
        clock=clock,
        in_process_arms=("classic",),
        cpu_clock=cpu,
        replica=name,
        request_ids=RequestIds(SECRET, 3600, clock=clock),
    )


def answer(
    live: LiveEvaluation, arm: str = "classic", index: int = 0, reason: str = "split"
) -> str:
    probs = np.array([0.9, 0.1]) if index == 0 else np.array([0.2, 0.8])
    rid = live.request_ids.issue(arm, "v1", index, probs, reason == "split")
    prediction = RoutedPrediction(CLASSES[index], {}, arm, "v1", rid, False, False, reason)
    live.record([prediction], 2.0, 0.0003)
    return rid


@pytest.fixture
def pair(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    clock, cpu_a, cpu_b = FakeClock(1_800_000_000.0), FakeClock(1.0), FakeClock(1.0)
    return replica(store, "a", clock, cpu_a), replica(store, "b", clock, cpu_b), clock, cpu_a


def test_feedback_joins_on_the_other_replica_once(pair):
    a, b, _, _ = pair
    rid = answer(a, index=1)
    joined = b.feedback(rid, "low", 9)  # b never saw this prediction
    assert joined["status"] == "recorded" and joined["arm"] == "classic" and joined["correct"]
    assert a.feedback(rid, "low")["status"] == "duplicate"  # idempotent across replicas
    forged = rid[:-3] + ("AAA" if not rid.endswith("AAA") else "BBB")
    with pytest.raises(NotFound):
        b.feedback(forged, "low")


def test_every_replica_reports_the_same_counts(pair):
    a, b, _, _ = pair
    for _ in range(3):
        answer(a)
    for _ in range(5):
        answer(b, arm="ensemble", index=1)
    b.feedback(answer(b), "high")
    a.flush_outcomes()
    b.flush_outcomes()
    seen_a = a.shared_windows(max_age_s=0).snapshot()
    seen_b = b.shared_windows(max_age_s=0).snapshot()
    assert seen_a == seen_b and a.evidence == b.evidence == "shared"
    assert (seen_a["classic"]["count"], seen_a["ensemble"]["count"]) == (4, 5)
    assert seen_a["classic"]["labelled"] == 1


def test_the_bill_counts_every_replicas_traffic(pair):
    a, b, clock, cpu_a = pair
    for _ in range(10):
        answer(a)
    for _ in range(30):
        answer(b)
    b.flush_outcomes()
    clock.advance(10.0)
    cpu_a.advance(10 * 0.002 + 10 * 0.0003)
    inputs = a.report()["cost"]["inputs"]
    assert inputs["requests_per_second"] == pytest.approx(4.0)  # 40 in 10 s, not a's 10


def test_feedback_while_the_store_is_down_is_refused_not_lost(pair):
    a, b, _, _ = pair
    rid = answer(a)
    b.store.record_feedback = _down  # the database refuses the write
    with pytest.raises(StoreUnavailable):
        b.feedback(rid, "high")


def _down(*_args, **_kwargs):
    from sqlalchemy.exc import OperationalError

    raise OperationalError("INSERT", {}, Exception("connection refused"))


@pytest.mark.parametrize("joined_on", ["a", "b"])
def test_a_forced_arm_s_label_is_stored_and_reported_but_not_compared(pair, joined_on):
    a, b, _, _ = pair
    rid = answer(a, arm="ensemble", index=1, reason="header")
    (a if joined_on == "a" else b).feedback(rid, "low")
    randomised = answer(a, arm="ensemble", index=1)
    b.feedback(randomised, "low")
    rows = {r["request_id"]: r for r in a.store.feedback_since(0)}
    assert rows[rid]["randomised"] is False and rows[randomised]["randomised"] is True
    shared = b.shared_windows(max_age_s=0).snapshot()
    assert shared["ensemble"]["labelled"] == 1 and shared["ensemble"]["forced_labelled"] == 1
    assert a.windows.snapshot()["ensemble"]["labelled"] == 0  # the forced label: never
