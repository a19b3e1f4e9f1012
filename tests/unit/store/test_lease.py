"""The controller lease: one leader, hand-over on release or expiry, no leader without a store."""

from __future__ import annotations

import time

from serving.store import StateStore
from serving.store.lease import Lease


class DownStore:
    def acquire_lease(self, name, holder, ttl_s):
        raise ConnectionError("database is down")

    def release_lease(self, name, holder):
        raise ConnectionError("database is down")


def test_one_leader_then_hand_over(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path}/state.db")
    first = Lease(store, "controller", "replica-1", ttl_s=0.3)
    second = Lease(store, "controller", "replica-2", ttl_s=0.3)
    assert first.hold() and not second.hold()
    first.release()  # graceful: the other takes over at its next tick
    assert second.hold() and second.term == 2 and not first.leading
    time.sleep(0.4)  # replica-2 died without releasing: its lease expires
    assert first.hold() and first.term == 3


def test_no_store_no_leader():
    lease = Lease(DownStore(), "controller", "replica-1", ttl_s=5)
    assert not lease.hold() and not lease.leading
    lease.release()  # nothing held: nothing to do, no error
