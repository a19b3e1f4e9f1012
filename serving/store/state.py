"""The router's durable state behind one facade: SQLite by default, PostgreSQL when shared.

`StateStore(url)` composes one class per table family (ten tables, SQLAlchemy 2 Core, no ORM):

- `kv.KvTable`: `serving_kv`, JSON values by key with a version counter (flags, pins, the rollout
  stage under "rollout"), compare-and-set so replicas racing to promote have exactly one winner.
- `lease.LeaseTable`: `serving_leases`, the one-writer leases (rollout controller, retraining).
- `outcomes_table.OutcomeTables`: `serving_requests`, `serving_shadow`, `serving_drift_rows`,
  the answered requests, shadow labels and live inputs every replica's evaluation sums.
- `feedback.FeedbackTables`: `serving_feedback` (idempotent on `request_id`) and
  `serving_served_requests` (features by signed request id): joined, they are retraining data.
- `runs.RunLogs`: `serving_decisions` (the rollout decision log) and `serving_retraining_runs`.
- `preferences.PreferenceTable`: `serving_preferences`, a user's chosen model for opt-in betas.

Callers that need one family depend on its narrow Protocol (`KvStore`, `LeaseStore`,
`OutcomeStore`, `PinStore`, ...); this class is what the composition root opens.

Values are stored as JSON text, so anything `json` can write (plus numpy scalars and arrays,
dataclasses and pydantic models, converted on the way in) round-trips as plain Python data;
non-finite floats are stored as null so that every record stays valid JSON for HTTP answers.
"""

from __future__ import annotations

from serving.store.feedback import FeedbackTables
from serving.store.kv import KvTable
from serving.store.lease import LeaseTable
from serving.store.outcomes_table import OutcomeTables
from serving.store.preferences import PreferenceTable
from serving.store.runs import RunLogs


class StateStore(KvTable, LeaseTable, OutcomeTables, FeedbackTables, RunLogs, PreferenceTable):
    """Durable key/value state, leases, outcomes, feedback, logs and user preferences."""
