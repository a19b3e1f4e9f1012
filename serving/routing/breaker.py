"""A circuit breaker around ensemble calls: a failing ensemble costs a fast fallback, not a timeout.

closed --N consecutive failures--> open --reset_timeout_s--> half-open --probe succeeds--> closed
                                     ^------------------------ probe fails ------------------'

The clock is injected so the state machine is tested without sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from serving.config.flags import BreakerConfig


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Counts consecutive failures of the protected calls and stops them while the count is high.

    Callers ask `allow()` before a call and report its outcome with `record_success()` or
    `record_failure()` (a timeout is a failure). While half-open, at most `half_open_max_calls`
    probes run at once; a probe that never reports frees its slot after another `reset_timeout_s`,
    so a lost probe cannot wedge the breaker. `on_change(old, new)` is called outside the lock.
    """

    def __init__(
        self,
        config: BreakerConfig,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState, BreakerState], None] | None = None,
    ):
        self.config = config
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._opened_at: float | None = None
        self._probes_in_flight = 0
        self._probes_started_at: float | None = None

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose cool-down has elapsed is half-open."""
        with self._lock:
            changes = self._refresh()
            state = self._state
        self._notify(changes)
        return state

    def allow(self) -> bool:
        """Whether a call may go to the protected service now (half-open: takes a probe slot)."""
        with self._lock:
            changes = self._refresh()
            allowed = self._state is BreakerState.CLOSED or self._take_probe_slot()
        self._notify(changes)
        return allowed

    def record_success(self) -> None:
        """A call succeeded: the failure streak ends, and a half-open breaker closes."""
        with self._lock:
            changes = self._refresh()
            self._consecutive_failures = 0
            if self._state is BreakerState.HALF_OPEN:
                changes += self._move(BreakerState.CLOSED)
        self._notify(changes)

    def record_failure(self) -> None:
        """A call failed: open at the threshold, or re-open (new cool-down) when half-open."""
        with self._lock:
            changes = self._refresh()
            self._consecutive_failures += 1
            if self._state is BreakerState.HALF_OPEN or (
                self._state is BreakerState.CLOSED
                and self._consecutive_failures >= self.config.failure_threshold
            ):
                changes += self._move(BreakerState.OPEN)
        self._notify(changes)

    def reconfigure(self, config: BreakerConfig) -> None:
        """Apply new limits; the state and the failure streak are kept and judged by them."""
        with self._lock:
            self.config = config

    def snapshot(self) -> dict[str, Any]:
        """State and counters for health endpoints and logs."""
        with self._lock:
            changes = self._refresh()
            now = self._clock()
            opened_for = None if self._opened_at is None else now - self._opened_at
            snapshot = {
                "state": self._state.value,
                "consecutive_failures": self._consecutive_failures,
                "opened_for_s": opened_for,
                "probes_in_flight": self._probes_in_flight,
                "failure_threshold": self.config.failure_threshold,
                "reset_timeout_s": self.config.reset_timeout_s,
                "half_open_max_calls": self.config.half_open_max_calls,
            }
        self._notify(changes)
        return snapshot

    def _refresh(self) -> list[tuple[BreakerState, BreakerState]]:
        """Turn an open breaker half-open once its cool-down has elapsed (lock held)."""
        if (
            self._state is BreakerState.OPEN
            and self._opened_at is not None
            and self._clock() - self._opened_at >= self.config.reset_timeout_s
        ):
            return self._move(BreakerState.HALF_OPEN)
        return []

    def _take_probe_slot(self) -> bool:
        """Half-open: admit a probe if a slot is free or the earlier probes are presumed lost."""
        if self._state is not BreakerState.HALF_OPEN:
            return False
        now = self._clock()
        if (
            self._probes_in_flight >= self.config.half_open_max_calls
            and self._probes_started_at is not None
            and now - self._probes_started_at >= self.config.reset_timeout_s
        ):
            self._probes_in_flight = 0
        if self._probes_in_flight >= self.config.half_open_max_calls:
            return False
        if self._probes_in_flight == 0:
            self._probes_started_at = now
        self._probes_in_flight += 1
        return True

    def _move(self, new: BreakerState) -> list[tuple[BreakerState, BreakerState]]:
        """Enter `new` (lock held); returns the transition for `_notify`."""
        old = self._state
        self._state = new
        self._probes_in_flight = 0
        if new is BreakerState.OPEN:
            self._opened_at = self._clock()
        elif new is BreakerState.CLOSED:
            self._opened_at = None
        return [(old, new)] if old is not new else []

    def _notify(self, changes: list[tuple[BreakerState, BreakerState]]) -> None:
        if self._on_change is not None:
            for old, new in changes:
                self._on_change(old, new)
