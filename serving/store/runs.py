"""Append-only logs: rollout decisions and retraining runs, each a JSON record with its evidence."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import insert, select

from serving.store.codec import dumps
from serving.store.engine import StoreEngine
from serving.store.tables import decisions_table, retraining_runs_table


class RunLogs(StoreEngine):
    """`serving_decisions` and `serving_retraining_runs`."""

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
                    record=dumps(record),
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
                    record=dumps(record),
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
