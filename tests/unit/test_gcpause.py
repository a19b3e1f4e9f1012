"""Garbage-collector pauses (serving/gcpause.py): every collection observed once, freezing works."""

from __future__ import annotations

import gc

from serving import gcpause
from serving.live import Served


class FakeHistogram:
    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []
        self._generation = ""

    def labels(self, generation: str) -> FakeHistogram:
        self._generation = generation
        return self

    def observe(self, seconds: float) -> None:
        self.seen.append((self._generation, seconds))


def test_each_collection_is_observed_once_by_generation_and_install_is_idempotent():
    histogram = FakeHistogram()
    before = list(gc.callbacks)
    try:
        gcpause.install(histogram)
        gcpause.install(histogram)
        assert len(gc.callbacks) == len(before) + 1 or any(getattr(c, "_records_gc_pauses", False) for c in before)
        histogram.seen.clear()
        gc.collect(2)
        assert ("2", histogram.seen[-1][1]) == histogram.seen[-1] and histogram.seen[-1][1] >= 0
        assert [g for g, _ in histogram.seen].count("2") == 1
    finally:
        gc.callbacks[:] = before


def test_freezing_moves_live_objects_out_of_collections():
    try:
        frozen = gcpause.freeze_startup_objects()
        assert frozen == gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_recent_predictions_are_not_tracked_by_the_collector():
    from serving.live import RecentPredictions

    recent = RecentPredictions(max_entries=10, ttl_s=60.0, clock=lambda: 1000.0)
    recent.add("r1", Served("classic", "high", 1.5, 1000.0))
    gc.collect()  # CPython untracks exact tuples of atomic values when a collection examines them
    assert not any(gc.is_tracked(item) for item in recent._items.values())
    assert recent.get("r1") == Served("classic", "high", 1.5, 1000.0)
    assert recent.get("r1").label == "high"
