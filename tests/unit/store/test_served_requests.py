"""Served requests' features in the state store, joined with feedback; pruning; run records;
the outcome buffer's add_served."""

from __future__ import annotations

import pytest

from serving.store import StateStore
from serving.store.outcomes import OutcomeBuffer
from serving.store.tables import (
    feedback_table,
    retraining_runs_table,
    served_table,
)
from tests.unit.store.test_state import BACKENDS, empty_store


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    """SQLite, and the PostgreSQL the test set-up started (when there is one)."""
    s = empty_store(request.param, tmp_path, served_table, feedback_table, retraining_runs_table)
    yield s
    s.close()


def _served(i: int, at: float) -> dict:
    return {
        "request_id": f"r{i}",
        "created_at": at,
        "arm": "ensemble",
        "model_version": "v1",
        "predicted": "low",
        "features": {"age": i, "region": None, "plan": "basic"},
    }


def test_served_rows_join_feedback_newest_first_returned_oldest_first(store):
    store.record_served([_served(i, 100.0 + i) for i in range(10)])
    store.record_served([{**_served(3, 1.0), "predicted": "high"}])  # duplicate id: ignored
    for i in range(0, 10, 2):
        store.record_feedback(f"r{i}", "ensemble", "low", "high", None, None, None, 200.0)
    rows = store.labelled_requests(since=101.0, limit=3)
    assert [r["request_id"] for r in rows] == ["r4", "r6", "r8"]
    assert rows[0]["features"] == {"age": 4, "region": None, "plan": "basic"}
    assert rows[0]["label"] == "high" and rows[0]["predicted"] == "low"
    assert rows[0]["model_version"] == "v1" and rows[0]["arm"] == "ensemble"
    assert store.labelled_requests(since=105.0, limit=100)[0]["request_id"] == "r6"
    assert store.served_count() == 10


def test_no_user_id_is_kept(store):
    from serving.store.tables import served_table

    assert "user_id" not in served_table.c


def test_prune_by_age_then_by_count(store):
    store.record_served([_served(i, 100.0 + i) for i in range(10)])
    assert store.prune_served(before=103.0, max_rows=100) == 3
    assert store.prune_served(before=0.0, max_rows=4) == 3
    assert store.served_count() == 4
    store.record_feedback("r9", "ensemble", "low", "high", None, None, None, 200.0)
    assert [r["request_id"] for r in store.labelled_requests(0.0, 10)] == ["r9"]


def test_retraining_runs_are_shared_newest_first(store):
    a, b = store, StateStore(store._engine.url.render_as_string(hide_password=False))  # 2nd replica
    a.record_retraining_run({"id": "x", "started_at": 10.0, "outcome": "accepted"})
    b.record_retraining_run({"id": "y", "started_at": 20.0, "outcome": "refused"})
    assert [r["id"] for r in a.retraining_runs()] == ["y", "x"]
    assert b.retraining_runs(limit=1)[0]["outcome"] == "refused"
    b.close()


def test_outcome_buffer_writes_served_rows_with_the_same_flush(store):
    buffer = OutcomeBuffer(store, "replica-1", max_pending=3)
    buffer.add_request("ensemble", 1.0, None, 100.0)
    for i in range(5):
        buffer.add_served(f"s{i}", {"age": i}, "ensemble", "v1", "low", 100.0 + i)
    assert buffer.dropped == 2  # bounded like the other kinds, oldest dropped
    assert buffer.pending == 4
    buffer.flush()
    assert buffer.pending == 0 and store.served_count() == 3
    store.record_feedback("s4", "ensemble", "low", "medium", None, None, None, 110.0)
    assert store.labelled_requests(0.0, 10)[0]["features"] == {"age": 4}


class _Failing:
    def record_shadow_labels(self, items):
        pass

    def record_served(self, rows):
        raise ConnectionError("down")

    def record_requests(self, rows):
        pass


def test_served_rows_wait_for_the_store_and_are_retried():
    buffer = OutcomeBuffer(_Failing(), "replica-1")
    buffer.add_served("s1", {"age": 1}, "classic", None, "low", 1.0)
    with pytest.raises(ConnectionError):
        buffer.flush()
    assert buffer.pending == 1
