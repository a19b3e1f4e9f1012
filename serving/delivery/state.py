"""The router's durable state behind one small interface: SQLite by default, PostgreSQL when shared.

`StateStore(url)` keeps four things, each in its own table (SQLAlchemy 2 Core, no ORM):

- `serving_kv`: JSON values by key with a version counter (the rollout stage lives under
  "rollout"); `compare_and_set` is the atomic step that lets several router replicas race to
  promote and have exactly one win.
- `serving_feedback`: one row per labelled request, idempotent on `request_id`, so a client that
  retries its feedback call does not count twice; `feedback_since` rebuilds the evaluation
  windows after a restart.
- `serving_decisions`: the rollout decision log, each entry a JSON record with its evidence.
- `serving_preferences`: a user's chosen model (classic | ensemble | auto) for opt-in betas.
- `serving_served_requests`: the features of served requests (no user id) by signed request id,
  bounded in age and count (`prune_served`); joined with feedback they are retraining data.
- `serving_retraining_runs`: the record of every retraining run (accepted, refused or failed).

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

import json
import math
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool

PREFERENCE_MODELS = ("classic", "ensemble", "auto")
"""The values `set_preference` accepts."""

_metadata = MetaData()

kv_table = Table(
    "serving_kv",
    _metadata,
    Column("key", String(200), primary_key=True),
    Column("value", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("updated_at", Float, nullable=False),
)

feedback_table = Table(
    "serving_feedback",
    _metadata,
    Column("request_id", String(200), primary_key=True),
    Column("arm", String(50), nullable=False),
    Column("predicted", String(200), nullable=False),
    Column("label", String(200), nullable=False),
    Column("rating", Integer, nullable=True),
    Column("latency_ms", Float, nullable=True),
    Column("shadow_predicted", String(200), nullable=True),
    Column("created_at", Float, nullable=False, index=True),
    Column("replica", String(100), nullable=True),
    Column("model_version", String(200), nullable=True),
    Column("randomised", Integer, nullable=True),
)

decisions_table = Table(
    "serving_decisions",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", Float, nullable=False, index=True),
    Column("action", String(50), nullable=True),
    Column("record", Text, nullable=False),
)

preferences_table = Table(
    "serving_preferences",
    _metadata,
    Column("user_id", String(200), primary_key=True),
    Column("model", String(20), nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("change", Integer, nullable=True, index=True),
)

leases_table = Table(
    "serving_leases",
    _metadata,
    Column("name", String(100), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("term", Integer, nullable=False),
)

requests_table = Table(
    "serving_requests",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", Float, nullable=False, index=True),
    Column("arm", String(50), nullable=False),
    Column("latency_ms", Float, nullable=True),
    Column("cpu_seconds", Float, nullable=True),
    Column("error", Integer, nullable=False),
    Column("fallback", Integer, nullable=False),
    Column("cached", Integer, nullable=False),
    Column("replica", String(100), nullable=False),
)

shadow_table = Table(
    "serving_shadow",
    _metadata,
    Column("request_id", String(200), primary_key=True),
    Column("label", String(200), nullable=False),
    Column("created_at", Float, nullable=False, index=True),
)

served_table = Table(
    "serving_served_requests",
    _metadata,
    Column("request_id", String(200), primary_key=True),
    Column("created_at", Float, nullable=False, index=True),
    Column("arm", String(50), nullable=False),
    Column("model_version", String(200), nullable=True),
    Column("predicted", String(200), nullable=False),
    Column("features", Text, nullable=False),
)
"""Served requests' features (JSON of the feature dict the client sent; no user id), kept so
labelled feedback becomes training data. Bounded by `prune_served` (age and row count)."""

retraining_runs_table = Table(
    "serving_retraining_runs",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("started_at", Float, nullable=False, index=True),
    Column("outcome", String(20), nullable=True),
    Column("record", Text, nullable=False),
)

drift_rows_table = Table(
    "serving_drift_rows",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", Float, nullable=False, index=True),
    Column("replica", String(100), nullable=False),
    Column("n", Integer, nullable=False),
    Column("rows", Text, nullable=False),
)
"""Batches of live input rows (encoded codes, NaN as null) from every replica: the drift window
is the newest of them, so drift is judged on all replicas' inputs, not one replica's share."""

PREFERENCE_CHANGE_KEY = "preferences.change"
"""The kv counter that numbers preference writes, so replicas fetch only what changed."""

_ADDED_COLUMNS: dict[str, dict[str, str]] = {
    "serving_preferences": {"change": "INTEGER"},
    "serving_feedback": {
        "replica": "VARCHAR(100)",
        "model_version": "VARCHAR(200)",
        "randomised": "INTEGER",
    },
}
"""Nullable columns added after a table first shipped: created on stores made before them."""


class StateStore:
    """Durable key/value state, feedback, rollout decisions and user preferences.

    Values are stored as JSON text, so anything `json` can write (plus numpy scalars and arrays,
    dataclasses and pydantic models, converted on the way in) round-trips as plain Python data;
    non-finite floats are stored as null so that every record stays valid JSON for HTTP answers.
    """

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
            _metadata.create_all(self._engine)
            self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Older stores lack the nullable columns added since: add them (a one-step migration)."""
        with self._engine.connect() as conn, conn.begin():
            existing = inspect(conn)
            for table, columns in _ADDED_COLUMNS.items():
                have = {c["name"] for c in existing.get_columns(table)}
                for name, sql_type in columns.items():
                    if name not in have:
                        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}")

    # ------------------------------------------------------------------ plumbing
    def _guard(self):
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

    def _dialect_insert(self, table: Table):
        """INSERT with ON CONFLICT support (SQLite and PostgreSQL), or None elsewhere."""
        if self.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        elif self.is_postgresql:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            return None
        return dialect_insert(table)

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

    # ------------------------------------------------------------------ key/value
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
        text = _dumps(value)
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
        text = _dumps(new)
        # Compare in the stored form so that e.g. tuples and lists, or numpy and Python numbers,
        # compare equal the way they will be read back.
        expected_value = json.loads(_dumps(expected))
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
        text = _dumps(value)
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

    # ------------------------------------------------------------------ leases
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

    # ------------------------------------------------------------------ request outcomes
    def record_requests(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append answered requests (arm, latency_ms, cpu_seconds, error, fallback, cached,
        created_at, replica) in one transaction: replicas flush these in small batches, so the
        evaluation sums every replica's traffic."""
        if not rows:
            return
        values = [
            {
                "created_at": float(r["created_at"]),
                "arm": str(r["arm"]),
                "latency_ms": _finite_or_none(r.get("latency_ms")),
                "cpu_seconds": _finite_or_none(r.get("cpu_seconds")),
                "error": int(bool(r.get("error"))),
                "fallback": int(bool(r.get("fallback"))),
                "cached": int(bool(r.get("cached"))),
                "replica": str(r.get("replica", ""))[:100],
            }
            for r in rows
        ]
        with self._write() as conn:
            conn.execute(insert(requests_table), values)

    def requests_since(self, since: float, per_arm_limit: int) -> list[dict]:
        """The newest `per_arm_limit` requests of each arm created at or after `since`, oldest
        first (what the evaluation windows hold)."""
        with self._read() as conn:
            arms = conn.execute(
                select(requests_table.c.arm)
                .where(requests_table.c.created_at >= float(since))
                .distinct()
            ).all()
            out: list[dict] = []
            for (arm,) in arms:
                rows = conn.execute(
                    select(requests_table)
                    .where(requests_table.c.arm == arm, requests_table.c.created_at >= float(since))
                    .order_by(requests_table.c.id.desc())
                    .limit(int(per_arm_limit))
                ).mappings()
                out.extend(dict(r) for r in rows)
        out.sort(key=lambda r: (r["created_at"], r["id"]))
        return out

    def record_shadow_labels(self, items: Sequence[tuple[str, str, float]]) -> None:
        """(request_id, shadow label, created_at) of shadow predictions: joins on any replica."""
        if not items:
            return
        rows = [{"request_id": i, "label": lab, "created_at": float(t)} for i, lab, t in items]
        with self._write() as conn:
            statement = self._dialect_insert(shadow_table)
            if statement is not None:
                conn.execute(statement.on_conflict_do_nothing(index_elements=["request_id"]), rows)
            else:
                conn.execute(insert(shadow_table), rows)

    def shadow_label(self, request_id: str) -> str | None:
        with self._read() as conn:
            row = conn.execute(
                select(shadow_table.c.label).where(shadow_table.c.request_id == request_id)
            ).first()
        return None if row is None else str(row.label)

    def prune(self, before: float) -> int:
        """Delete request outcomes and shadow labels older than `before`; returns rows deleted."""
        with self._write() as conn:
            deleted = conn.execute(
                delete(requests_table).where(requests_table.c.created_at < float(before))
            ).rowcount
            deleted += conn.execute(
                delete(shadow_table).where(shadow_table.c.created_at < float(before))
            ).rowcount
        return int(deleted or 0)

    # ------------------------------------------------------------------ served requests
    def record_served(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Keep served requests' features: {request_id, created_at, arm, model_version, predicted,
        features (the feature dict the client sent)} in one transaction; a request id already kept
        is ignored (flush retries and replicas never duplicate a row)."""
        if not rows:
            return
        values = [
            {
                "request_id": str(r["request_id"])[:200],
                "created_at": float(r["created_at"]),
                "arm": str(r["arm"])[:50],
                "model_version": None
                if r.get("model_version") is None
                else str(r["model_version"])[:200],
                "predicted": str(r["predicted"])[:200],
                "features": _dumps(dict(r["features"])),
            }
            for r in rows
        ]
        with self._write() as conn:
            statement = self._dialect_insert(served_table)
            if statement is not None:
                ignore = statement.on_conflict_do_nothing(index_elements=["request_id"])
                conn.execute(ignore, values)
                return
            for value in values:  # other back ends: one row at a time, duplicates skipped
                exists = conn.execute(
                    select(served_table.c.request_id).where(
                        served_table.c.request_id == value["request_id"]
                    )
                ).first()
                if exists is None:
                    conn.execute(insert(served_table).values(**value))

    def labelled_requests(self, since: float, limit: int) -> list[dict]:
        """Served requests created at or after `since` that have feedback: the newest `limit`,
        oldest first, each {request_id, features (dict), label, predicted, arm, model_version,
        created_at}."""
        s, f = served_table, feedback_table
        with self._read() as conn:
            rows = conn.execute(
                select(
                    s.c.request_id,
                    s.c.features,
                    f.c.label,
                    s.c.predicted,
                    s.c.arm,
                    s.c.model_version,
                    s.c.created_at,
                )
                .join(f, f.c.request_id == s.c.request_id)
                .where(s.c.created_at >= float(since))
                .order_by(s.c.created_at.desc(), s.c.request_id.desc())
                .limit(max(int(limit), 0))
            ).all()
        out = [
            {
                "request_id": str(r.request_id),
                "features": json.loads(r.features),
                "label": str(r.label),
                "predicted": str(r.predicted),
                "arm": str(r.arm),
                "model_version": r.model_version,
                "created_at": float(r.created_at),
            }
            for r in rows
        ]
        out.reverse()
        return out

    def served_count(self) -> int:
        """How many served requests are kept."""
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(served_table)).scalar_one())

    def prune_served(self, before: float, max_rows: int) -> int:
        """Delete served requests older than `before`, then the oldest beyond `max_rows`;
        returns rows deleted."""
        s = served_table
        with self._write() as conn:
            deleted = conn.execute(delete(s).where(s.c.created_at < float(before))).rowcount or 0
            excess = (
                select(s.c.request_id)
                .order_by(s.c.created_at.desc(), s.c.request_id.desc())
                .offset(max(int(max_rows), 0))
                .scalar_subquery()
            )
            deleted += conn.execute(delete(s).where(s.c.request_id.in_(excess))).rowcount or 0
        return int(deleted)

    # ------------------------------------------------------------------ retraining runs
    def record_retraining_run(self, run: Mapping[str, Any]) -> None:
        """Append one retraining run's record (JSON-able; `started_at` epoch seconds, `outcome`)."""
        record = dict(run)
        started = record.get("started_at")
        started_at = (
            float(started)
            if isinstance(started, (int, float)) and math.isfinite(started)
            else time.time()
        )
        outcome = record.get("outcome")
        with self._write() as conn:
            conn.execute(
                insert(retraining_runs_table).values(
                    started_at=started_at,
                    outcome=None if outcome is None else str(outcome)[:20],
                    record=_dumps(record),
                )
            )

    def retraining_runs(self, limit: int = 50) -> list[dict]:
        """The newest `limit` retraining runs, newest first (each its record plus `row_id`)."""
        t = retraining_runs_table
        with self._read() as conn:
            rows = conn.execute(
                select(t.c.id, t.c.record)
                .order_by(t.c.started_at.desc(), t.c.id.desc())
                .limit(max(int(limit), 0))
            ).all()
        out = []
        for row in rows:
            item = json.loads(row.record)
            item["row_id"] = int(row.id)
            out.append(item)
        return out

    # ------------------------------------------------------------------ drift inputs
    def record_drift_rows(self, replica: str, rows: Sequence[Sequence[float]], at: float) -> None:
        """One batch of a replica's recent input rows (code matrix rows) for the shared window."""
        if not len(rows):
            return
        values = {
            "created_at": float(at),
            "replica": str(replica)[:100],
            "n": len(rows),
            "rows": _dumps(rows),
        }
        with self._write() as conn:
            conn.execute(insert(drift_rows_table).values(**values))

    def drift_rows(self, limit: int) -> list[list[float | None]]:
        """The newest `limit` input rows over every replica, oldest first (None = missing)."""
        first = self._drift_cutoff(limit)
        if first is None:
            return []
        with self._read() as conn:
            batches = conn.execute(
                select(drift_rows_table.c.rows)
                .where(drift_rows_table.c.id >= first)
                .order_by(drift_rows_table.c.id)
            ).all()
        rows = [row for (text,) in batches for row in json.loads(text)]
        return rows[-int(limit) :]

    def prune_drift_rows(self, keep_rows: int) -> int:
        """Delete the batches older than the newest `keep_rows` rows; returns batches deleted."""
        first = self._drift_cutoff(keep_rows)
        if first is None:
            return 0
        with self._write() as conn:
            deleted = conn.execute(
                delete(drift_rows_table).where(drift_rows_table.c.id < first)
            ).rowcount
        return int(deleted or 0)

    def _drift_cutoff(self, rows: int) -> int | None:
        """The id of the oldest batch needed for the newest `rows` rows (None: no batch)."""
        with self._read() as conn:
            sizes = conn.execute(
                select(drift_rows_table.c.id, drift_rows_table.c.n).order_by(
                    drift_rows_table.c.id.desc()
                )
            ).all()
        total, first = 0, None
        for batch_id, n in sizes:
            total, first = total + int(n), int(batch_id)
            if total >= rows:
                break
        return first

    # ------------------------------------------------------------------ feedback
    def record_feedback(
        self,
        request_id: str,
        arm: str,
        predicted: str,
        label: str,
        rating: int | None,
        latency_ms: float | None,
        shadow_predicted: str | None,
        created_at: float,
        replica: str | None = None,
        model_version: str | None = None,
        randomised: bool = True,
    ) -> bool:
        """Store the true label (and optional 1..10 rating) for one answered request.

        `arm` is the arm that answered ("classic" or "ensemble"), `predicted` its label,
        `shadow_predicted` the ensemble's shadow prediction for a classic-served request (None if
        there was none). Idempotent on `request_id`: returns True when stored, False when that
        request's feedback was already recorded (the first record is kept unchanged).
        """
        values = {
            "request_id": str(request_id),
            "arm": str(arm),
            "predicted": str(predicted),
            "label": str(label),
            "rating": None if rating is None else int(rating),
            "latency_ms": _finite_or_none(latency_ms),
            "shadow_predicted": None if shadow_predicted is None else str(shadow_predicted),
            "created_at": float(created_at),
            "replica": None if replica is None else str(replica)[:100],
            "model_version": None if model_version is None else str(model_version)[:200],
            "randomised": int(bool(randomised)),
        }
        try:
            with self._write() as conn:
                statement = self._dialect_insert(feedback_table)
                if statement is not None:
                    statement = (
                        statement.values(**values)
                        .on_conflict_do_nothing(index_elements=["request_id"])
                        .returning(feedback_table.c.request_id)
                    )
                    # RETURNING yields the row only when it was inserted (rowcount is not
                    # reliable for ON CONFLICT on every driver).
                    return conn.execute(statement).first() is not None
                conn.execute(insert(feedback_table).values(**values))
                return True
        except IntegrityError:  # other back ends: the primary key says it is a duplicate
            return False

    def feedback_since(self, since: float) -> list[dict]:
        """Feedback rows created at or after `since` (epoch seconds), oldest first.

        Each row has the stored columns plus `correct` (predicted == label) and `shadow_correct`
        (shadow_predicted == label, None without a shadow prediction), ready to replay into the
        evaluation windows (`EvaluationWindows.replay_feedback`).
        """
        with self._read() as conn:
            rows = (
                conn.execute(
                    select(feedback_table)
                    .where(feedback_table.c.created_at >= float(since))
                    .order_by(feedback_table.c.created_at, feedback_table.c.request_id)
                )
                .mappings()
                .all()
            )
        out = []
        for row in rows:
            item = dict(row)
            item["correct"] = item["predicted"] == item["label"]
            item["randomised"] = bool(item["randomised"])  # NULL: stored before the bit
            item["shadow_correct"] = (
                None
                if item["shadow_predicted"] is None
                else item["shadow_predicted"] == item["label"]
            )
            out.append(item)
        return out

    # ------------------------------------------------------------------ decision log
    def append_decision(self, record: Mapping[str, Any]) -> None:
        """Append one rollout decision (a JSON-able mapping with its evidence) to the log.

        Timestamped with `record["at"]` when present (the controller's clock), else now.
        """
        record = dict(record)
        at = record.get("at")
        created_at = (
            float(at) if isinstance(at, (int, float)) and math.isfinite(at) else time.time()
        )
        action = record.get("action")
        with self._write() as conn:
            conn.execute(
                insert(decisions_table).values(
                    created_at=created_at,
                    action=None if action is None else str(action)[:50],
                    record=_dumps(record),
                )
            )

    def decisions(self, limit: int = 50) -> list[dict]:
        """The newest `limit` decisions, newest first: each record plus `id` and `created_at`."""
        with self._read() as conn:
            rows = conn.execute(
                select(decisions_table.c.id, decisions_table.c.created_at, decisions_table.c.record)
                .order_by(decisions_table.c.id.desc())
                .limit(max(int(limit), 0))
            ).all()
        out = []
        for row in rows:
            item = json.loads(row.record)
            item["id"] = int(row.id)
            item["created_at"] = float(row.created_at)
            out.append(item)
        return out

    # ------------------------------------------------------------------ preferences
    def set_preference(self, user_id: str, model: str) -> None:
        """Store a user's model choice: "classic", "ensemble" or "auto" (ValueError otherwise)."""
        if model not in PREFERENCE_MODELS:
            raise ValueError(f"model must be one of {PREFERENCE_MODELS}, got {model!r}")
        now = time.time()
        with self._write() as conn:
            change = self._next_change(conn, now)
            self._upsert(
                conn,
                preferences_table,
                {"user_id": str(user_id), "model": model, "updated_at": now, "change": change},
                key="user_id",
                changes={"model": model, "updated_at": now, "change": change},
            )

    def _next_change(self, conn: Connection, now: float) -> int:
        """Bump the preference change counter inside the caller's transaction (the row stays
        locked until commit, so change numbers are committed in order)."""
        statement = self._dialect_insert(kv_table)
        values = {"key": PREFERENCE_CHANGE_KEY, "value": "null", "version": 1, "updated_at": now}
        if statement is not None:  # one atomic upsert: concurrent first writers cannot collide
            bumped = statement.values(**values).on_conflict_do_update(
                index_elements=["key"],
                set_={"version": kv_table.c.version + 1, "updated_at": now},
            )
            return int(conn.execute(bumped.returning(kv_table.c.version)).scalar_one())
        self._upsert(
            conn,
            kv_table,
            values,
            key="key",
            changes={"version": kv_table.c.version + 1, "updated_at": now},
        )
        return int(
            conn.execute(
                select(kv_table.c.version).where(kv_table.c.key == PREFERENCE_CHANGE_KEY)
            ).scalar_one()
        )

    def get_preference(self, user_id: str) -> str | None:
        """The user's stored model choice, or None when they never chose."""
        with self._read() as conn:
            row = conn.execute(
                select(preferences_table.c.model).where(preferences_table.c.user_id == str(user_id))
            ).first()
        return None if row is None else str(row.model)

    def all_preferences(self, limit: int) -> dict[str, str] | None:
        """Every stored choice (user id -> model) in one query, or None when there are more than
        `limit`.
        """
        with self._read() as conn:
            rows = conn.execute(
                select(preferences_table.c.user_id, preferences_table.c.model).limit(limit + 1)
            ).all()
        return None if len(rows) > limit else {str(r.user_id): str(r.model) for r in rows}

    def preference_snapshot(self, limit: int) -> tuple[dict[str, str] | None, int]:
        """Every stored choice (None past `limit`) and the change number it is current to."""
        with self._read() as conn:
            change = conn.execute(
                select(kv_table.c.version).where(kv_table.c.key == PREFERENCE_CHANGE_KEY)
            ).scalar()
            rows = conn.execute(
                select(preferences_table.c.user_id, preferences_table.c.model).limit(limit + 1)
            ).all()
        found = None if len(rows) > limit else {str(r.user_id): str(r.model) for r in rows}
        return found, int(change or 0)

    def preference_changes(self, since: int, limit: int) -> tuple[dict[str, str] | None, int]:
        """Choices written after change number `since` (None when more than `limit`: reload all)
        and the newest change number: the incremental sync every replica runs."""
        with self._read() as conn:
            change = conn.execute(
                select(kv_table.c.version).where(kv_table.c.key == PREFERENCE_CHANGE_KEY)
            ).scalar()
            change = int(change or 0)
            if change <= since:
                return {}, change
            rows = conn.execute(
                select(preferences_table.c.user_id, preferences_table.c.model)
                .where(preferences_table.c.change > int(since))
                .limit(limit + 1)
            ).all()
        found = None if len(rows) > limit else {str(r.user_id): str(r.model) for r in rows}
        return found, change

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Release every pooled connection; the store must not be used afterwards."""
        self._engine.dispose()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"StateStore({self.url!r})"


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


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _plain(value: Any) -> Any:
    """Recursively turn `value` into plain JSON data (non-finite floats become None)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if hasattr(value, "model_dump"):  # pydantic
        return _plain(value.model_dump(mode="json"))
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _plain(value.tolist())
    if hasattr(value, "item"):
        return _plain(value.item())
    raise TypeError(f"cannot store a {type(value).__name__} as JSON")


def _dumps(value: Any) -> str:
    return json.dumps(_plain(value), sort_keys=True, allow_nan=False, separators=(",", ":"))
