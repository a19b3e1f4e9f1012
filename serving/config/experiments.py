"""Experiments with more than two arms: named variants, each a served model, with weights.

The second plan runs four groups at once (control, ensemble, online learning, all new
capabilities); an experiment here is that table: variants with weights summing to 100, exactly one
control, and a salt of its own so that changing one experiment never reshuffles another's users.
Assignment is serving/routing/variants.py.
"""

from __future__ import annotations

import math

from pydantic import Field, model_validator

from serving.config.base import StrictModel

WEIGHT_TOLERANCE = 1e-6


class Variant(StrictModel):
    """One arm of an experiment: a served model (and version), and its share of the traffic."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    """Names the variant in responses, metrics and the evaluation."""
    model: str = Field(min_length=1, max_length=64)
    """What serves it: "classic", "ensemble", "cascade" (or another served model's name)."""
    version: str | None = Field(None, max_length=64)
    """A stored version to serve; None: the version the model's service serves (its pin)."""
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
        total = math.fsum(v.weight for v in self.variants)
        if abs(total - 100.0) > WEIGHT_TOLERANCE:
            raise ValueError(f"variant weights must sum to 100, got {total:g}")
        return self
