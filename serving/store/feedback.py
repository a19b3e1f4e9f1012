"""Labelled feedback and served requests' features: joined, they are retraining data.

`serving_feedback` is idempotent on `request_id`, so a client that retries its feedback call does
not count twice; `feedback_since` rebuilds the evaluation windows after a restart.
`serving_served_requests` is bounded in age and count (`prune_served`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from serving.store.codec import dumps, finite_or_none
from serving.store.engine import StoreEngine
from serving.store.tables import feedback_table, served_table


class FeedbackTables(StoreEngine):
    """`serving_feedback` and `serving_served_requests`."""

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
                "features": dumps(dict(r["features"])),
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
        randomised: bool = False,
    ) -> bool:
        """Store the true label (and optional 1..10 rating) for one answered request.

        `arm` is the arm that answered ("classic" or "ensemble"), `predicted` its label,
        `shadow_predicted` the ensemble's shadow prediction for a classic-served request (None if
        there was none). Idempotent on `request_id`: returns True when stored, False when that
        request's feedback was already recorded (the first record is kept unchanged).
        `randomised`: the split chose the arm, so the label is A/B evidence; False unless the
        caller knows it (fails closed: a label of unknown assignment is never compared).
        """
        values = {
            "request_id": str(request_id),
            "arm": str(arm),
            "predicted": str(predicted),
            "label": str(label),
            "rating": None if rating is None else int(rating),
            "latency_ms": finite_or_none(latency_ms),
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
