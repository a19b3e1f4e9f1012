"""Version metrics: member weights per version, feature-importance stability against the parent."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from serving.observability.model_metrics import export_version, rank_correlation

PARENT = {"age": 0.4, "income": 0.3, "debt_ratio": 0.2, "region": 0.1}


def test_rank_correlation_of_importances():
    assert rank_correlation(PARENT, PARENT) == pytest.approx(1.0)
    reversed_ = {f: 1 - v for f, v in PARENT.items()}
    assert rank_correlation(PARENT, reversed_) == pytest.approx(-1.0)
    assert rank_correlation(PARENT, {"age": 1.0, "income": 2.0}) is None  # too few in common
    assert rank_correlation(PARENT, dict.fromkeys(PARENT, 0.5)) is None  # constant: undefined


def test_a_retrained_version_exports_its_weights_and_its_stability():
    child = {**PARENT, "debt_ratio": 0.5}  # debt_ratio moved from third to first
    description = {
        "weights": {"xgboost": 0.6, "catboost": 0.4},
        "members": {"xgboost": {"accuracy": 0.87}, "catboost": {}},
        "lineage": {"parent": "v1"},
        "feature_importance": child,
    }
    out = export_version("v2", description, PARENT)
    assert out["parent"] == "v1" and out["importance_rank_correlation"] == pytest.approx(0.4)
    sample = REGISTRY.get_sample_value
    assert sample("tabular_ensemble_member_weight", {"version": "v2", "member": "xgboost"}) == 0.6
    assert (
        sample("tabular_ensemble_member_accuracy", {"version": "v2", "member": "xgboost"}) == 0.87
    )
    rho = sample("tabular_feature_importance_rank_correlation", {"version": "v2", "parent": "v1"})
    assert rho == pytest.approx(0.4)
    assert "parent" not in export_version("v1", {"weights": {"xgboost": 1.0}}, None)
