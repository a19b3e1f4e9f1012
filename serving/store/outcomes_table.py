"""Answered requests, shadow labels and live input rows: what every replica's evaluation sums."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, insert, select

from serving.store.codec import dumps, finite_or_none
from serving.store.engine import StoreEngine
from serving.store.tables import drift_rows_table, requests_table, shadow_table


class OutcomeTables(StoreEngine):
    """`serving_requests`, `serving_shadow` and `serving_drift_rows`."""

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
                "latency_ms": finite_or_none(r.get("latency_ms")),
                "cpu_seconds": finite_or_none(r.get("cpu_seconds")),
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

    def record_drift_rows(self, replica: str, rows: Sequence[Sequence[float]], at: float) -> None:
        """One batch of a replica's recent input rows (code matrix rows) for the shared window."""
        if not len(rows):
            return
        values = {
            "created_at": float(at),
            "replica": str(replica)[:100],
            "n": len(rows),
            "rows": dumps(rows),
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
