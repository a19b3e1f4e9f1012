"""The ten tables of the shared state (SQLAlchemy 2 Core), one `MetaData` for all of them.

Every table family's module reads and writes its own tables; the engine creates them all at once
and adds columns that shipped after a table did (`ADDED_COLUMNS`).
"""

from __future__ import annotations

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text

PREFERENCE_MODELS = ("classic", "ensemble", "auto")
"""The values `set_preference` accepts."""


metadata = MetaData()

kv_table = Table(
    "serving_kv",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("value", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("updated_at", Float, nullable=False),
)

feedback_table = Table(
    "serving_feedback",
    metadata,
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
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", Float, nullable=False, index=True),
    Column("action", String(50), nullable=True),
    Column("record", Text, nullable=False),
)

preferences_table = Table(
    "serving_preferences",
    metadata,
    Column("user_id", String(200), primary_key=True),
    Column("model", String(20), nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("change", Integer, nullable=True, index=True),
)

leases_table = Table(
    "serving_leases",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("term", Integer, nullable=False),
)

requests_table = Table(
    "serving_requests",
    metadata,
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
    metadata,
    Column("request_id", String(200), primary_key=True),
    Column("label", String(200), nullable=False),
    Column("created_at", Float, nullable=False, index=True),
)

served_table = Table(
    "serving_served_requests",
    metadata,
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
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("started_at", Float, nullable=False, index=True),
    Column("outcome", String(20), nullable=True),
    Column("record", Text, nullable=False),
)

drift_rows_table = Table(
    "serving_drift_rows",
    metadata,
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

ADDED_COLUMNS: dict[str, dict[str, str]] = {
    "serving_preferences": {"change": "INTEGER"},
    "serving_feedback": {
        "replica": "VARCHAR(100)",
        "model_version": "VARCHAR(200)",
        "randomised": "INTEGER",
    },
}
"""Nullable columns added after a table first shipped: created on stores made before them."""
