"""Garbage-collector pauses: measured, and kept short by freezing what start-up allocated.

A full (generation 2) collection walks every tracked object of the process while the event loop
waits. A router holds a lot of them: BentoML, FastAPI and pydantic at import, plus its own
long-lived tables (recent predictions for feedback joins, the prediction cache, the rolling
windows). `gc.freeze()` after start-up moves the import-time objects out of every future
collection, and `GcPauses` exports each pause to Prometheus (`tabular_gc_pause_seconds`, see
serving/observability/metrics.py) so a long one shows up as a number rather than as an unexplained
tail latency (or as ensemble deadlines missed by a stalled loop).

The collector's callback runs wherever a collection happens to start: possibly inside
prometheus_client while it holds its (non-reentrant) value lock, which in multiprocess mode is one
lock for every metric of the process. Observing the histogram from the callback can therefore
deadlock the process; the callback only appends to a deque, and `flush()` observes from ordinary
code (the router's one-second background tick).
"""

from __future__ import annotations

import gc
import time
from collections import deque
from typing import Any


class GcPauses:
    """Records the duration of every collection; `flush()` moves them into a labelled histogram."""

    def __init__(self, histogram: Any, max_pending: int = 10_000) -> None:
        self.histogram = histogram
        self._pending: deque[tuple[int, float]] = deque(
            maxlen=max_pending
        )  # append/popleft: thread-safe
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        # No locks, no I/O: this may run inside any code that allocates.
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            self._pending.append((info.get("generation", -1), time.perf_counter() - self._started))
            self._started = 0.0

    def install(self) -> GcPauses:
        """Start recording (once per process: a second recorder replaces the first)."""
        gc.callbacks[:] = [
            cb for cb in gc.callbacks if not isinstance(getattr(cb, "__self__", None), GcPauses)
        ]
        gc.callbacks.append(self._callback)
        return self

    def uninstall(self) -> None:
        gc.callbacks[:] = [cb for cb in gc.callbacks if getattr(cb, "__self__", None) is not self]

    def flush(self) -> int:
        """Observe the pauses recorded since the last flush; returns how many."""
        count = 0
        while self._pending:
            generation, seconds = self._pending.popleft()
            self.histogram.labels(generation=str(generation)).observe(seconds)
            count += 1
        return count


def freeze_startup_objects() -> int:
    """Collect once, then exempt everything alive now from later collections; returns how many."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
