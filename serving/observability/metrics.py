"""Prometheus metrics of the router and the model services (prometheus-client).

BentoML runs prometheus-client in multiprocess mode, so these series from every process of the
graph appear together on /metrics. Gauges declare how processes combine.

Names follow the Prometheus conventions (https://prometheus.io/docs/practices/naming/): every
metric of the application starts with `tabular_` (then the part that records it: `router_`,
`ensemble_`, `rollout_`, `drift_`, ...), names carry base units (`_seconds`, `_rows`), shares are
0..1 `_ratio` gauges, and `_total` ends every counter and nothing else. BentoML's own `bentoml_*`
series and prometheus-client's `process_*` / `python_*` ones keep their names.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

REQUESTS = Counter(
    "tabular_router_requests_total",
    "Instances answered by the router, by endpoint, arm and outcome",
    ["endpoint", "arm", "outcome"],
)
DECISIONS = Counter(
    "tabular_router_decisions_total", "Routing decisions by the rule that made them", ["reason"]
)
LATENCY = Histogram(
    "tabular_router_arm_latency_seconds",
    "Time to get an arm's answer (cache hits excluded)",
    ["arm"],
    buckets=LATENCY_BUCKETS,
)
FALLBACKS = Counter(
    "tabular_router_fallbacks_total",
    "Requests meant for the ensemble answered by classic, by cause",
    ["cause"],
)
BREAKER_STATE = Gauge(
    "tabular_router_breaker_state",
    "Ensemble circuit breaker: 0 closed, 1 half-open, 2 open",
    multiprocess_mode="mostrecent",
)
BREAKER_TRANSITIONS = Counter(
    "tabular_router_breaker_transitions_total", "Breaker state changes", ["to"]
)
ROLLOUT_PERCENTAGE = Gauge(
    "tabular_router_rollout_ratio",
    "Share of traffic the ensemble flag in force splits to the ensemble (0..1)",
    multiprocess_mode="mostrecent",
)
ENSEMBLE_ENABLED = Gauge(
    "tabular_router_ensemble_enabled",
    "1 unless the kill switch is thrown",
    multiprocess_mode="mostrecent",
)
ENSEMBLE_READY = Gauge(
    "tabular_router_ensemble_ready",
    "1 when the router sees the ensemble ready",
    multiprocess_mode="mostrecent",
)
FLAG_RELOADS = Counter(
    "tabular_router_flag_reloads_total",
    "Flag config reloads by source and result",
    ["source", "result"],
)
CACHE = Counter("tabular_router_cache_lookups_total", "Prediction cache lookups", ["result"])
SHADOW = Counter(
    "tabular_router_shadow_requests_total", "Shadow copies to the ensemble by outcome", ["outcome"]
)
SHADOW_AGREEMENT = Counter(
    "tabular_router_shadow_agreement_total",
    "Shadow comparisons by classic's label and whether the ensemble agreed",
    ["label", "agree"],
)
SHADOW_PROB_DIFF = Histogram(
    "tabular_router_shadow_probability_abs_diff",
    "Mean absolute difference of class probabilities, classic vs ensemble",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0),
)
SHADOW_LATENCY = Histogram(
    "tabular_router_shadow_latency_seconds",
    "Ensemble latency of shadow copies",
    buckets=LATENCY_BUCKETS,
)
ADMISSION_REJECTED = Counter(
    "tabular_router_rejected_requests_total", "Requests refused by admission control", ["reason"]
)

MEMBER_LATENCY = Histogram(
    "tabular_ensemble_member_latency_seconds",
    "Per-member prediction time per batch",
    ["member"],
    buckets=LATENCY_BUCKETS,
)
ENSEMBLE_BATCH_ROWS = Histogram(
    "tabular_ensemble_batch_rows",
    "Rows per ensemble prediction call (after adaptive batching)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
ENSEMBLE_CALL_ROWS = Histogram(
    "tabular_router_ensemble_call_rows",
    "Rows per call from the router to the ensemble service (after coalescing)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
CASCADE_ROWS = Counter(
    "tabular_cascade_rows_total",
    "Rows the ensemble service answered through the cascade (dynamic selection)",
)
CASCADE_ESCALATED = Counter(
    "tabular_cascade_escalated_total",
    "Cascade rows the first stage was unsure of, answered by the full ensemble (escalation rate: "
    "rate(tabular_cascade_escalated_total) / rate(tabular_cascade_rows_total))",
)
ENSEMBLE_DEGRADED = Gauge(
    "tabular_ensemble_degraded",
    "1 when a member could not be loaded",
    multiprocess_mode="mostrecent",
)

FEEDBACK = Counter(
    "tabular_router_feedback_total",
    "Ground-truth labels joined to served predictions",
    ["arm", "correct"],
)
LIVE_ACCURACY = Gauge(
    "tabular_live_accuracy_ratio",
    "Accuracy (0..1) on labelled requests in the rolling window",
    ["arm"],
    multiprocess_mode="mostrecent",
)
GO_NO_GO_SCORE = Gauge(
    "tabular_rollout_go_no_go_score",
    "Weighted go/no-go score of the ensemble (0..1)",
    multiprocess_mode="mostrecent",
)
ROLLOUT_STAGE = Gauge(
    "tabular_rollout_stage_ratio",
    "Share of traffic the rollout controller's stage sends to the ensemble (0..1)",
    multiprocess_mode="mostrecent",
)
SAMPLE_RATIO_MISMATCH = Gauge(
    "tabular_sample_ratio_mismatch",
    "1 when the observed split differs from the configured one (sequential SRM check); alert",
    ["scope"],
    multiprocess_mode="mostrecent",
)
ROLLOUT_DECISIONS = Counter(
    "tabular_rollout_decisions_total", "Rollout controller evaluations by action", ["action"]
)
DRIFT_PSI = Gauge(
    "tabular_drift_psi",
    "Population stability index of each input feature vs training",
    ["feature"],
    multiprocess_mode="mostrecent",
)
DRIFT_DETECTED = Gauge(
    "tabular_drift_detected", "1 when any input feature has drifted", multiprocess_mode="mostrecent"
)
GC_PAUSE = Histogram(
    "tabular_gc_pause_seconds",
    "Garbage-collector pauses of the serving processes, by generation",
    ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
OUTCOMES_DROPPED = Counter(
    "tabular_router_outcomes_dropped_total",
    "Request outcomes dropped because the shared store stayed unreachable past the buffer bound",
)
OUTCOMES_PENDING = Gauge(
    "tabular_router_outcomes_pending",
    "Request outcomes and shadow labels waiting to be written to the shared store",
    multiprocess_mode="livesum",
)
LEADER = Gauge(
    "tabular_rollout_leader",
    "1 on the replica that holds the rollout controller's lease",
    multiprocess_mode="livesum",
)

# Versions on trial and experiments (serving/routing/versions.py, serving/delivery/challenger.py)
CHALLENGER_SHADOW = Counter(
    "tabular_challenger_shadow_comparisons_total",
    "Shadow comparisons of the ensemble version on trial with the champion, by agreement",
    ["agree"],
)
CHALLENGER_STAGE = Gauge(
    "tabular_challenger_stage",
    "1 for the stage the ensemble version on trial is in (shadow, ab, promoted, rejected, "
    "rolled_back)",
    ["version", "stage"],
    multiprocess_mode="livemax",
)
VARIANT_ACCURACY = Gauge(
    "tabular_variant_accuracy",
    "Accuracy of each experiment variant on its labelled feedback (leader's evaluation)",
    ["experiment", "variant"],
    multiprocess_mode="livemax",
)
VARIANT_LABELLED = Gauge(
    "tabular_variant_labelled_requests",
    "Labelled requests of each experiment variant in the evaluation",
    ["experiment", "variant"],
    multiprocess_mode="livemax",
)

# Retraining from feedback (serving/delivery/retraining.py)
RETRAINING_RUNS = Counter(
    "tabular_retraining_runs_total",
    "Retraining runs by outcome (accepted: a new version saved; refused: worse than its parent "
    "or a check failed; failed: an error or the timeout)",
    ["outcome"],
)
RETRAINING_DURATION = Histogram(
    "tabular_retraining_duration_seconds",
    "Wall time of retraining runs (the training subprocess, start to record)",
    buckets=(10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
)
RETRAINING_LAST_RUN = Gauge(
    "tabular_retraining_last_run_timestamp_seconds",
    "When the last retraining run finished (Unix time)",
    multiprocess_mode="max",
)

# Versions over time (set by serving/observability/model_metrics.py)
MEMBER_WEIGHT = Gauge(
    "tabular_ensemble_member_weight",
    "Soft-vote weight of each ensemble member, per served or trial version",
    ["version", "member"],
    multiprocess_mode="livemax",
)
MEMBER_ACCURACY = Gauge(
    "tabular_ensemble_member_accuracy",
    "Test-split accuracy of each ensemble member at training, per served or trial version",
    ["version", "member"],
    multiprocess_mode="livemax",
)
IMPORTANCE_RANK_CORRELATION = Gauge(
    "tabular_feature_importance_rank_correlation",
    "Spearman rank correlation of a version's feature importances with its parent's",
    ["version", "parent"],
    multiprocess_mode="livemax",
)

# Counters whose labels are known up front start at zero, so dashboards and alerts see them at once.
for _outcome in ("accepted", "refused", "failed"):
    RETRAINING_RUNS.labels(outcome=_outcome)
for _agree in ("true", "false"):
    CHALLENGER_SHADOW.labels(agree=_agree)
