"""The flag configuration that steers the router, validated in full when it is loaded.

Every model forbids unknown keys, so a typo in `config/flags.yaml` is an error that names the
field instead of a setting silently left at its default. YAML spells two keys as Python keywords
(`in`, `from`); the models call them `in_` and `from_` and accept both spellings.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from serving.config.base import StrictModel
from serving.config.delivery import CostConfig, DriftConfig, RolloutConfig
from serving.config.experiments import ChallengerConfig, Experiment, RetrainingConfig
from serving.config.windows import DAYS, Day, TimeWindow  # noqa: F401  (re-exported)


class ShadowConfig(StrictModel):
    """Mirror a sample of classic traffic to the ensemble without ever delaying the answer."""

    enabled: bool = False
    """Send shadow copies of requests answered by classic to the ensemble."""
    sample_rate: float = Field(1.0, ge=0.0, le=1.0)
    """Fraction (0..1) of eligible requests that get a shadow copy."""
    max_in_flight: int = Field(32, ge=1)
    """Shadow calls allowed at once; beyond it copies are dropped, never queued."""


class BreakerConfig(StrictModel):
    """When to stop calling a failing ensemble and when to try it again."""

    failure_threshold: int = Field(5, ge=1)
    """Consecutive failures that open the breaker."""
    reset_timeout_s: float = Field(10.0, gt=0)
    """Cool-down in seconds before an open breaker lets a half-open probe through."""
    half_open_max_calls: int = Field(1, ge=1)
    """Probe calls allowed at once while half-open."""


class CacheConfig(StrictModel):
    """The router's prediction cache."""

    enabled: bool = True
    """Answer repeated identical requests from memory."""
    max_entries: int = Field(10_000, ge=0)
    """Entries kept before the least recently used is evicted; 0 disables the cache."""
    ttl_s: float = Field(300.0, gt=0)
    """Seconds an entry stays valid."""


class EligibilityRule(StrictModel):
    """One condition a request must meet to enter the percentage split.

    Either an attribute rule (`attribute` + `in`) or a `time_window`, never both.
    """

    attribute: str | None = None
    """Request attribute to look at, e.g. tier or region; a request without it fails the rule."""
    in_: list[str] | None = Field(None, alias="in", min_length=1)
    """Values of `attribute` that pass the rule."""
    time_window: TimeWindow | None = None
    """Hours during which requests pass the rule."""

    @model_validator(mode="after")
    def _one_kind(self) -> EligibilityRule:
        has_attribute = self.attribute is not None or self.in_ is not None
        if has_attribute and self.time_window is not None:
            raise ValueError("a rule is either {attribute, in} or {time_window}, not both")
        if not has_attribute and self.time_window is None:
            raise ValueError("a rule needs {attribute, in} or {time_window}")
        if has_attribute and (self.attribute is None or self.in_ is None):
            raise ValueError("an attribute rule needs both 'attribute' and 'in'")
        return self


class EnsembleFlag(StrictModel):
    """Who gets the ensemble, and what protects them when it misbehaves."""

    enabled: bool = True
    """Kill switch: false sends every request to classic at once, whatever else is set."""
    rollout_percentage: float = Field(10, ge=0, le=100)
    """Share (0..100) of eligible users routed to the ensemble; raising it only adds users."""
    allowed_users: list[str] = Field(default_factory=list)
    """User ids or group names always routed to the ensemble (after header and preference)."""
    groups: dict[str, list[str]] = Field(default_factory=dict)
    """Group name -> user ids, so `allowed_users` can name a whole group."""
    target: Literal["ensemble", "cascade"] = "ensemble"
    """What serves the requests the rules send to the ensemble: the full ensemble, or the cascade
    (dynamic selection: a cheap first stage, the ensemble for the rows it is unsure of; the
    ensemble when the served model has no cascade). The X-Model-Preference header still names an
    arm exactly."""
    fallback: Literal["classic"] = "classic"
    """Arm that answers when the ensemble fails, times out or its breaker is open."""
    shadow: ShadowConfig = Field(default_factory=ShadowConfig)
    """Shadow traffic to the ensemble."""
    deadline_ms: int = Field(500, gt=0)
    """Time the ensemble gets per request before the router falls back."""
    header_override: bool = True
    """Honour the X-Model-Preference request header."""
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    """Circuit breaker around ensemble calls."""
    eligibility: list[EligibilityRule] = Field(default_factory=list)
    """Conditions that must all hold before the percentage split applies."""


class EvaluationConfig(StrictModel):
    """Live evaluation: windows and feedback joins (prices are in the `cost` section)."""

    window_s: float = Field(3600.0, gt=0)
    """Age of the oldest request or label the rolling windows keep."""
    max_events: int = Field(10_000, ge=100)
    """Most requests (and labels) each arm's window keeps."""
    feedback_ttl_s: float = Field(86_400.0, gt=0)
    """How long after a prediction its request id accepts feedback."""
    max_tracked_requests: int = Field(100_000, ge=100)
    """Most recent predictions kept in memory for feedback joins."""

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "price_per_vcpu_second" in data:
            raise ValueError(
                "price_per_vcpu_second moved to the cost section: set "
                "cost.prices.active_vcpu_second (and the other prices there)"
            )
        return data


class FlagConfig(StrictModel):
    """The whole flag file."""

    flag: str = Field("ensemble", min_length=1)
    """Flag name mixed into the sticky hash; renaming it reshuffles every user's bucket."""
    ensemble: EnsembleFlag = Field(default_factory=EnsembleFlag)
    """The ensemble rollout."""
    cache: CacheConfig = Field(default_factory=CacheConfig)
    """The prediction cache."""
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    """Live evaluation windows and feedback."""
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    """Progressive rollout: schedule, gates, automatic promotion and rollback."""
    drift: DriftConfig = Field(default_factory=DriftConfig)
    """Input drift detection against the training reference."""
    cost: CostConfig = Field(default_factory=CostConfig)
    """Prices and app sizes that turn measured CPU and traffic into the deployment's bill."""
    experiment: Experiment | None = None
    """Named variants with weights (more than two arms): when set, the variant split replaces
    the rollout percentage as the last rule; None: the two-arm split."""
    retraining: RetrainingConfig = Field(default_factory=RetrainingConfig)
    """Retraining from labelled feedback: retention, the off-peak job, the refusal tolerances."""
    challenger: ChallengerConfig = Field(default_factory=ChallengerConfig)
    """A retrained version's path to promotion: shadow, A/B variant, promotion."""


class FlagConfigError(ValueError):
    """An unusable flag configuration; `problems` holds one "field: what is wrong" line each."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or [message]


def parse_flag_config(data: Mapping[str, Any] | None) -> FlagConfig:
    """Validate an already-parsed mapping (None means all defaults)."""
    if data is None:
        return FlagConfig()
    if not isinstance(data, Mapping):
        raise FlagConfigError(f"expected a mapping at the top level, got {type(data).__name__}")
    try:
        return FlagConfig.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(error) for error in exc.errors()]
        raise FlagConfigError(
            "invalid flag config:\n  " + "\n  ".join(problems), problems
        ) from None


def load_flag_config(path: str | Path) -> FlagConfig:
    """Read and validate a YAML flag file; every failure is a FlagConfigError naming the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FlagConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise FlagConfigError(f"{path}: invalid YAML: {exc}") from None
    try:
        return parse_flag_config(data)
    except FlagConfigError as exc:
        raise FlagConfigError(f"{path}: {exc}", exc.problems) from None


def dump_flag_config(cfg: FlagConfig) -> dict[str, Any]:
    """A JSON-able dict in the YAML spelling (`in`, `from`) that parses back to `cfg`."""
    return cfg.model_dump(mode="json", by_alias=True, exclude_none=True)


def _describe(error: Mapping[str, Any]) -> str:
    """One pydantic error as "ensemble.eligibility[0].time_window.timezone: message"."""
    path = ""
    for part in error["loc"]:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    if error["type"] == "extra_forbidden":
        message = "unknown key (misspelt, or misplaced in the hierarchy?)"
    else:
        message = error["msg"].removeprefix("Value error, ")
    return f"{path or '<top level>'}: {message}"
