"""What the plan asks to watch across versions: ensemble member weights per version, and how
stable the feature importances stay from a version to its parent (Spearman rank correlation)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from scipy import stats

from serving.observability.metrics import (
    IMPORTANCE_RANK_CORRELATION,
    MEMBER_ACCURACY,
    MEMBER_WEIGHT,
)


def rank_correlation(a: Mapping[str, float], b: Mapping[str, float]) -> float | None:
    """Spearman's rho of two importance tables over their common features (None: fewer than
    three in common, or a constant table)."""
    common = sorted(set(a) & set(b))
    if len(common) < 3:
        return None
    if len({a[f] for f in common}) < 2 or len({b[f] for f in common}) < 2:
        return None  # a constant table has no ranking
    rho = stats.spearmanr([a[f] for f in common], [b[f] for f in common]).statistic
    return None if rho is None or not math.isfinite(rho) else float(rho)


def parent_of(description: Mapping[str, Any]) -> str | None:
    """The version a retrained version was trained from (its lineage), or None."""
    lineage = description.get("lineage")
    return lineage.get("parent") if isinstance(lineage, Mapping) else None


def export_version(
    version: str, description: Mapping[str, Any], parent_importance: Mapping[str, float] | None
) -> dict[str, Any]:
    """Set the gauges of one ensemble version from its description (weights) and, when it has a
    lineage parent, the rank correlation of their feature importances; returns what was set."""
    weights = description.get("weights") or {}
    for member, weight in weights.items():
        MEMBER_WEIGHT.labels(version=version, member=member).set(float(weight))
    for member, figures in (description.get("members") or {}).items():
        if isinstance(figures, Mapping) and figures.get("accuracy") is not None:
            MEMBER_ACCURACY.labels(version=version, member=member).set(float(figures["accuracy"]))
    out: dict[str, Any] = {"version": version, "weights": dict(weights)}
    parent = parent_of(description)
    if parent and parent_importance is not None:
        rho = rank_correlation(description.get("feature_importance") or {}, parent_importance)
        if rho is not None:
            IMPORTANCE_RANK_CORRELATION.labels(version=version, parent=parent).set(rho)
        out.update(parent=parent, importance_rank_correlation=rho)
    return out
