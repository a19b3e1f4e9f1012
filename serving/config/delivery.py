"""Configuration of progressive delivery: the go/no-go score, the rollout schedule, drift."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from serving.config.base import StrictModel


class ScoreConfig(StrictModel):
    """How live metrics turn into a 0..1 go/no-go score, and the gates a rollout must pass.

    Each term is normalised linearly to 0..1 between its "zero" point and its "one" point and
    clipped (value at or beyond the minimum -> 0, at or beyond the target -> 1):

    - accuracy: relative improvement of the ensemble over classic,
      (acc_ensemble - acc_classic) / acc_classic; 0 at `accuracy_improvement_min`, 1 at
      `accuracy_improvement_target`.
    - satisfaction: the ensemble's mean rating / 10; 0 at `satisfaction_min`, 1 at
      `satisfaction_target`.
    - cost: relative increase of CPU seconds per request over classic,
      cpu_ensemble / cpu_classic - 1; 0 at `cost_increase_max`, 1 at `cost_increase_target`
      (lower is better: the line runs downhill).
    - stability: the ensemble's success rate, 1 - error_rate; 0 at `stability_min`, 1 at
      `stability_target`.

    The score is the weighted mean of the terms that have data (weights renormalised over them;
    satisfaction needs ratings, cost needs CPU measurements on both arms). Accuracy and stability
    must have data, else the verdict is "not enough data".
    """

    weight_accuracy: float = Field(0.4, ge=0)
    """Weight of the accuracy term."""
    weight_satisfaction: float = Field(0.3, ge=0)
    """Weight of the user-satisfaction term."""
    weight_cost: float = Field(0.2, ge=0)
    """Weight of the cost term."""
    weight_stability: float = Field(0.1, ge=0)
    """Weight of the stability (success rate) term."""
    accuracy_improvement_min: float = 0.10
    """Relative accuracy improvement over classic that scores 0, and the gate's minimum."""
    accuracy_improvement_target: float = 0.15
    """Relative accuracy improvement over classic that scores 1."""
    satisfaction_min: float = Field(0.6, ge=0, le=1)
    """Mean rating / 10 that scores 0, and the gate's minimum (when there are ratings)."""
    satisfaction_target: float = Field(0.8, ge=0, le=1)
    """Mean rating / 10 that scores 1."""
    cost_increase_max: float = 1.0
    """Relative CPU cost increase over classic that scores 0; the gate requires less than this."""
    cost_increase_target: float = 0.5
    """Relative CPU cost increase over classic that scores 1 (and anything cheaper)."""
    stability_min: float = Field(0.99, ge=0, le=1)
    """Success rate (1 - error rate) that scores 0, and the gate's minimum."""
    stability_target: float = Field(0.999, ge=0, le=1)
    """Success rate that scores 1."""
    proceed_threshold: float = Field(0.75, ge=0, le=1)
    """Weighted score at or above which the verdict is "proceed" (all gates passing)."""
    min_labelled_samples: int = Field(200, ge=1)
    """Labelled predictions each of classic and the ensemble need before scoring."""
    min_requests: int = Field(200, ge=1)
    """Requests the ensemble needs before its stability counts."""
    include_shadow_labels: bool = True
    """Judge the ensemble's accuracy on its own labels plus its shadow predictions' labels."""

    @model_validator(mode="after")
    def _ordered(self) -> ScoreConfig:
        if self.accuracy_improvement_target <= self.accuracy_improvement_min:
            raise ValueError("accuracy_improvement_target must be above accuracy_improvement_min")
        if self.satisfaction_target <= self.satisfaction_min:
            raise ValueError("satisfaction_target must be above satisfaction_min")
        if self.cost_increase_target >= self.cost_increase_max:
            raise ValueError("cost_increase_target must be below cost_increase_max")
        if self.stability_target <= self.stability_min:
            raise ValueError("stability_target must be above stability_min")
        if (
            self.weight_accuracy
            + self.weight_satisfaction
            + self.weight_cost
            + self.weight_stability
            <= 0
        ):
            raise ValueError("at least one weight must be positive")
        return self


class RolloutConfig(StrictModel):
    """The progressive-rollout policy."""

    schedule: list[float] = Field(
        default_factory=lambda: [10.0, 25.0, 50.0, 75.0, 100.0], min_length=1
    )
    """Ensemble traffic percentages of the stages, strictly increasing, each in (0, 100]."""
    min_stage_seconds: float = Field(300.0, ge=0)
    """Time a stage must last before it can be promoted."""
    min_labelled_samples: int = Field(200, ge=1)
    """Labelled predictions per arm needed before accuracy may trigger a rollback or a promotion."""
    min_request_samples: int = Field(200, ge=1)
    """Requests (latency samples) per arm needed before latency or errors may trigger anything."""
    max_accuracy_drop: float = Field(0.05, ge=0, le=1)
    """Roll back when ensemble accuracy is more than this (absolute) below classic's."""
    max_p95_increase_ms: float = Field(100.0, ge=0)
    """Roll back when the ensemble's p95 latency exceeds classic's by more than this."""
    max_error_rate: float = Field(0.02, ge=0, le=1)
    """Roll back when the ensemble's error rate is above this."""
    evaluation_interval_s: float = Field(30.0, gt=0)
    """How often the caller should run `evaluate` (the controller itself never schedules)."""
    enabled: bool = False
    """Automatic promotion; off by default (rollback triggers still act when it is off)."""
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    """The go/no-go score that must clear its threshold before a promotion."""

    @field_validator("schedule")
    @classmethod
    def _increasing(cls, schedule: list[float]) -> list[float]:
        for value in schedule:
            if not 0 < value <= 100:
                raise ValueError(f"every stage must be in (0, 100], got {value}")
        for before, after in zip(schedule, schedule[1:], strict=False):
            if after <= before:
                raise ValueError(f"stages must increase strictly, got {before} then {after}")
        return schedule


class DriftConfig(StrictModel):
    """How the drift monitor windows and judges live inputs."""

    window: int = Field(2000, ge=1)
    """Live rows kept (a sliding window of the most recent rows)."""
    min_samples: int = Field(200, ge=1)
    """Rows (and, for a test, present values) needed before a feature is judged."""
    psi_threshold: float = Field(0.2, gt=0)
    """PSI above which a feature drifts (0.1-0.2 is a moderate shift, above 0.2 a major one)."""
    alpha: float = Field(0.01, gt=0, lt=1)
    """False discovery rate for the per-feature tests, after Benjamini-Hochberg adjustment."""
