"""The database under every table family: engine, dialect, transactions, lifecycle.

URLs: `sqlite:///relative/or/absolute/path.db` (the parent folder is created; WAL journal,
`synchronous=FULL`, a 30 s busy timeout), `sqlite://` or `sqlite:///:memory:` for tests, and
`postgresql+psycopg://user:password@host:5432/db` for a database several replicas share. A bare
file path (no `://`) is taken as a SQLite file.

Every write is one transaction, committed whole or not at all. On SQLite, writing transactions
start with `BEGIN IMMEDIATE` (the write lock is taken up front, so two processes never deadlock
upgrading a read lock) and a process-wide lock serialises this process's own threads; on
PostgreSQL every call checks a connection out of the engine's pool, so the store is thread-safe
on both.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Self

from sqlalchemy import Table, create_engine, event, insert, inspect, update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

from serving.store.tables import ADDED_COLUMNS, metadata


class StoreEngine:
    """An open database with the store's tables: the base every table family builds on."""

    def __init__(self, url: str):
        """Open (and create when missing) the database at `url` and its tables."""
        if "://" not in url:
            url = f"sqlite:///{url}"
        parsed = make_url(url)
        self.url = parsed.render_as_string(hide_password=True)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self.is_postgresql = parsed.get_backend_name() == "postgresql"
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            database = parsed.database or ""
            memory = database in ("", ":memory:") or database.startswith("file::memory:")
            if memory:
                kwargs["poolclass"] = StaticPool  # one shared in-memory database
            else:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
        self._engine: Engine = create_engine(parsed, **kwargs)
        # SQLite: one lock for this process's threads (the file lock handles other processes).
        self._lock = threading.RLock() if self.is_sqlite else None
        if self.is_sqlite:
            _configure_sqlite(self._engine)
        with self._guard():
            metadata.create_all(self._engine)
            self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Older stores lack the nullable columns added since: add them (a one-step migration)."""
        with self._engine.connect() as conn, conn.begin():
            existing = inspect(conn)
            for table, columns in ADDED_COLUMNS.items():
                have = {c["name"] for c in existing.get_columns(table)}
                for name, sql_type in columns.items():
                    if name not in have:
                        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}")

    # ------------------------------------------------------------------ plumbing
    def _guard(self) -> AbstractContextManager[Any]:
        return self._lock if self._lock is not None else nullcontext()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One writing transaction: committed on success, rolled back on any exception."""
        with self._guard():
            with self._engine.connect() as conn:
                if self.is_sqlite:
                    conn = conn.execution_options(sqlite_begin="IMMEDIATE")
                with conn.begin():
                    yield conn

    def _dialect_insert(self, table: Table) -> Any:
        """INSERT with ON CONFLICT support (SQLite and PostgreSQL), or None elsewhere.

        Typed Any: the two dialects' Insert classes share `on_conflict_*` but no typed base.
        """
        if self.is_sqlite:
            from sqlalchemy.dialects import sqlite

            return sqlite.insert(table)
        if self.is_postgresql:
            from sqlalchemy.dialects import postgresql

            return postgresql.insert(table)
        return None

    def _upsert(
        self, conn: Connection, table: Table, values: dict, *, key: str, changes: dict
    ) -> None:
        """Insert `values`, or apply `changes` to the row whose `key` column already matches."""
        statement = self._dialect_insert(table)
        if statement is not None:
            conn.execute(
                statement.values(**values).on_conflict_do_update(index_elements=[key], set_=changes)
            )
            return
        result = conn.execute(update(table).where(table.c[key] == values[key]).values(**changes))
        if result.rowcount == 0:
            conn.execute(insert(table).values(**values))

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """One reading transaction (a consistent snapshot)."""
        with self._guard():
            with self._engine.connect() as conn:
                with conn.begin():
                    yield conn

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Release every pooled connection; the store must not be used afterwards."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def _configure_sqlite(engine: Engine) -> None:
    """WAL, a busy timeout, and SQLAlchemy (not sqlite3) in charge of BEGIN."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # sqlite3 must not emit its own BEGIN
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")  # ignored (stays "memory") in memory
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=30000")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")
