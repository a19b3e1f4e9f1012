"""StateStore: round trips, idempotent feedback, compare-and-set races, decision log, preferences.

Every behaviour test runs on SQLite (a file under tmp_path) and, when the environment variable
TEST_POSTGRES_URL names a PostgreSQL database (e.g.
postgresql+psycopg://postgres@127.0.0.1:5432/test), on PostgreSQL too; the tables are emptied
before each PostgreSQL test.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading

import numpy as np
import pytest

from serving.store import StateStore
from serving.store.tables import (
    decisions_table,
    feedback_table,
    kv_table,
    preferences_table,
)
from tests.support import require_infrastructure

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL")

BACKENDS = ["sqlite", "postgresql"]


def _url(backend: str, tmp_path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'nested' / 'dir' / 'state.db'}"
    if not POSTGRES_URL:
        require_infrastructure("no PostgreSQL: set TEST_POSTGRES_URL (the test set-up starts one)")
    return POSTGRES_URL


def _wipe(store: StateStore, *tables) -> None:
    with store._write() as conn:
        for table in tables or (kv_table, feedback_table, decisions_table, preferences_table):
            conn.execute(table.delete())


def empty_store(backend: str, tmp_path, *tables) -> StateStore:
    """A store on `backend` whose `tables` are empty (PostgreSQL is shared by the session)."""
    store = StateStore(_url(backend, tmp_path))
    _wipe(store, *tables)
    return store


@pytest.fixture(params=BACKENDS)
def url(request, tmp_path) -> str:
    url = _url(request.param, tmp_path)
    if request.param == "postgresql":
        store = StateStore(url)
        _wipe(store)
        store.close()
    return url


@pytest.fixture
def store(url):
    store = StateStore(url)
    yield store
    store.close()


# ---------------------------------------------------------------------------- key/value
def test_get_returns_default_for_a_missing_key(store):
    assert store.get("nope") is None
    assert store.get("nope", {"x": 1}) == {"x": 1}


@pytest.mark.parametrize(
    "value",
    [1, 2.5, "text", True, None, [1, "a", None], {"stage": 2, "nested": {"list": [1.5, 2]}}],
)
def test_set_and_get_round_trip_json_values(store, value):
    store.set("k", value)
    assert store.get("k", "default") == value


def test_set_replaces_and_bumps_the_version(store):
    store.set("k", {"a": 1})
    assert store.get_versioned("k") == ({"a": 1}, 1)
    store.set("k", {"a": 2})
    assert store.get_versioned("k") == ({"a": 2}, 2)
    assert store.get_versioned("missing") == (None, 0)


def test_numpy_and_non_finite_values_become_plain_json(store):
    store.set(
        "k",
        {
            "n": np.int64(3),
            "f": np.float32(0.5),
            "arr": np.arange(3),
            "nan": math.nan,
            "inf": math.inf,
            "tuple": (1, 2),
        },
    )
    assert store.get("k") == {
        "n": 3,
        "f": 0.5,
        "arr": [0, 1, 2],
        "nan": None,
        "inf": None,
        "tuple": [1, 2],
    }


def test_a_value_that_is_not_json_is_rejected_and_nothing_is_written(store):
    store.set("k", 1)
    with pytest.raises(TypeError):
        store.set("k", object())
    with pytest.raises(TypeError):
        store.compare_and_set("k", 1, object())
    assert store.get_versioned("k") == (1, 1)


def test_delete(store):
    store.set("k", 1)
    store.delete("k")
    store.delete("k")
    assert store.get("k") is None


# ---------------------------------------------------------------------------- compare and set
def test_compare_and_set_creates_a_missing_key_once(store):
    assert store.compare_and_set("k", None, {"v": 1}) is True
    assert store.compare_and_set("k", None, {"v": 2}) is False
    assert store.get("k") == {"v": 1}


def test_compare_and_set_needs_the_current_value(store):
    store.set("k", {"stage": 0, "version": 0})
    assert store.compare_and_set("k", {"stage": 1, "version": 1}, {"stage": 2}) is False
    assert store.get("k") == {"stage": 0, "version": 0}
    assert (
        store.compare_and_set("k", {"version": 0, "stage": 0}, {"stage": 1, "version": 1}) is True
    )
    assert store.get("k") == {"stage": 1, "version": 1}
    # the old expectation is stale now
    assert store.compare_and_set("k", {"stage": 0, "version": 0}, {"stage": 9}) is False


def test_compare_and_set_treats_tuples_like_the_lists_they_are_stored_as(store):
    store.set("k", [1, 2])
    assert store.compare_and_set("k", (1, 2), [3]) is True


def test_racing_replicas_promote_exactly_once(url):
    """Eight 'replicas', each with its own store (own connections), race from the same state."""
    setup = StateStore(url)
    setup.set("rollout", {"stage": 0, "version": 0})
    stores = [StateStore(url) for _ in range(8)]
    barrier = threading.Barrier(len(stores))
    wins: list[int] = []
    errors: list[BaseException] = []

    def race(i: int, replica: StateStore) -> None:
        try:
            barrier.wait()
            if replica.compare_and_set(
                "rollout", {"stage": 0, "version": 0}, {"stage": 1, "version": 1, "by": i}
            ):
                wins.append(i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(i, s)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(wins) == 1
    assert setup.get("rollout") == {"stage": 1, "version": 1, "by": wins[0]}
    for s in stores + [setup]:
        s.close()


def test_concurrent_increments_through_compare_and_set_lose_nothing(store):
    store.set("counter", 0)

    def bump(times: int) -> None:
        for _ in range(times):
            while True:
                current = store.get("counter")
                if store.compare_and_set("counter", current, current + 1):
                    break

    threads = [threading.Thread(target=bump, args=(25,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("counter") == 100


# ---------------------------------------------------------------------------- feedback
def _feedback(store, request_id, created_at, **overrides):
    values = dict(
        arm="classic",
        predicted="high",
        label="high",
        rating=None,
        latency_ms=3.5,
        shadow_predicted=None,
        created_at=created_at,
    )
    values.update(overrides)
    return store.record_feedback(request_id, **values)


def test_feedback_is_idempotent_on_request_id(store):
    assert _feedback(store, "r1", 100.0, label="high") is True
    assert _feedback(store, "r1", 101.0, label="low", rating=1) is False
    rows = store.feedback_since(0)
    assert len(rows) == 1
    assert (
        rows[0]["label"] == "high" and rows[0]["rating"] is None and rows[0]["created_at"] == 100.0
    )


def test_feedback_since_filters_orders_and_derives_correctness(store):
    _feedback(store, "late", 300.0, arm="ensemble", predicted="low", label="high", rating=7)
    _feedback(store, "early", 100.0)
    _feedback(
        store, "mid", 200.0, predicted="low", label="low", shadow_predicted="high", latency_ms=None
    )
    rows = store.feedback_since(150.0)
    assert [r["request_id"] for r in rows] == ["mid", "late"]
    mid, late = rows
    assert mid["correct"] is True and mid["shadow_correct"] is False and mid["latency_ms"] is None
    assert late["correct"] is False and late["shadow_correct"] is None
    assert late["arm"] == "ensemble" and late["rating"] == 7 and late["latency_ms"] == 3.5
    assert store.feedback_since(300.0)[0]["request_id"] == "late"
    assert store.feedback_since(301.0) == []


def test_feedback_keeps_every_field(store):
    _feedback(
        store,
        "r",
        5.0,
        arm="ensemble",
        predicted="a",
        label="b",
        rating=9,
        latency_ms=12.25,
        shadow_predicted=None,
    )
    (row,) = store.feedback_since(0)
    assert {
        k: row[k]
        for k in (
            "request_id",
            "arm",
            "predicted",
            "label",
            "rating",
            "latency_ms",
            "shadow_predicted",
            "created_at",
        )
    } == {
        "request_id": "r",
        "arm": "ensemble",
        "predicted": "a",
        "label": "b",
        "rating": 9,
        "latency_ms": 12.25,
        "shadow_predicted": None,
        "created_at": 5.0,
    }


def test_concurrent_duplicate_feedback_is_stored_once(url):
    stores = [StateStore(url) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    results: list[bool] = []

    def send(s: StateStore) -> None:
        barrier.wait()
        results.append(_feedback(s, "same-request", 1.0))

    threads = [threading.Thread(target=send, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    assert len(stores[0].feedback_since(0)) == 1
    for s in stores:
        s.close()


# ---------------------------------------------------------------------------- decisions
def test_decisions_are_newest_first_with_evidence(store):
    for i in range(5):
        store.append_decision(
            {"at": 1000.0 + i, "action": "hold", "i": i, "evidence": {"p95": 12.5, "nan": math.nan}}
        )
    latest = store.decisions(limit=3)
    assert [d["i"] for d in latest] == [4, 3, 2]
    assert latest[0]["created_at"] == 1004.0
    assert latest[0]["evidence"] == {"p95": 12.5, "nan": None}
    assert latest[0]["id"] > latest[1]["id"]
    assert len(store.decisions()) == 5
    assert store.decisions(limit=0) == []


def test_a_decision_without_a_time_is_stamped_now(store):
    store.append_decision({"action": "pause"})
    (decision,) = store.decisions()
    assert decision["created_at"] > 1.6e9


# ---------------------------------------------------------------------------- preferences
def test_preferences_round_trip_and_overwrite(store):
    assert store.get_preference("alice") is None
    store.set_preference("alice", "ensemble")
    store.set_preference("bob", "classic")
    store.set_preference("alice", "auto")
    assert store.get_preference("alice") == "auto"
    assert store.get_preference("bob") == "classic"


def test_preferences_reject_unknown_models(store):
    with pytest.raises(ValueError, match="classic"):
        store.set_preference("alice", "gpt")
    assert store.get_preference("alice") is None


# ---------------------------------------------------------------------------- SQLite specifics
def test_sqlite_file_persists_across_reopen_and_uses_wal(tmp_path):
    path = tmp_path / "a" / "b" / "state.db"
    first = StateStore(f"sqlite:///{path}")
    first.set("rollout", {"stage": 3})
    first.record_feedback("r", "classic", "x", "x", None, None, None, 1.0)
    first.append_decision({"at": 1.0, "action": "promote"})
    first.set_preference("u", "ensemble")
    first.close()
    assert path.exists()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    second = StateStore(str(path))  # a bare path is a SQLite file too
    assert second.get("rollout") == {"stage": 3}
    assert len(second.feedback_since(0)) == 1
    assert second.decisions()[0]["action"] == "promote"
    assert second.get_preference("u") == "ensemble"
    second.close()


def test_in_memory_sqlite_is_shared_between_threads():
    with StateStore("sqlite://") as store:
        store.set("k", 1)
        seen = []
        thread = threading.Thread(target=lambda: seen.append(store.get("k")))
        thread.start()
        thread.join()
        assert seen == [1]


def test_a_failed_transaction_leaves_nothing_half_written(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 's.db'}")
    store.set("k", 1)
    with pytest.raises(RuntimeError):
        with store._write() as conn:
            conn.execute(kv_table.update().values(value="2"))
            conn.execute(
                feedback_table.insert().values(
                    request_id="r", arm="classic", predicted="a", label="a", created_at=1.0
                )
            )
            raise RuntimeError("crash in the middle")
    assert store.get("k") == 1
    assert store.feedback_since(0) == []
    store.close()


def test_repr_hides_the_password(tmp_path):
    with StateStore(f"sqlite:///{tmp_path / 's.db'}") as store:
        assert "s.db" in repr(store)
    from sqlalchemy.engine import make_url

    assert "secret" not in make_url("postgresql+psycopg://u:secret@h/db").render_as_string(
        hide_password=True
    )


def test_concurrent_first_writes_of_one_key_all_succeed(url):
    stores = [StateStore(url) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def write(i: int, s: StateStore) -> None:
        try:
            barrier.wait()
            s.set("fresh", i)
            s.set_preference("carol", ("classic", "ensemble", "auto", "classic")[i])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i, s)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    value, version = stores[0].get_versioned("fresh")
    assert value in range(4) and version == 4
    assert stores[0].get_preference("carol") in ("classic", "ensemble", "auto")
    for s in stores:
        s.close()
