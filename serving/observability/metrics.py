"""Prometheus metrics of the router and the model services (prometheus-client).

BentoML runs prometheus-client in multiprocess mode, so these series from every process of the
graph appear together on /metrics. Gauges declare how processes combine.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

REQUESTS = Counter(
    "router_requests_total",
    "Instances answered by the router, by endpoint, arm and outcome",
    ["endpoint", "arm", "outcome"],
)
DECISIONS = Counter(
    "router_decisions_total", "Routing decisions by the rule that made them", ["reason"]
)
LATENCY = Histogram(
    "router_arm_latency_seconds",
    "Time to get an arm's answer (cache hits excluded)",
    ["arm"],
    buckets=LATENCY_BUCKETS,
)
FALLBACKS = Counter(
    "router_fallbacks_total",
    "Requests meant for the ensemble answered by classic, by cause",
    ["cause"],
)
BREAKER_STATE = Gauge(
    "router_breaker_state",
    "Ensemble circuit breaker: 0 closed, 1 half-open, 2 open",
    multiprocess_mode="mostrecent",
)
BREAKER_TRANSITIONS = Counter("router_breaker_transitions_total", "Breaker state changes", ["to"])
ROLLOUT_PERCENTAGE = Gauge(
    "router_rollout_percentage",
    "Rollout percentage of the ensemble flag in force",
    multiprocess_mode="mostrecent",
)
ENSEMBLE_ENABLED = Gauge(
    "router_ensemble_enabled", "1 unless the kill switch is thrown", multiprocess_mode="mostrecent"
)
ENSEMBLE_READY = Gauge(
    "router_ensemble_ready",
    "1 when the router sees the ensemble ready",
    multiprocess_mode="mostrecent",
)
FLAG_RELOADS = Counter(
    "router_flag_reloads_total", "Flag config reloads by source and result", ["source", "result"]
)
CACHE = Counter("router_cache_total", "Prediction cache lookups", ["result"])
SHADOW = Counter(
    "router_shadow_requests_total", "Shadow copies to the ensemble by outcome", ["outcome"]
)
SHADOW_AGREEMENT = Counter(
    "router_shadow_agreement_total",
    "Shadow comparisons by classic's label and whether the ensemble agreed",
    ["label", "agree"],
)
SHADOW_PROB_DIFF = Histogram(
    "router_shadow_probability_abs_diff",
    "Mean absolute difference of class probabilities, classic vs ensemble",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0),
)
SHADOW_LATENCY = Histogram(
    "router_shadow_latency_seconds", "Ensemble latency of shadow copies", buckets=LATENCY_BUCKETS
)
ADMISSION_REJECTED = Counter(
    "router_rejected_total", "Requests refused by admission control", ["reason"]
)

MEMBER_LATENCY = Histogram(
    "ensemble_member_latency_seconds",
    "Per-member prediction time per batch",
    ["member"],
    buckets=LATENCY_BUCKETS,
)
MEMBER_WEIGHT = Gauge(
    "ensemble_member_weight",
    "Voting weight of each loaded member",
    ["member"],
    multiprocess_mode="mostrecent",
)
ENSEMBLE_BATCH_ROWS = Histogram(
    "ensemble_batch_rows",
    "Rows per ensemble prediction call (after adaptive batching)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
ENSEMBLE_CALL_ROWS = Histogram(
    "router_ensemble_call_rows",
    "Rows per call from the router to the ensemble service (after coalescing)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
ENSEMBLE_DEGRADED = Gauge(
    "ensemble_degraded", "1 when a member could not be loaded", multiprocess_mode="mostrecent"
)

FEEDBACK = Counter(
    "router_feedback_total", "Ground-truth labels joined to served predictions", ["arm", "correct"]
)
LIVE_ACCURACY = Gauge(
    "live_accuracy",
    "Accuracy on labelled requests in the rolling window",
    ["arm"],
    multiprocess_mode="mostrecent",
)
GO_NO_GO_SCORE = Gauge(
    "rollout_go_no_go_score",
    "Weighted go/no-go score of the ensemble (0..1)",
    multiprocess_mode="mostrecent",
)
ROLLOUT_STAGE = Gauge(
    "rollout_stage_percentage",
    "Rollout percentage the controller has reached",
    multiprocess_mode="mostrecent",
)
ROLLOUT_DECISIONS = Counter(
    "rollout_decisions_total", "Rollout controller evaluations by action", ["action"]
)
DRIFT_PSI = Gauge(
    "drift_psi",
    "Population stability index of each input feature vs training",
    ["feature"],
    multiprocess_mode="mostrecent",
)
DRIFT_DETECTED = Gauge(
    "drift_detected", "1 when any input feature has drifted", multiprocess_mode="mostrecent"
)
GC_PAUSE = Histogram(
    "process_gc_pause_seconds",
    "Garbage-collector pauses of the serving processes, by generation",
    ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
