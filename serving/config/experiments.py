"""Experiments with more than two arms: named variants, each a served model, with weights.

The second plan runs four groups at once (control, ensemble, online learning, all new
capabilities); an experiment here is that table: variants with weights summing to 100, exactly one
control, and a salt of its own so that changing one experiment never reshuffles another's users.
Assignment is serving/routing/variants.py.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from serving.config.base import StrictModel
from serving.config.windows import TimeWindow

WEIGHT_TOLERANCE = 1e-6


class Variant(StrictModel):
    """One arm of an experiment: a served model (and version), and its share of the traffic."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    """Names the variant in responses, metrics and the evaluation."""
    model: Literal["classic", "ensemble", "cascade"]
    """What serves it: classic, the ensemble, or the ensemble's cascade."""
    version: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    """A stored ensemble version to serve next to the champion (a challenger, run by the router);
    None: the version the model's service serves."""
    weight: float = Field(ge=0, le=100)
    """Share of the experiment's traffic in percent."""
    control: bool = False
    """The baseline every other variant is compared with (exactly one per experiment)."""


class Experiment(StrictModel):
    """Variants with weights summing to 100 and exactly one control."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    salt: str | None = Field(None, max_length=64)
    """Mixed into the sticky hash (default: the name); a new salt reshuffles this experiment."""
    variants: list[Variant] = Field(min_length=2, max_length=16)

    @property
    def hash_salt(self) -> str:
        return self.salt or self.name

    @property
    def control(self) -> Variant:
        return next(v for v in self.variants if v.control)

    @property
    def challengers(self) -> list[Variant]:
        return [v for v in self.variants if not v.control]

    @model_validator(mode="after")
    def _one_control_and_a_whole(self) -> Experiment:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        controls = [v.name for v in self.variants if v.control]
        if len(controls) != 1:
            raise ValueError(f"exactly one variant must be the control, got {controls or 'none'}")
        served = [(v.model, v.version) for v in self.variants]
        if len(set(served)) != len(served):
            raise ValueError("two variants serve the same model and version: merge their weights")
        if any(v.version is not None and v.model != "ensemble" for v in self.variants):
            raise ValueError(
                "only ensemble variants may name a version (classic and the cascade follow the "
                "served versions)"
            )
        total = math.fsum(v.weight for v in self.variants)
        if abs(total - 100.0) > WEIGHT_TOLERANCE:
            raise ValueError(f"variant weights must sum to 100, got {total:g}")
        return self


class RetrainingConfig(StrictModel):
    """Retraining from labelled feedback: what is kept, when the job runs, what it must beat.

    Served requests keep their features (no user id) for `retention_s`, at most
    `max_stored_requests` rows; labelled ones become training data next to the original set.
    """

    enabled: bool = False
    """Keep served requests' features for retraining and allow runs (scheduled and manual)."""
    schedule: bool = True
    """Start runs by themselves (the leader, inside `window`, every `min_interval_s`); False:
    only when an operator asks (POST /api/admin/retraining/run)."""
    window: TimeWindow | None = None
    """Off-peak hours the scheduled job may start in (None: any time)."""
    min_interval_s: float = Field(86_400.0, ge=0)
    """Least time between two scheduled runs (a manual run is not limited)."""
    min_labelled: int = Field(500, ge=10)
    """Labelled requests needed before a run trains anything."""
    feedback_window_s: float = Field(7 * 86_400.0, gt=0)
    """Age of the oldest labelled request a run uses."""
    retention_s: float = Field(14 * 86_400.0, gt=0)
    """How long served requests' features are kept (then pruned)."""
    max_stored_requests: int = Field(200_000, ge=1_000)
    """Most served requests kept; the oldest are pruned first."""
    holdout_fraction: float = Field(0.3, gt=0.05, lt=0.9)
    """Share of the recent labelled requests held out to judge the new version."""
    tolerance: float = Field(0.01, ge=0, le=0.5)
    """Refuse a version whose recent-holdout accuracy is more than this below its parent's."""
    original_tolerance: float = Field(0.03, ge=0, le=0.5)
    """Refuse a version whose accuracy on the original test split drops more than this."""
    nice: int = Field(10, ge=0, le=19)
    """CPU niceness of the training process, so serving keeps its latency."""
    threads: int = Field(1, ge=1, le=64)
    """Threads the training libraries may use (OMP/MKL/TF/XGBoost/LightGBM/CatBoost)."""
    timeout_s: float = Field(3_600.0, gt=0)
    """A run still going after this is stopped and counted as failed."""
    quick: bool = False
    """Train the small member set (tests and CI)."""


class ChallengerConfig(StrictModel):
    """How a retrained version earns traffic: shadow, then an A/B variant, then promotion."""

    enabled: bool = True
    """Move accepted versions through the stages (off: they stay in the store only)."""
    shadow_sample_rate: float = Field(0.2, ge=0, le=1)
    """Share of ensemble-served requests also sent to the challenger in shadow."""
    shadow_min_samples: int = Field(200, ge=10)
    """Shadow comparisons needed before the agreement is judged."""
    min_agreement: float = Field(0.6, ge=0, le=1)
    """Lowest agreement with the champion (lower bound of its 95 % interval) to enter the A/B;
    a retrained version should differ where the world moved, not everywhere."""
    ab_weight: float = Field(30.0, gt=0, lt=100)
    """Percent of the experiment's traffic the challenger gets in the A/B."""
    min_labelled: int = Field(200, ge=10)
    """Labelled requests each of control and challenger need before a go/no-go."""
    margin: float = Field(0.0, ge=0, le=0.2)
    """Non-inferiority margin: the challenger may be at most this much less accurate."""
    alpha: float = Field(0.05, gt=0, lt=0.5)
    """Family-wise error rate across the experiment's challengers (Holm's correction)."""
    max_stage_s: float = Field(86_400.0, gt=0)
    """A stage without a verdict after this long is abandoned (challenger rejected)."""
