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

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from serving.store.engine import StoreEngine
from serving.store.tables import leases_table

log = logging.getLogger(__name__)

CONTROLLER_LEASE = "rollout-controller"
"""The lease whose holder runs the rollout controller."""


class LeaseStore(Protocol):
    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> int | None: ...

    def release_lease(self, name: str, holder: str) -> None: ...

    def lease(self, name: str) -> dict | None: ...


class LeaseTable(StoreEngine):
    """`serving_leases`: one row per named lease, its holder, expiry and fencing term."""

    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> int | None:
        """Take or renew the lease `name` for `holder` until now + `ttl_s`.

        Returns the lease's term (a fencing number that grows at every change of holder) when
        `holder` holds it after the call, None when another holder's lease has not expired. One
        transaction with the row locked (`FOR UPDATE`; SQLite's `BEGIN IMMEDIATE`), so two
        replicas racing for an expired lease cannot both win.
        """
        now = time.time()
        try:
            with self._write() as conn:
                row = conn.execute(
                    select(leases_table).where(leases_table.c.name == name).with_for_update()
                ).first()
                if row is None:
                    conn.execute(
                        insert(leases_table).values(
                            name=name, holder=holder, expires_at=now + ttl_s, term=1
                        )
                    )
                    return 1
                if row.holder != holder and row.expires_at > now:
                    return None
                term = int(row.term) if row.holder == holder else int(row.term) + 1
                conn.execute(
                    update(leases_table)
                    .where(leases_table.c.name == name)
                    .values(holder=holder, expires_at=now + ttl_s, term=term)
                )
                return term
        except IntegrityError:  # another replica created the lease first
            return None

    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up at once (graceful shutdown), if `holder` has it."""
        with self._write() as conn:
            conn.execute(
                update(leases_table)
                .where(leases_table.c.name == name, leases_table.c.holder == holder)
                .values(expires_at=0.0)
            )

    def lease(self, name: str) -> dict | None:
        """{holder, expires_at, term} of the lease, or None when it was never taken."""
        with self._read() as conn:
            row = conn.execute(select(leases_table).where(leases_table.c.name == name)).first()
        return None if row is None else dict(row._mapping)


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
