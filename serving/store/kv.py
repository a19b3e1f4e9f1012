"""Versioned key/value state: flags, pins, the rollout stage; compare-and-set for races.

`compare_and_set` is the atomic step that lets several router replicas race to promote and have
exactly one win; `set_if_version` is the optimistic-concurrency step behind `If-Match`.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from serving.store.codec import dumps
from serving.store.engine import StoreEngine
from serving.store.tables import kv_table


class KvStore(Protocol):
    """What a reader or writer of versioned values needs of the store."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def get_versioned(self, key: str) -> tuple[Any, int]: ...

    def set(self, key: str, value: Any) -> None: ...

    def compare_and_set(self, key: str, expected: Any, new: Any) -> bool: ...

    def set_if_version(self, key: str, expected_version: int, value: Any) -> int | None: ...

    def version_of(self, key: str) -> int: ...


class KvTable(StoreEngine):
    """JSON values by key (`serving_kv`), each with a version counter."""

    def get(self, key: str, default: Any = None) -> Any:
        """The JSON value stored under `key`, or `default` when there is none."""
        with self._read() as conn:
            row = conn.execute(select(kv_table.c.value).where(kv_table.c.key == key)).first()
        return default if row is None else json.loads(row.value)

    def get_versioned(self, key: str) -> tuple[Any, int]:
        """The value under `key` and its version (None and 0 when missing)."""
        with self._read() as conn:
            row = conn.execute(
                select(kv_table.c.value, kv_table.c.version).where(kv_table.c.key == key)
            ).first()
        return (None, 0) if row is None else (json.loads(row.value), int(row.version))

    def set(self, key: str, value: Any) -> None:
        """Store `value` (JSON-able) under `key`, replacing what was there; bumps its version."""
        text = dumps(value)
        now = time.time()
        with self._write() as conn:
            self._upsert(
                conn,
                kv_table,
                {"key": key, "value": text, "version": 1, "updated_at": now},
                key="key",
                changes={"value": text, "version": kv_table.c.version + 1, "updated_at": now},
            )

    def compare_and_set(self, key: str, expected: Any, new: Any) -> bool:
        """Atomically replace the value under `key` with `new` if it currently equals `expected`.

        `expected=None` means "the key is missing (or holds null)". Equality is on the decoded JSON
        values. Returns True when this call wrote `new`, False when the value had changed (another
        replica won the race) — the caller then re-reads and decides again.

        Optimistic concurrency on the version column: the row's version is read (with
        `SELECT ... FOR UPDATE` on PostgreSQL; SQLite's `BEGIN IMMEDIATE` already holds the write
        lock), and the update only applies `WHERE version = <the version read>`; a concurrent
        insert of a missing key loses on the primary key.
        """
        text = dumps(new)
        # Compare in the stored form so that e.g. tuples and lists, or numpy and Python numbers,
        # compare equal the way they will be read back.
        expected_value = json.loads(dumps(expected))
        now = time.time()
        try:
            with self._write() as conn:
                row = conn.execute(
                    select(kv_table.c.value, kv_table.c.version)
                    .where(kv_table.c.key == key)
                    .with_for_update()
                ).first()
                current = None if row is None else json.loads(row.value)
                if current != expected_value:
                    return False
                if row is None:
                    conn.execute(
                        insert(kv_table).values(key=key, value=text, version=1, updated_at=now)
                    )
                    return True
                result = conn.execute(
                    update(kv_table)
                    .where(kv_table.c.key == key, kv_table.c.version == row.version)
                    .values(value=text, version=row.version + 1, updated_at=now)
                )
                return result.rowcount == 1
        except IntegrityError:  # another process inserted the key first
            return False

    def set_if_version(self, key: str, expected_version: int, value: Any) -> int | None:
        """Write `value` under `key` only if its stored version is `expected_version` (0: missing).

        Returns the new version, or None when another writer got there first (a stale write: the
        HTTP layer answers 409). The optimistic-concurrency step behind `If-Match`.
        """
        text = dumps(value)
        now = time.time()
        try:
            with self._write() as conn:
                row = conn.execute(
                    select(kv_table.c.version).where(kv_table.c.key == key).with_for_update()
                ).first()
                current = 0 if row is None else int(row.version)
                if current != int(expected_version):
                    return None
                if row is None:
                    conn.execute(
                        insert(kv_table).values(key=key, value=text, version=1, updated_at=now)
                    )
                    return 1
                conn.execute(
                    update(kv_table)
                    .where(kv_table.c.key == key, kv_table.c.version == current)
                    .values(value=text, version=current + 1, updated_at=now)
                )
                return current + 1
        except IntegrityError:  # another process inserted the key first
            return None

    def version_of(self, key: str) -> int:
        """The version of `key` alone (0 when missing): a one-column read for change polling."""
        with self._read() as conn:
            row = conn.execute(select(kv_table.c.version).where(kv_table.c.key == key)).first()
        return 0 if row is None else int(row.version)

    def delete(self, key: str) -> None:
        """Remove `key` (no error when it is missing)."""
        with self._write() as conn:
            conn.execute(kv_table.delete().where(kv_table.c.key == key))
