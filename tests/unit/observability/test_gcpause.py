"""Garbage-collector pauses (serving/observability/gcpause.py): every collection observed once
(outside the collector), freezing works."""

from __future__ import annotations

import gc
import threading

from serving.delivery.recent import Served
from serving.observability import gcpause


class FakeHistogram:
    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []
        self._generation = ""

    def labels(self, generation: str) -> FakeHistogram:
        self._generation = generation
        return self

    def observe(self, seconds: float) -> None:
        self.seen.append((self._generation, seconds))


def test_each_collection_is_recorded_once_by_generation_and_observed_on_flush():
    histogram = FakeHistogram()
    pauses = gcpause.GcPauses(histogram).install()
    try:
        gcpause.GcPauses(
            histogram
        ).install().uninstall()  # a second recorder replaces, never stacks
        pauses.install()
        assert (
            sum(isinstance(getattr(cb, "__self__", None), gcpause.GcPauses) for cb in gc.callbacks)
            == 1
        )
        pauses.flush()
        histogram.seen.clear()
        gc.collect(2)
        assert histogram.seen == []  # nothing observed from inside the collector
        assert pauses.flush() >= 1
        assert [g for g, _ in histogram.seen].count("2") == 1 and all(
            s >= 0 for _, s in histogram.seen
        )
    finally:
        pauses.uninstall()
    assert not any(
        isinstance(getattr(cb, "__self__", None), gcpause.GcPauses) for cb in gc.callbacks
    )


def test_a_collection_inside_a_held_metric_lock_does_not_deadlock():
    """prometheus_client holds a non-reentrant lock while it updates a value; a collection that
    starts there must not try to observe into the same metric (the router hung on restart)."""
    from prometheus_client import CollectorRegistry, Histogram

    histogram = Histogram(
        "gc_pause_test_seconds", "test", ["generation"], registry=CollectorRegistry()
    )
    pauses = gcpause.GcPauses(histogram).install()
    try:
        for generation in ("0", "1", "2"):
            histogram.labels(generation=generation)
        held = histogram.labels(generation="2")._sum._lock

        def collect_while_locked() -> None:
            with held:
                gc.collect(2)

        worker = threading.Thread(target=collect_while_locked, daemon=True)
        worker.start()
        worker.join(timeout=10)
        assert not worker.is_alive(), "garbage collection deadlocked on the metric lock"
        assert pauses.flush() >= 1
        assert histogram.labels(generation="2")._sum.get() > 0
    finally:
        pauses.uninstall()


def test_freezing_moves_live_objects_out_of_collections():
    try:
        frozen = gcpause.freeze_startup_objects()
        assert frozen == gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_recent_predictions_are_not_tracked_by_the_collector():
    from serving.delivery.recent import RecentPredictions

    recent = RecentPredictions(max_entries=10, ttl_s=60.0, clock=lambda: 1000.0)
    recent.add("r1", Served("classic", "high", 1.5, 1000.0))
    gc.collect()  # CPython untracks exact tuples of atomic values when a collection examines them
    assert not any(gc.is_tracked(item) for item in recent._items.values())
    assert recent.get("r1") == Served("classic", "high", 1.5, 1000.0)
    assert recent.get("r1").label == "high"
