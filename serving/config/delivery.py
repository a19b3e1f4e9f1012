"""Configuration of progressive delivery: the go/no-go score, the rollout schedule, drift, cost."""

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
    - cost: relative increase of the deployment's cost per served request with all traffic on the
      ensemble over classic alone (serving.evidence.cost: router share + arm service, priced
      per vCPU-second, GiB-second and request, plus standing replicas, at the observed traffic);
      0 at `cost_increase_max`, 1 at `cost_increase_target` (lower is better: the line runs
      downhill).
    - stability: the ensemble's success rate, 1 - error_rate; 0 at `stability_min`, 1 at
      `stability_target`.

    The score is the weighted mean of the terms that have data (weights renormalised over them;
    satisfaction needs ratings, cost needs CPU measurements on both arms and observed traffic).
    Accuracy and stability must have data, else the verdict is "not enough data".
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
    """Relative increase of the deployment's cost per request (100 % ensemble over classic alone)
    that scores 0; the gate requires less than this."""
    cost_increase_target: float = 0.5
    """Relative cost increase that scores 1 (and anything cheaper)."""
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
    alpha: float = Field(0.05, gt=0, lt=0.5)
    """Error rate of the anytime-valid accuracy gate and rollback trigger (the controller
    re-judges every tick; serving/evidence/sequential.py)."""

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


# ---------------------------------------------------------------------------- cost
class AppSize(StrictModel):
    """One container app's size and replica range: what the platform bills per replica-second."""

    cpu: float = Field(gt=0)
    """vCPU allocated to each replica."""
    memory_gib: float = Field(gt=0)
    """Memory (GiB) allocated to each replica."""
    min_replicas: int = Field(ge=0)
    """Replicas kept running with no traffic (Container Apps bills them at the idle rates while
    idle; an app with 0 scales to zero when it gets no traffic)."""
    max_replicas: int = Field(ge=1)
    """Most replicas the app scales out to."""

    @model_validator(mode="after")
    def _range(self) -> AppSize:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self

    @property
    def memory(self) -> str:
        """The memory as Container Apps spells it (`--memory 0.5Gi`)."""
        return f"{self.memory_gib:g}Gi"


ROUTER_SIZE = AppSize(cpu=0.5, memory_gib=1.0, min_replicas=1, max_replicas=10)
"""The router app as `python -m deploy apps` creates it (the one source of truth for both)."""
CLASSIC_SIZE = AppSize(cpu=0.25, memory_gib=0.5, min_replicas=0, max_replicas=10)
"""The classic model service app (the plan's size: 0.25 vCPU / 0.5 GiB, 0-10 replicas)."""
ENSEMBLE_SIZE = AppSize(cpu=0.5, memory_gib=1.0, min_replicas=0, max_replicas=2)
"""The ensemble service app (the plan's size: 0.5 vCPU / 1 GiB, 0-2 replicas)."""


class DeploymentSizes(StrictModel):
    """The three apps of the split deployment; defaults are the sizes `deploy/` deploys."""

    router: AppSize = Field(default_factory=lambda: ROUTER_SIZE.model_copy())
    """The router (entry point; answers classic in-process unless SERVING_CLASSIC_LOCAL=false)."""
    classic: AppSize = Field(default_factory=lambda: CLASSIC_SIZE.model_copy())
    """The classic model service."""
    ensemble: AppSize = Field(default_factory=lambda: ENSEMBLE_SIZE.model_copy())
    """The ensemble service (its seven members run inside it)."""


class PriceTable(StrictModel):
    """Prices of the Azure Container Apps consumption plan (pay-as-you-go list prices, USD).

    Source: https://azure.microsoft.com/pricing/details/container-apps/ and "Billing in Azure
    Container Apps" (https://learn.microsoft.com/azure/container-apps/billing, updated 2025-12-09),
    read 2026-12-02. Set your region's and currency's prices here.
    """

    currency: str = Field("USD", min_length=1)
    """Currency of every price below (and of every cost the report shows)."""
    active_vcpu_second: float = Field(0.000024, ge=0)
    """Price of one vCPU-second while a replica is active."""
    active_gib_second: float = Field(0.000003, ge=0)
    """Price of one GiB-second of memory while a replica is active."""
    idle_vcpu_second: float = Field(0.000003, ge=0)
    """Price of one vCPU-second while a replica is idle (only apps with min_replicas > 0)."""
    idle_gib_second: float = Field(0.000003, ge=0)
    """Price of one GiB-second while a replica is idle."""
    per_million_requests: float = Field(0.40, ge=0)
    """Price of a million HTTP requests from outside the environment (calls between the apps of
    one environment are not billed)."""
    free_grant: bool = False
    """Subtract the monthly free grant below from the monthly projection (per subscription, so
    off by default: other apps in the subscription may use it up)."""
    free_vcpu_seconds: float = Field(180_000, ge=0)
    """vCPU-seconds free per subscription and calendar month."""
    free_gib_seconds: float = Field(360_000, ge=0)
    """GiB-seconds free per subscription and calendar month."""
    free_requests: float = Field(2_000_000, ge=0)
    """Requests free per subscription and calendar month."""


class PlanKpi(StrictModel):
    """The users' plan's cost KPI row, shown beside the measured figures (not a gate)."""

    classic_per_request: float = Field(0.0001, ge=0)
    """What the plan expects classic to cost per request."""
    ensemble_target_per_request: float = Field(0.0005, ge=0)
    """The plan's target for the ensemble's cost per request."""
    max_per_request: float = Field(0.001, gt=0)
    """The plan's threshold: cost per request must stay below it."""


class CostConfig(StrictModel):
    """How the deployment's bill is modelled from what the router measures
    (serving.evidence.cost has the definition)."""

    prices: PriceTable = Field(default_factory=PriceTable)
    """Price per vCPU-second, GiB-second and request."""
    apps: DeploymentSizes = Field(default_factory=DeploymentSizes)
    """Replica sizes and ranges of the router, classic and ensemble apps."""
    utilisation: float = Field(1.0, gt=0, le=1)
    """Share of a busy replica's vCPU the work really uses: 1.0 bills exactly the measured
    CPU-seconds (a lower bound); 0.5 prices in headroom (a CPU-second keeps 2 vCPU-seconds busy)."""
    seconds_per_month: float = Field(730 * 3600, gt=0)
    """Seconds in the projected month (730 h, the month of Azure's pricing calculator)."""
    requests_per_second: float | None = Field(None, gt=0)
    """Traffic to project at (the declared forecast the cost gate judges); None uses the router's
    observed traffic over the evaluation window. The report shows both side by side."""
    scale_down_cooldown_s: float = Field(300.0, ge=0)
    """How long a scale-to-zero app (min_replicas 0) stays up after its last request (Container
    Apps' default cooldown): with Poisson traffic of r per second it is up 1 - exp(-r x this) of
    the time, and r x exp(-r x this) requests per second find it at zero (a cold start)."""
    cold_start_s: float = Field(10.0, ge=0)
    """Active replica time a cold start bills before the first answer (5-12 s measured here)."""
    plan: PlanKpi = Field(default_factory=PlanKpi)
    """The plan's $/request KPI row."""
