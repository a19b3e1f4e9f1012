"""Request and response bodies of the public REST API (they also make the OpenAPI document)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from serving.http.errors import ErrorDetail
from serving.http.openapi import ApiModel
from serving.results import RoutedPrediction

UserId = Field(
    default=None,
    min_length=1,
    max_length=128,
    pattern=r"^[A-Za-z0-9_.:@\-]+$",
    description="Stable user id: the key of the sticky split (letters, digits, _ . : @ -).",
)


class Instance(ApiModel):
    model_config = ConfigDict(extra="forbid")

    features: dict[str, Any] = Field(
        description="Raw feature values by name, as in the training data: numbers, strings "
        "(categories) or null (missing). Every feature must be present; see GET /api/models.",
    )


class ClassifyRequest(Instance):
    user_id: str | None = UserId
    context: dict[str, str] = Field(
        default_factory=dict,
        description="Request attributes for eligibility rules, e.g. "
        '{"tier": "paid", "region": "westeurope"}.',
    )


class BatchRequest(ApiModel):
    model_config = ConfigDict(extra="forbid")

    instances: list[Instance] = Field(
        min_length=1, description="Rows to classify, answered in order."
    )
    user_id: str | None = UserId
    context: dict[str, str] = Field(default_factory=dict)


class Prediction(ApiModel):
    """One answered row, as served (built from the core's `RoutedPrediction` at the edge)."""

    model_config = ConfigDict(from_attributes=True)

    label: str
    probabilities: dict[str, float]
    model: Literal["classic", "ensemble", "cascade"]
    model_version: str
    request_id: str
    fallback: bool = Field(description="True when the ensemble was meant but classic answered.")
    cached: bool = False
    reason: str = Field(
        description="The routing rule that chose the model (split, header, allow_list, ...)."
    )

    @classmethod
    def of(cls, routed: RoutedPrediction) -> Prediction:
        return cls.model_validate(routed, from_attributes=True)


class BatchPrediction(ApiModel):
    predictions: list[Prediction]


class Feedback(ApiModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(
        min_length=1,
        max_length=128,
        description="The request_id of a served prediction (any replica's, within the TTL).",
    )
    label: str = Field(min_length=1, max_length=200, description="The true class.")
    rating: int | None = Field(
        default=None, ge=1, le=10, description="Optional user satisfaction, 1..10."
    )


class FeedbackBatch(ApiModel):
    model_config = ConfigDict(extra="forbid")

    items: list[Feedback] = Field(min_length=1, max_length=1000)


class FeedbackResult(ApiModel):
    """A label joined to a served prediction (serving/delivery/live.py `feedback`)."""

    request_id: str
    status: Literal["recorded", "duplicate"] = Field(
        description="duplicate: this request_id already had feedback (the call is idempotent)."
    )
    arm: str = Field(description="The model that served the prediction.")
    predicted: str = Field(description="The label it answered.")
    correct: bool


class FeedbackItemError(ApiModel):
    """One item of a feedback batch that could not be joined."""

    request_id: str
    status: Literal["error"]
    error: ErrorDetail


class FeedbackResults(ApiModel):
    results: list[FeedbackResult | FeedbackItemError] = Field(description="One per item, in order.")


class VersionRequest(ApiModel):
    """Body of POST /api/admin/models/{name}/version (other keys are ignored)."""

    version: str = Field(
        min_length=1,
        max_length=64,
        description="'previous', 'latest' or a stored version (see GET /api/models, `versions`).",
    )


class VersionSwap(ApiModel):
    """What a model service now serves (serving/host.py `HostedModel.swap`)."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    name: Literal["classic", "ensemble"]
    from_: str | None = Field(alias="from", description="The tag served before (null: none).")
    to: str = Field(description="The tag served now.")


class LabelAgreement(ApiModel):
    compared: int
    agreement_rate: float


class ShadowStats(ApiModel):
    """Shadow-mode agreement (serving/routing/shadow.py `ShadowStats.summary`)."""

    enabled: bool
    in_flight: int
    compared: int
    label_agreement_rate: float | None
    mean_abs_probability_diff: float | None
    mean_shadow_latency_ms: float | None
    dropped: int
    errors: int
    by_label: dict[str, LabelAgreement] = Field(description="By the label classic answered.")


class DecisionLog(ApiModel):
    decisions: list[dict[str, Any]] = Field(
        description="Rollout decisions, newest first: each with its evidence, id and created_at."
    )
