"""Process settings, read once from the environment (prefix SERVING_) and validated at start-up."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving.config.secrets import clean_secret, url_password, webhook_url_problem

SECRET_FIELDS = ("request_id_secret", "viewer_token", "admin_token", "user_token_secret")
"""Settings that are secrets: blank is unset, and none is ever shown in an error or a log."""


class ServingSettings(BaseSettings):
    """Everything about the serving processes that is not a traffic flag (see config/flags.yaml)."""

    model_config = SettingsConfigDict(
        env_prefix="SERVING_", extra="ignore", hide_input_in_errors=True
    )

    classic_model: str = "classic:latest"
    """Model store tag the classic arm serves (pin a version to roll back)."""
    ensemble_model: str = "ensemble:latest"
    """Model store tag the ensemble arm serves."""
    flags_path: Path = Path("config/flags.yaml")
    """Flag config file; re-read on change (hot reload)."""
    flags_poll_s: float = Field(1.0, gt=0)
    """How often the router checks the flag file for changes."""
    state_url: str = "sqlite:///var/state.db"
    """Where rollout state, decisions, feedback joins and preferences persist: a SQLite file, or a
    shared PostgreSQL (postgresql+psycopg://user:password@host/db) for several router replicas."""
    replica_id: str | None = None
    """This replica's name in the shared state (leases, outcomes); default: hostname-pid."""
    lease_ttl_s: float = Field(10.0, gt=0)
    """How long the rollout controller's lease lasts unrenewed: a dead leader is replaced within
    this (the holder renews it every second)."""
    webhook_url: str | None = None
    """Where the leading replica posts rollout decisions (Slack-compatible JSON); unset: off."""
    request_id_secret: SecretStr | None = None
    """Signs request ids (feedback joins on any replica). Unset: a secret generated once and kept
    in the state store, so replicas sharing a store share it."""
    viewer_token: SecretStr | None = None
    """Read-only operator token for /dashboard and /api/status (the admin token works too)."""
    router_workers: int = Field(1, ge=1, le=16)
    """Router worker processes per container; each is a replica of its own (shared state)."""
    outcome_flush_s: float = Field(1.0, gt=0)
    """How often a replica writes its answered requests to the shared store (small batches)."""
    admin_token: SecretStr | None = None
    """Bearer token for /api/admin/*; admin endpoints are disabled when unset."""
    user_token_secret: SecretStr | None = None
    """Shared secret (16+ characters) that signs user tokens (HMAC-SHA256) for the preference API
    and settings page; /api/users/*/preference answers 403 while unset
    (serving/routing/preferences.py)."""
    preference_ttl_s: float = Field(2.0, ge=0)
    """How long a router caches a user's preference: other replicas see a change within this."""
    classic_local: bool = True
    """Answer routed classic traffic in the router process (no network hop) instead of the classic
    service.
    """
    classic_url: str | None = None
    """URL of a remote classic service (split deployment); None = the local graph."""
    ensemble_url: str | None = None
    """URL of a remote ensemble service (split deployment); None = the local graph."""
    role: Literal["graph", "router"] = "graph"
    """`router` (baked into the router image, deploy/bentofile.router.yaml): the split deployment's
    entry service, which reaches both arms by URL. Without SERVING_CLASSIC_URL and
    SERVING_ENSEMBLE_URL it starts no in-process arms and stays unready, saying why in its log."""
    max_batch_instances: int = Field(256, ge=1)
    """Most instances accepted by /api/classify/batch."""
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    """Largest request body accepted (413 above)."""
    max_in_flight: int = Field(256, ge=1)
    """Router requests in flight before new ones get 503 (admission control)."""
    fast_classify: bool = True
    """Answer valid POST /api/classify, /api/v1/classify/classic and /api/v2/classify/ensemble
    requests on a lean path past FastAPI's routing and dependency machinery (same validation and
    response model; every error still goes through the full route)."""
    gc_freeze: bool = True
    """Freeze the router's start-up objects out of garbage collection
    (serving/observability/gcpause.py).
    """
    access_log: bool = False
    """BentoML's per-request access log (off: it costs throughput)."""
    tracing: bool = False
    """BentoML's OpenTelemetry request spans. Off by default: with no exporter configured they are
    pure per-request cost (about a tenth of the router's CPU). Turn on together with BentoML's
    `tracing.exporter_type` configuration when traces are collected."""
    faults_enabled: bool = False
    """Test-only fault injection endpoint (/api/admin/faults); never enable in production."""
    ensemble_min_members: int = Field(4, ge=1, le=7)
    """Fewest loaded members for the ensemble to count as ready (below: all traffic to classic)."""
    health_poll_s: float = Field(2.0, gt=0)
    """How often the router refreshes the ensemble's health."""
    ensemble_max_batch_size: int = Field(64, ge=1)
    """Adaptive batching: most rows per ensemble call."""
    ensemble_coalesce_max_rows: int = Field(64, ge=0)
    """Router side: concurrent routed requests share one call to the ensemble service, up to this
    many rows (serving/routing/coalesce.py); 0 sends one call per request."""
    ensemble_coalesce_in_flight: int = Field(1, ge=1)
    """Router side: ensemble calls in flight at once; requests arriving meanwhile join the next call
    (1 measured best: bigger calls, 2.0 vs 3.3 ms of ensemble-worker CPU per request at 16
    users)."""
    ensemble_transport: Literal["socket", "http", "api"] = "socket"
    """Router -> ensemble calls (serving/transport/rows.py): `socket` sends the encoded rows as
    raw float64 bytes over a Unix socket beside BentoML's (same `bentoml serve`; else as `http`),
    `http` to the service's POST /rows/predict, `api` through BentoML's API (also what any of them
    falls back to when the service has no such endpoint)."""
    ensemble_max_latency_ms: int = Field(10_000, ge=1)
    """Adaptive batching: BentoML's queueing budget before it rejects (a rejection budget, not a
    wait).
    """

    @field_validator(*SECRET_FIELDS, mode="before")
    @classmethod
    def _blank_secret_is_unset(cls, value: object) -> object:
        """`SERVING_ADMIN_TOKEN=""` (or spaces) means no admin token, never an empty one."""
        return clean_secret(value)

    @field_validator("webhook_url", mode="before")
    @classmethod
    def _webhook_https_only(cls, value: object) -> object:
        """Refuse to start with a webhook that is not https (http only to loopback): a
        `file://` URL or a plain-http hop would carry the decisions anywhere."""
        if isinstance(value, str) and not value.strip(" \t"):
            return None
        if isinstance(value, str) and (problem := webhook_url_problem(value.strip(" \t"))):
            raise ValueError(f"SERVING_WEBHOOK_URL {problem}")
        return value.strip(" \t") if isinstance(value, str) else value

    def secrets(self) -> list[str]:
        """Every secret value this process holds (for redaction): the tokens and the state
        store's password."""
        values = [getattr(self, name) for name in SECRET_FIELDS]
        out = [v.get_secret_value() for v in values if v is not None]
        return out + [p for p in (url_password(self.state_url), self.webhook_url) if p]

    def arm_url(self, arm: Literal["classic", "ensemble"]) -> str | None:
        """Where an arm is reached: its URL; None = in this graph. In the router role a missing URL
        gives an address that never answers (UNSET_ARM_URL): never an in-process arm."""
        url = self.classic_url if arm == "classic" else self.ensemble_url
        return url or (UNSET_ARM_URL if self.role == "router" else None)

    def unready_reason(self) -> str | None:
        """Why this process must not take traffic whatever its models say (None: no such reason)."""
        missing = [
            f"SERVING_{arm.upper()}_URL"
            for arm, url in (("classic", self.classic_url), ("ensemble", self.ensemble_url))
            if not url
        ]
        if self.role != "router" or not missing:
            return None
        return (
            f"SERVING_ROLE=router but {' and '.join(missing)} not set: this image carries no "
            "in-process arms, so it stays unready until the arms' URLs are given"
        )


UNSET_ARM_URL = "http://arm-url-not-set.invalid"
"""The address a router-role process uses for an arm without a URL (.invalid never resolves)."""


@lru_cache(maxsize=1)
def get_settings() -> ServingSettings:
    return ServingSettings()
