"""The challenger path on a real (SQLite) shared store: shadow -> A/B -> promoted or rejected,
rollback, every move in the decision log, shadow counts summed over replicas."""

from __future__ import annotations

import asyncio

import pytest

from serving.config.experiments import ChallengerConfig
from serving.delivery.challenger import ChallengerController, ChallengerView
from serving.store import StateStore
from tests.doubles import FakeClock

CFG = ChallengerConfig(shadow_min_samples=100, min_agreement=0.6, min_labelled=100, ab_weight=30)


class Champion:
    """What the ensemble service serves; `promote` swaps it (as ControlPlane.swap_model does)."""

    def __init__(self, version: str):
        self.version, self.promoted = version, []

    async def promote(self, version: str) -> None:
        self.promoted.append(version)
        self.version = version


@pytest.fixture
def setup(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    champion, clock = Champion("v1"), FakeClock(10_000.0)
    controller = ChallengerController(store, champion.promote, lambda: champion.version, clock)
    yield store, controller, champion, clock
    store.close()


def label(store, n: int, version: str, accuracy: float, at: float, prefix: str) -> None:
    for i in range(n):
        correct = i < round(n * accuracy)
        store.record_feedback(
            f"{prefix}-{i}", "ensemble", "high", "high" if correct else "low",
            None, 5.0, None, at, model_version=version, randomised=True,
        )  # fmt: skip


def test_a_better_challenger_goes_through_shadow_and_ab_to_promotion(setup):
    store, controller, champion, clock = setup
    record = controller.enter("v2", "retraining", {"parent": "v1"})
    assert (record["stage"], record["champion"]) == ("shadow", "v1")
    assert ChallengerView.of(record, CFG).stage == "shadow"
    controller.add_shadow("replica-a", "v2", 60, 50)
    assert asyncio.run(controller.tick(CFG)) is None  # 60 < 100 comparisons: wait
    controller.add_shadow("replica-b", "v2", 60, 48)
    assert controller.shadow_counts("v2") == (120, 98)  # every replica's comparisons
    moved = asyncio.run(controller.tick(CFG))
    assert moved["stage"] == "ab" and moved["ab_started_at"] == clock.now
    clock.advance(60)
    label(store, 300, "v1", 0.70, clock.now, "champion")
    label(store, 150, "v2", 0.90, clock.now, "challenger")
    label(store, 50, "v0", 0.10, clock.now, "old")  # an older version's rows count for nobody
    moved = asyncio.run(controller.tick(CFG))
    assert moved["stage"] == "promoted" and champion.promoted == ["v2"]
    assert moved["previous"] == "v1"
    assert moved["evidence"]["challengers"]["challenger"]["verdict"] == "go"
    label(store, 300, "v2", 0.10, clock.now, "after")  # later traffic does not rewrite the verdict
    assert controller.report(CFG)["ab"]["challengers"]["challenger"]["verdict"] == "go"
    actions = [d["action"] for d in store.decisions()]
    assert actions == ["challenger_promoted", "challenger_ab", "challenger_shadow"]
    assert ChallengerView.of(moved, CFG) is None  # nothing on trial any more
    back = asyncio.run(controller.rollback("operator"))
    assert back["stage"] == "rolled_back" and champion.promoted == ["v2", "v1"]


def test_a_worse_challenger_is_rejected_in_the_ab_and_never_promoted(setup):
    store, controller, champion, clock = setup
    controller.enter("v2", "retraining")
    controller.add_shadow("replica-a", "v2", 200, 170)
    asyncio.run(controller.tick(CFG))
    label(store, 700, "v1", 0.85, clock.now + 1, "champion")
    label(store, 300, "v2", 0.60, clock.now + 1, "challenger")
    moved = asyncio.run(controller.tick(CFG))
    assert moved["stage"] == "rejected" and champion.promoted == []
    assert "worse" in moved["history"][-1]["reason"]


def test_a_challenger_that_disagrees_everywhere_is_rejected_in_shadow(setup):
    _, controller, champion, _ = setup
    controller.enter("v2", "manual")
    controller.add_shadow("replica-a", "v2", 300, 90)
    moved = asyncio.run(controller.tick(CFG))
    assert moved["stage"] == "rejected" and champion.promoted == []


def test_one_trial_at_a_time_and_a_stage_without_a_verdict_expires(setup):
    _, controller, _, clock = setup
    controller.enter("v2", "manual")
    with pytest.raises(ValueError, match="on trial"):
        controller.enter("v3", "manual")
    controller.reject("operator")
    with pytest.raises(ValueError, match="champion"):
        controller.enter("v1", "manual")
    controller.enter("v3", "manual")  # after the rejection
    clock.advance(CFG.max_stage_s + 1)
    assert asyncio.run(controller.tick(CFG))["stage"] == "rejected"
    with pytest.raises(ValueError, match="not promoted"):
        asyncio.run(controller.rollback("nothing to undo"))


def test_a_version_the_service_cannot_load_is_rejected_not_retried_forever(setup):
    store, controller, champion, clock = setup

    async def refuse(version: str) -> None:
        raise RuntimeError(f"ensemble:{version} is not in the model store")

    controller.promote = refuse
    controller.enter("v2", "retraining")
    controller.add_shadow("replica-a", "v2", 200, 170)
    asyncio.run(controller.tick(CFG))
    label(store, 700, "v1", 0.70, clock.now + 1, "champion")
    label(store, 300, "v2", 0.90, clock.now + 1, "challenger")
    moved = asyncio.run(controller.tick(CFG))
    assert moved["stage"] == "rejected" and champion.version == "v1"
    assert "not in the model store" in moved["history"][-1]["reason"]
