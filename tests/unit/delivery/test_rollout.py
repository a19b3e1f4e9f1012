"""The rollout controller as a pure state machine: synthetic live streams and an injected clock."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serving.config.delivery import RolloutConfig
from serving.delivery.rollout import STATE_KEY, RolloutController, RolloutState
from serving.evidence.evaluation import EvaluationWindows
from serving.store import StateStore
from tests.doubles import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def store(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    yield store
    store.close()


def _config(**overrides) -> RolloutConfig:
    return RolloutConfig(enabled=True, **overrides)


def _stream(
    windows: EvaluationWindows,
    n: int = 300,
    *,
    classic_acc: float = 0.70,
    ensemble_acc: float = 0.90,
    classic_ms: float = 5.0,
    ensemble_ms: float = 40.0,
    ensemble_errors: float = 0.0,
    rating: int = 9,
) -> None:
    """Feed `n` requests and labels per arm; accuracy and error shares are exact per 100."""
    for i in range(n):
        windows.record_request("classic", classic_ms + i % 5, cpu_seconds=0.0010)
        windows.record_label("classic", i % 100 < classic_acc * 100, rating=7)
        error = i % 100 < ensemble_errors * 100
        windows.record_request(
            "ensemble",
            None if error else ensemble_ms + i % 7,
            error=error,
            fallback=error,
            cpu_seconds=0.0013,
        )
        windows.record_label("ensemble", i % 100 < ensemble_acc * 100, rating=rating)


def _priced(windows: EvaluationWindows, increase: float | None = 0.3) -> dict:
    """The windows' snapshot with a bill whose increase at full rollout is `increase` (the
    live snapshot always carries one; without it the cost term is unknown: hold)."""
    snap = windows.snapshot()
    snap["cost"] = {"increase_at_full_rollout": increase, "missing": []}
    return snap


def _fresh_windows(clock) -> EvaluationWindows:
    return EvaluationWindows(max_age_s=3600, clock=clock)


# ---------------------------------------------------------------------------- config and state
def test_config_defaults_and_schedule_validation():
    cfg = RolloutConfig()
    assert cfg.schedule == [10, 25, 50, 75, 100]
    assert cfg.enabled is False
    assert (cfg.min_stage_seconds, cfg.min_labelled_samples) == (300, 200)
    assert (cfg.max_accuracy_drop, cfg.max_p95_increase_ms, cfg.max_error_rate) == (0.05, 100, 0.02)
    assert cfg.score.proceed_threshold == 0.75
    for bad in ([10, 10, 50], [50, 25], [0, 50], [10, 120], []):
        with pytest.raises(ValidationError):
            RolloutConfig(schedule=bad)
    with pytest.raises(ValidationError):
        RolloutConfig(surprise=True)
    for name, field in RolloutConfig.model_fields.items():
        assert field.description, f"{name} has no docstring"


def test_a_new_controller_starts_at_the_first_stage(store, clock):
    controller = RolloutController(_config(), store, clock=clock)
    assert controller.state == RolloutState(
        stage_index=0,
        percentage=10.0,
        paused=False,
        rolled_back=False,
        reason="rollout started",
        entered_at=clock.now,
        version=0,
    )
    assert controller.percentage() == 10.0
    assert store.get(STATE_KEY)["percentage"] == 10.0


# ---------------------------------------------------------------------------- promotion
def test_a_good_ensemble_is_promoted_through_every_stage(store, clock):
    controller = RolloutController(_config(), store, clock=clock)
    seen = [controller.percentage()]
    for _ in range(4):
        windows = _fresh_windows(clock)
        _stream(windows)
        clock.advance(301)
        decision = controller.evaluate(_priced(windows))
        assert decision["action"] == "promote", decision["reasons"]
        assert decision["evidence"]["go_no_go"]["verdict"] == "proceed"
        assert all(g["passed"] for g in decision["evidence"]["gates"].values())
        seen.append(controller.percentage())
    assert seen == [10, 25, 50, 75, 100]
    assert controller.state.stage_index == 4 and controller.state.version == 4
    windows = _fresh_windows(clock)
    _stream(windows)
    clock.advance(301)
    final = controller.evaluate(_priced(windows))
    assert final["action"] == "none" and final["reasons"] == ["rollout complete"]
    log = store.decisions()
    assert [d["action"] for d in log] == ["promote"] * 4
    assert log[0]["to"] == {"stage_index": 4, "percentage": 100.0}
    assert log[-1]["from"] == {"stage_index": 0, "percentage": 10.0}
    assert log[0]["evidence"]["gates"]["accuracy"]["threshold"] == 0.05


def test_holds_when_the_stage_is_too_young(store, clock):
    controller = RolloutController(_config(), store, clock=clock)
    windows = _fresh_windows(clock)
    _stream(windows)
    clock.advance(120)
    decision = controller.evaluate(_priced(windows))
    assert decision["action"] == "hold"
    assert any("needs 300 s" in r for r in decision["reasons"])
    assert decision["evidence"]["would_promote"] is False
    clock.advance(200)
    assert controller.evaluate(_priced(windows))["action"] == "promote"


def test_holds_on_too_little_data(store, clock):
    controller = RolloutController(_config(), store, clock=clock)
    windows = _fresh_windows(clock)
    _stream(windows, n=150)
    clock.advance(1000)
    decision = controller.evaluate(_priced(windows))
    assert decision["action"] == "hold"
    assert any(r.startswith("not enough data for accuracy") for r in decision["reasons"])
    assert decision["evidence"]["go_no_go"]["verdict"] == "not enough data"
    assert controller.percentage() == 10


def test_too_little_data_never_triggers_a_rollback(store, clock):
    controller = RolloutController(_config(), store, clock=clock)
    windows = _fresh_windows(clock)
    _stream(windows, n=100, ensemble_acc=0.30, ensemble_ms=900, ensemble_errors=0.5)
    clock.advance(1000)
    decision = controller.evaluate(_priced(windows))
    assert decision["action"] == "hold"
    assert not any(g["triggered"] for g in decision["evidence"]["gates"].values())
    assert controller.state.rolled_back is False


def test_holds_when_the_score_is_below_the_bar(store, clock):
    controller = RolloutController(_config(), store, clock=clock)
    windows = _fresh_windows(clock)
    _stream(windows, ensemble_acc=0.72)  # no rollback trigger, but under 10 % better
    clock.advance(1000)
    decision = controller.evaluate(_priced(windows))
    assert decision["action"] == "hold"
    assert any(
        "go/no-go says hold" in r and "accuracy_improvement" in r for r in decision["reasons"]
    )


def test_holds_when_paused_or_frozen_by_drift_or_disabled(store, clock):
    controller = RolloutController(_config(), store, clock=clock)
    windows = _fresh_windows(clock)
    _stream(windows)
    clock.advance(1000)
    snapshot = _priced(windows)

    assert controller.evaluate(snapshot, drift_frozen=True)["action"] == "hold"
    assert "frozen: input drift detected" in controller.last_decision["reasons"]

    controller.pause("investigating")
    held = controller.evaluate(snapshot)
    assert held["action"] == "hold" and "paused" in held["reasons"]
    controller.resume()

    disabled = RolloutController(RolloutConfig(enabled=False), store, clock=clock)
    decision = disabled.evaluate(snapshot)
    assert decision["action"] == "hold" and decision["evidence"]["would_promote"] is True
    assert any("disabled" in r for r in decision["reasons"])

    assert controller.evaluate(snapshot)["action"] == "promote"
    assert controller.percentage() == 25


def test_holds_are_logged_only_when_their_reasons_change(store, clock):
    controller = RolloutController(_config(), store, clock=clock)
    windows = _fresh_windows(clock)
    _stream(windows, n=50)
    for _ in range(5):
        clock.advance(30)
        controller.evaluate(_priced(windows))
    assert [d["action"] for d in store.decisions()] == ["hold"]
    controller.evaluate(_priced(windows), drift_frozen=True)
    assert [d["action"] for d in store.decisions()] == ["hold", "hold"]


# ---------------------------------------------------------------------------- rollback
def test_a_small_drop_within_noise_does_not_roll_back(store, clock):
    """6 points below classic at 300 labels per arm: the point estimate is past the 5-point
    limit, but that is not evidence the drop exceeds it (the trigger is re-judged every tick);
    the gate says so with its always-valid p-value."""
    controller = RolloutController(_config(), store, clock=clock)
    windows = _fresh_windows(clock)
    _stream(windows, ensemble_acc=0.64)
    clock.advance(10)
    decision = controller.evaluate(_priced(windows))
    gate = decision["evidence"]["gates"]["accuracy"]
    assert gate["value"] > gate["threshold"] and gate["p_value"] > 0.05
    assert decision["action"] != "rollback" and not gate["triggered"]


@pytest.mark.parametrize(
    "bad, gate",
    [
        ({"ensemble_acc": 0.50}, "accuracy"),  # 20 points below classic's 0.70
        ({"ensemble_ms": 160.0}, "latency"),  # p95 ~ 166 ms vs ~ 9 ms
        ({"ensemble_errors": 0.03}, "errors"),  # 3 % errors
    ],
)
def test_each_trigger_alone_rolls_back(store, clock, bad, gate):
    controller = RolloutController(_config(), store, clock=clock)
    windows = _fresh_windows(clock)
    _stream(windows, **bad)
    clock.advance(10)  # rollback does not wait for the stage to age
    decision = controller.evaluate(_priced(windows))
    assert decision["action"] == "rollback"
    gates = decision["evidence"]["gates"]
    assert [name for name, g in gates.items() if g["triggered"]] == [gate]
    assert gates[gate]["value"] > gates[gate]["threshold"]
    state = controller.state
    assert state.percentage == 0 and state.rolled_back is True and controller.percentage() == 0
    assert state.reason.startswith("rollback: ")
    logged = store.decisions()[0]
    assert logged["action"] == "rollback" and logged["state"]["rolled_back"] is True
    assert logged["evidence"]["gates"][gate]["triggered"] is True
    # nothing more happens until an operator restarts the rollout
    clock.advance(1000)
    assert controller.evaluate(_priced(windows))["action"] == "none"


def test_just_inside_the_limits_is_not_a_rollback(store, clock):
    controller = RolloutController(_config(), store, clock=clock)
    windows = _fresh_windows(clock)
    _stream(windows, ensemble_acc=0.66, ensemble_errors=0.02)  # 4 points down, 2 % errors
    decision = controller.evaluate(_priced(windows))
    assert decision["action"] == "hold"
    assert not any(g["triggered"] for g in decision["evidence"]["gates"].values())


def test_rollback_fires_even_when_paused_or_frozen(store, clock):
    controller = RolloutController(RolloutConfig(enabled=False), store, clock=clock)
    controller.pause()
    windows = _fresh_windows(clock)
    _stream(windows, ensemble_errors=0.10)
    decision = controller.evaluate(_priced(windows), drift_frozen=True)
    assert decision["action"] == "rollback" and controller.state.rolled_back


def test_shadow_labels_can_trigger_the_accuracy_rollback(store, clock):
    controller = RolloutController(_config(), store, clock=clock)
    windows = _fresh_windows(clock)
    _stream(windows, n=300)
    for i in range(2000):  # the ensemble's shadow predictions on classic traffic are poor
        windows.record_label("shadow", i % 100 < 50)
    decision = controller.evaluate(_priced(windows))
    assert decision["action"] == "rollback"
    assert decision["evidence"]["gates"]["accuracy"]["triggered"]


# ---------------------------------------------------------------------------- manual and replicas
def test_manual_operations_are_logged(store, clock):
    controller = RolloutController(_config(), store, clock=clock)
    controller.pause("weekend")
    assert controller.state.paused
    controller.resume("monday")
    assert not controller.state.paused
    controller.promote("looks fine")
    assert controller.percentage() == 25
    controller.rollback("customer complaint")
    assert controller.percentage() == 0 and controller.state.rolled_back
    assert controller.rollback("again")["action"] == "none"
    controller.promote("fixed")  # after a rollback: restart at the first stage
    assert controller.state.stage_index == 0 and controller.percentage() == 10
    assert not controller.state.rolled_back
    actions = [d["action"] for d in store.decisions()]
    assert actions == ["promote", "none", "rollback", "promote", "resume", "pause"]
    assert all(d["manual"] for d in store.decisions())
    assert store.decisions()[2]["reasons"] == ["manual: customer complaint"]


def test_manual_promote_at_the_last_stage_changes_nothing(store, clock):
    controller = RolloutController(_config(schedule=[50, 100]), store, clock=clock)
    controller.promote()
    assert controller.percentage() == 100
    assert controller.promote()["action"] == "none"
    assert controller.percentage() == 100


def test_state_survives_a_new_controller_on_the_same_store(tmp_path, clock):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first_store = StateStore(url)
    first = RolloutController(_config(), first_store, clock=clock)
    windows = _fresh_windows(clock)
    _stream(windows)
    clock.advance(301)
    assert first.evaluate(_priced(windows))["action"] == "promote"
    first.pause("handover")
    state = first.state
    first_store.close()

    second_store = StateStore(url)
    second = RolloutController(_config(), second_store, clock=clock)
    assert second.state == state
    assert second.percentage() == 25 and second.state.paused
    second_store.close()


def test_a_replica_follows_what_another_replica_decided(store, clock):
    a = RolloutController(_config(), store, clock=clock)
    b = RolloutController(_config(), store, clock=clock)
    a.promote()
    assert b.percentage() == 10  # answered from memory ...
    assert b.refresh().percentage == 25  # ... until refreshed
    windows = _fresh_windows(clock)
    _stream(windows)
    decision = b.evaluate(_priced(windows))  # evaluate re-reads: the stage just started
    assert decision["from"]["percentage"] == 25 and decision["action"] == "hold"


class _RacingStore:
    """Delegates to a real store, but lets another replica write just before a compare-and-set."""

    def __init__(self, store: StateStore, before_cas):
        self._store = store
        self._before_cas = before_cas

    def compare_and_set(self, key, expected, new):
        hook, self._before_cas = self._before_cas, None
        if hook is not None:
            hook()
        return self._store.compare_and_set(key, expected, new)

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_two_replicas_evaluating_at_once_promote_once(store, clock):
    windows = _fresh_windows(clock)
    _stream(windows)
    snapshot = _priced(windows)
    first = RolloutController(_config(), store, clock=clock)
    clock.advance(301)
    racing = _RacingStore(store, before_cas=lambda: first.evaluate(snapshot))
    second = RolloutController(_config(), racing, clock=clock)
    decision = second.evaluate(snapshot)  # decides "promote" from 10 %, but `first` wins the race
    assert decision["action"] == "none" and decision["applied"] is False
    assert second.percentage() == 25 and first.percentage() == 25
    assert store.get(STATE_KEY)["version"] == 1
    assert [d["action"] for d in store.decisions()] == ["promote"]


def test_a_changed_schedule_is_applied_to_the_stored_stage(store, clock):
    RolloutController(_config(), store, clock=clock).promote()  # stage 1 = 25 %
    shorter = RolloutController(_config(schedule=[30, 100]), store, clock=clock)
    assert shorter.state.stage_index == 1 and shorter.percentage() == 100
    longer = RolloutController(_config(schedule=[5, 10, 20, 40, 60, 80, 100]), store, clock=clock)
    assert longer.percentage() == 10
    longer.promote()
    assert longer.percentage() == 20


def test_a_sample_ratio_mismatch_holds_the_stage(store, clock):
    """At 10 % the randomised labelled traffic came half and half: the split is broken, so
    nothing it measured is trusted; the hold names the gate. The honest split promotes."""
    controller = RolloutController(_config(), store, clock=clock)
    windows = _fresh_windows(clock)
    _stream(windows)
    clock.advance(301)
    broken = controller.evaluate(_priced(windows), assignment={"classic": 500, "ensemble": 500})
    assert broken["action"] == "hold"
    assert any(r.startswith("sample_ratio") for r in broken["reasons"]), broken["reasons"]
    assert broken["evidence"]["sample_ratio"]["mismatch"]
    honest = controller.evaluate(_priced(windows), assignment={"classic": 905, "ensemble": 95})
    assert not honest["evidence"]["sample_ratio"]["mismatch"]
    assert honest["action"] == "promote", honest["reasons"]


def test_an_unknown_bill_holds_the_rollout(store, clock):
    controller = RolloutController(_config(), store, clock=clock)
    windows = _fresh_windows(clock)
    _stream(windows)
    clock.advance(301)
    decision = controller.evaluate(_priced(windows, increase=None))
    assert decision["action"] == "hold"
    assert any("cost_increase" in r for r in decision["reasons"]), decision["reasons"]
