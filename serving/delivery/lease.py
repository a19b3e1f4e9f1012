"""One writer among replicas: a lease in the state store, renewed by its holder every tick.

The replica holding the lease runs the rollout controller (and announces its decisions); the
others only follow the stored stage. When the holder dies it stops renewing, and another replica
takes over once the lease expires (`ttl_s`). A store that cannot be reached means nobody leads
for a while, which is safe: serving never waits on the controller.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Protocol

log = logging.getLogger(__name__)

CONTROLLER_LEASE = "rollout-controller"
"""The lease whose holder runs the rollout controller."""


class LeaseStore(Protocol):
    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> int | None: ...

    def release_lease(self, name: str, holder: str) -> None: ...

    def lease(self, name: str) -> dict | None: ...


def leader_of(store: LeaseStore, name: str = CONTROLLER_LEASE) -> dict:
    """{"leader": holder or None when the lease is free or expired, "term", "expires_in_s"}."""
    lease = store.lease(name)
    if lease is None:
        return {"leader": None, "term": None, "expires_in_s": None}
    remaining = lease["expires_at"] - time.time()
    holder = lease["holder"] if remaining > 0 else None
    return {"leader": holder, "term": lease["term"], "expires_in_s": max(remaining, 0.0)}


def replica_id() -> str:
    """This process's name among replicas: host (the container's name in Container Apps) + pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Lease:
    """`hold()` takes or renews the lease and says whether this replica leads now."""

    def __init__(self, store: LeaseStore, name: str, holder: str, ttl_s: float):
        self.store = store
        self.name = name
        self.holder = holder
        self.ttl_s = ttl_s
        self.term: int | None = None

    @property
    def leading(self) -> bool:
        return self.term is not None

    def hold(self) -> bool:
        try:
            term = self.store.acquire_lease(self.name, self.holder, self.ttl_s)
        except Exception as exc:  # the store is down: lead nothing until it is back
            if self.term is not None:
                log.warning("lease %s: cannot renew (%s); stepping down", self.name, exc)
            term = None
        if term != self.term:
            if term is None:
                log.info("lease %s: %s no longer leads", self.name, self.holder)
            else:
                log.info("lease %s: %s leads (term %d)", self.name, self.holder, term)
        self.term = term
        return term is not None

    def release(self) -> None:
        if self.term is None:
            return
        try:
            self.store.release_lease(self.name, self.holder)
        except Exception as exc:
            log.warning("lease %s: release failed (%s); it expires by itself", self.name, exc)
        self.term = None
