"""A fake clock for unit tests: a callable returning `now`, moved by hand (no sleeping)."""

from __future__ import annotations


class FakeClock:
    """Stands in for time.monotonic / time.time: clock() returns `now`; tests set `now` or
    advance() it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
