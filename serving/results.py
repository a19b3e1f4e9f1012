"""Typed results that travel from the router core to live evaluation and the HTTP edge."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RoutedPrediction:
    """One answered row: what live evaluation records and the HTTP edge renders."""

    label: str
    probabilities: dict[str, float]
    model: str
    model_version: str
    request_id: str
    fallback: bool
    cached: bool
    reason: str
