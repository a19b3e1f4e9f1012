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
from typing import Protocol

log = logging.getLogger(__name__)


class LeaseStore(Protocol):
    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> int | None: ...

    def release_lease(self, name: str, holder: str) -> None: ...


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
