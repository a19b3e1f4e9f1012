"""Users' chosen models (classic | ensemble | auto) for opt-in betas, numbered by change.

Every write bumps a kv counter (`PREFERENCE_CHANGE_KEY`) in the same transaction, so replicas
fetch only what changed since their last sync.
"""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.engine import Connection

from serving.store.engine import StoreEngine
from serving.store.tables import (
    PREFERENCE_CHANGE_KEY,
    PREFERENCE_MODELS,
    kv_table,
    preferences_table,
)


class PreferenceTable(StoreEngine):
    """`serving_preferences`."""

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
