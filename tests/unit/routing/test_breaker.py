"""The circuit breaker's state machine, driven by a fake clock."""

import threading

import pytest

from serving.config.flags import BreakerConfig
from serving.routing.breaker import BreakerState, CircuitBreaker
from tests.doubles import FakeClock

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def changes():
    return []


def breaker(clock, changes=None, threshold=3, reset=10.0, probes=1) -> CircuitBreaker:
    config = BreakerConfig(
        failure_threshold=threshold, reset_timeout_s=reset, half_open_max_calls=probes
    )
    on_change = None if changes is None else lambda old, new: changes.append((old, new))
    return CircuitBreaker(config, clock=clock, on_change=on_change)


def fail(cb: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        cb.record_failure()


def test_opens_after_threshold_consecutive_failures(clock, changes):
    cb = breaker(clock, changes)
    fail(cb, 2)
    assert cb.state is CLOSED and cb.allow()
    cb.record_failure()
    assert cb.state is OPEN and not cb.allow()
    assert changes == [(CLOSED, OPEN)]


def test_a_success_resets_the_failure_streak(clock):
    cb = breaker(clock)
    fail(cb, 2)
    cb.record_success()
    fail(cb, 2)
    assert cb.state is CLOSED
    assert cb.snapshot()["consecutive_failures"] == 2


def test_stays_open_until_the_cool_down_has_elapsed(clock):
    cb = breaker(clock)
    fail(cb, 3)
    clock.advance(9.999)
    assert cb.state is OPEN and not cb.allow()
    clock.advance(0.001)
    assert cb.state is HALF_OPEN


@pytest.mark.parametrize("probes", [1, 3])
def test_half_open_admits_only_the_allowed_probes(clock, probes):
    cb = breaker(clock, probes=probes)
    fail(cb, 3)
    clock.advance(10)
    assert [cb.allow() for _ in range(probes + 2)] == [True] * probes + [False, False]


def test_probe_success_closes(clock, changes):
    cb = breaker(clock, changes)
    fail(cb, 3)
    clock.advance(10)
    assert cb.allow()
    cb.record_success()
    assert cb.state is CLOSED and cb.allow()
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    assert cb.snapshot()["opened_for_s"] is None


def test_probe_failure_reopens_with_a_new_cool_down(clock, changes):
    cb = breaker(clock, changes)
    fail(cb, 3)
    clock.advance(10)
    assert cb.allow()
    cb.record_failure()
    assert cb.state is OPEN and not cb.allow()
    clock.advance(9)
    assert cb.state is OPEN
    clock.advance(1)
    assert cb.state is HALF_OPEN and cb.allow()
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (OPEN, HALF_OPEN)]


def test_a_lost_probe_frees_its_slot_after_another_cool_down(clock):
    cb = breaker(clock)
    fail(cb, 3)
    clock.advance(10)
    assert cb.allow()  # this probe never reports back
    clock.advance(9)
    assert not cb.allow()
    clock.advance(1)
    assert cb.allow()


def test_late_reports_while_open_do_not_move_it(clock):
    cb = breaker(clock)
    fail(cb, 3)
    cb.record_success()
    cb.record_failure()
    assert cb.state is OPEN


def test_reconfigure_keeps_state_and_applies_new_limits(clock):
    cb = breaker(clock, threshold=5)
    fail(cb, 3)
    cb.reconfigure(BreakerConfig(failure_threshold=4, reset_timeout_s=2.0))
    assert cb.state is CLOSED
    cb.record_failure()
    assert cb.state is OPEN
    clock.advance(2)
    assert cb.state is HALF_OPEN


def test_snapshot_reports_state_and_age(clock):
    cb = breaker(clock)
    fail(cb, 3)
    clock.advance(4)
    assert cb.snapshot() == {
        "state": "open",
        "consecutive_failures": 3,
        "opened_for_s": 4.0,
        "probes_in_flight": 0,
        "failure_threshold": 3,
        "reset_timeout_s": 10.0,
        "half_open_max_calls": 1,
    }


def test_on_change_may_call_back_into_the_breaker(clock):
    seen = []
    cb = CircuitBreaker(
        BreakerConfig(failure_threshold=1),
        clock=clock,
        on_change=lambda old, new: seen.append(cb.snapshot()["state"]),
    )
    cb.record_failure()
    assert seen == ["open"]


def test_concurrent_half_open_callers_get_exactly_the_allowed_probes(clock):
    cb = breaker(clock, probes=2)
    fail(cb, 3)
    clock.advance(10)
    start = threading.Barrier(16)
    admitted = []

    def caller():
        start.wait()
        admitted.append(cb.allow())

    threads = [threading.Thread(target=caller) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert admitted.count(True) == 2
