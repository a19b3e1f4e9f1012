"""What several replicas share through the StateStore: leases, versioned writes, numbered
preference changes, request outcomes and shadow labels (SQLite, and PostgreSQL when available)."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from serving.store import StateStore
from serving.store.tables import (
    kv_table,
    leases_table,
    preferences_table,
    requests_table,
    shadow_table,
)
from tests.unit.store.test_state import BACKENDS, empty_store


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    tables = (kv_table, leases_table, preferences_table, requests_table, shadow_table)
    store = empty_store(request.param, tmp_path, *tables)
    yield store
    store.close()


def test_a_lease_has_one_holder_until_it_expires_or_is_released(store):
    assert store.acquire_lease("controller", "a", ttl_s=30) == 1
    assert store.acquire_lease("controller", "b", ttl_s=30) is None
    assert store.acquire_lease("controller", "a", ttl_s=30) == 1  # renewal keeps the term
    store.release_lease("controller", "a")
    assert store.acquire_lease("controller", "b", ttl_s=0.2) == 2  # a new holder, a new term
    time.sleep(0.3)
    assert store.acquire_lease("controller", "a", ttl_s=30) == 3  # b's lease expired
    assert store.lease("controller")["holder"] == "a"


def test_racing_replicas_never_share_a_lease(store):
    url = store._engine.url.render_as_string(hide_password=False)
    replicas = [StateStore(url) for _ in range(4)]
    barrier = threading.Barrier(len(replicas))
    won: list[str] = []

    def race(i: int, s: StateStore) -> None:
        barrier.wait()
        if s.acquire_lease("race", f"r{i}", ttl_s=30) is not None:
            won.append(f"r{i}")

    threads = [threading.Thread(target=race, args=(i, s)) for i, s in enumerate(replicas)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    for s in replicas:
        s.close()


def test_a_stale_versioned_write_is_refused(store):
    assert store.set_if_version("flags", 0, {"split": 10}) == 1
    assert store.set_if_version("flags", 0, {"split": 20}) is None  # someone wrote first
    assert store.set_if_version("flags", 1, {"split": 30}) == 2
    assert store.get_versioned("flags") == ({"split": 30}, 2) and store.version_of("flags") == 2
    assert store.version_of("missing") == 0


def test_preference_changes_are_numbered_and_fetched_incrementally(store):
    store.set_preference("alice", "ensemble")
    store.set_preference("bob", "classic")
    everything, change = store.preference_snapshot(10)
    assert everything == {"alice": "ensemble", "bob": "classic"} and change == 2
    assert store.preference_changes(change, 10) == ({}, 2)
    store.set_preference("alice", "auto")
    assert store.preference_changes(change, 10) == ({"alice": "auto"}, 3)
    assert store.preference_changes(0, 1) == (None, 3)  # more than the limit: reload all


def test_request_outcomes_keep_the_newest_per_arm_and_prune(store):
    rows = [
        {"created_at": 100.0 + i, "arm": arm, "latency_ms": float(i), "replica": "r1"}
        for i in range(5)
        for arm in ("classic", "ensemble")
    ]
    store.record_requests(rows + [{"created_at": 50.0, "arm": "classic", "error": True}])
    recent = store.requests_since(100.0, per_arm_limit=3)
    assert [(r["arm"], r["created_at"]) for r in recent] == [
        (arm, t) for t in (102.0, 103.0, 104.0) for arm in ("classic", "ensemble")
    ]
    store.record_shadow_labels([("r1", "yes", 100.0), ("r1", "no", 100.0), ("r2", "no", 200.0)])
    assert store.shadow_label("r1") == "yes" and store.shadow_label("nope") is None
    assert store.prune(before=103.0) == 1 + 6 + 1  # the old error, 6 requests, shadow r1
    assert len(store.requests_since(0.0, per_arm_limit=100)) == 4


def test_a_store_from_before_the_new_columns_gains_them(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # the preferences table as the previous release made it
        conn.execute(
            "CREATE TABLE serving_preferences (user_id VARCHAR(200) PRIMARY KEY,"
            " model VARCHAR(20) NOT NULL, updated_at FLOAT NOT NULL)"
        )
        conn.execute("INSERT INTO serving_preferences VALUES ('old', 'ensemble', 1.0)")
    store = StateStore(f"sqlite:///{path}")
    store.set_preference("new", "classic")
    assert store.preference_snapshot(10) == ({"old": "ensemble", "new": "classic"}, 1)
    assert store.preference_changes(0, 10) == ({"new": "classic"}, 1)
    store.close()
