"""Garbage-collector pauses: measured, and kept short by freezing what start-up allocated.

A full (generation 2) collection walks every tracked object of the process while the event loop
waits. A router holds a lot of them: BentoML, FastAPI and pydantic at import, plus its own
long-lived tables (recent predictions for feedback joins, the prediction cache, the rolling
windows). `gc.freeze()` after start-up moves the import-time objects out of every future
collection, and `install` exports each pause to Prometheus so a long one shows up as a number
rather than as an unexplained tail latency (or as ensemble deadlines missed by a stalled loop).
"""

from __future__ import annotations

import gc
import time
from typing import Any


def install(histogram: Any) -> None:
    """Observe the duration of every collection in `histogram` (labelled by generation); idempotent."""
    if any(getattr(cb, "_records_gc_pauses", False) for cb in gc.callbacks):
        return
    started: list[float] = []

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            histogram.labels(generation=str(info.get("generation", "?"))).observe(time.perf_counter() - started.pop())

    callback._records_gc_pauses = True  # type: ignore[attr-defined]
    gc.callbacks.append(callback)


def freeze_startup_objects() -> int:
    """Collect once, then exempt everything alive now from later collections; returns how many."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
