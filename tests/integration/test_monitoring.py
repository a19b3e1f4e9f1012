"""The Grafana dashboard and the Prometheus alert rules use only metrics the server exports."""

from __future__ import annotations

import copy
import json
import re

import httpx
import pytest
import yaml

from tests.conftest import BASELINE_FLAGS
from tests.integration.test_api import post, varied_rows
from tests.support import ROOT

pytestmark = pytest.mark.integration
MONITORING = ROOT / "deploy" / "monitoring"
METRIC = re.compile(r"\b((?:tabular|bentoml)_[a-z0-9_]+)")
ONLY_ONCE_THEY_EXIST = {
    "tabular_challenger_stage",  # {version, stage}: once a version is on trial
    "tabular_feature_importance_rank_correlation",  # {version, parent}: a retrained version
}


def expressions() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    exprs += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    return exprs


def test_assets_parse_and_cover_the_key_signals():
    names = {m for e in expressions() for m in METRIC.findall(e)}
    for needed in (
        "tabular_router_arm_latency_seconds_bucket",
        "tabular_router_fallbacks_total",
        "tabular_router_breaker_state",
        "tabular_router_shadow_agreement_total",
        "tabular_drift_detected",
        "tabular_rollout_decisions_total",
    ):
        assert needed in names


def test_every_metric_in_the_assets_is_exported(server, set_flags, admin_headers, example_row):
    # Exercise the paths whose labelled series appear only once used.
    rows = varied_rows(example_row, 6, seed=301)
    served = [
        post(server, "/api/classify", {"features": r, "user_id": "beta_bob"}).json()
        for r in rows[:3]
    ]
    split = post(server, "/api/classify", {"features": rows[3], "user_id": "someone-else"}).json()
    post(server, "/api/classify", {"features": rows[3], "user_id": "someone-else"})  # a cache hit
    # only a label of traffic the split assigned is evidence (the live-accuracy gauge); beta_bob's
    # allow-listed answers are counted apart
    assert (
        post(
            server, "/api/feedback", {"request_id": split["request_id"], "label": split["label"]}
        ).status_code
        == 200
    )
    label = served[0]["label"]
    assert (
        post(
            server, "/api/feedback", {"request_id": served[0]["request_id"], "label": label}
        ).status_code
        == 200
    )
    httpx.post(
        f"{server.url}/api/classify",
        content=b"x" * (3 * 1024 * 1024),
        headers={"content-type": "application/json"},
    )
    flags = copy.deepcopy(BASELINE_FLAGS)
    flags["ensemble"]["shadow"] = {"enabled": True, "sample_rate": 1.0, "max_in_flight": 8}
    flags["rollout"] = {"enabled": True, "evaluation_interval_s": 0.1}
    assert set_flags(flags).status_code == 200
    post(server, "/api/classify", {"features": rows[4], "user_id": "shadowed-user"})
    httpx.put(f"{server.url}/api/admin/faults", json={"error_rate": 1.0}, headers=admin_headers)
    post(server, "/api/classify", {"features": rows[5], "user_id": "beta_bob"})  # a fallback
    assert (
        httpx.post(f"{server.url}/api/admin/rollout/evaluate", headers=admin_headers).status_code
        == 200
    )
    # refreshes drift and live-accuracy gauges
    httpx.get(f"{server.url}/api/status", headers=admin_headers)
    assert server.wait_until(
        lambda: "tabular_router_shadow_agreement_total" in httpx.get(f"{server.url}/metrics").text,
        timeout=10,
    )
    # an experiment with labelled traffic: the leader's per-variant gauges
    httpx.put(f"{server.url}/api/admin/faults", json={"error_rate": 0}, headers=admin_headers)
    flags["experiment"] = {
        "name": "monitoring",
        "variants": [
            {"name": "control", "model": "classic", "weight": 50, "control": True},
            {"name": "ensemble", "model": "ensemble", "weight": 50},
        ],
    }
    assert set_flags(flags).status_code == 200
    for i, row in enumerate(varied_rows(example_row, 8, seed=302)):
        answer = post(server, "/api/classify", {"features": row, "user_id": f"variant-{i}"}).json()
        post(
            server, "/api/feedback", {"request_id": answer["request_id"], "label": answer["label"]}
        )
    assert server.wait_until(
        lambda: "tabular_variant_accuracy{" in httpx.get(f"{server.url}/metrics").text,
        timeout=20,
    )

    exported = httpx.get(f"{server.url}/metrics").text
    missing = sorted(
        {
            m
            for e in expressions()
            for m in METRIC.findall(e)
            if not re.search(rf"^{m}[{{ ]", exported, re.MULTILINE)
        }
        - ONLY_ONCE_THEY_EXIST
    )
    assert missing == [], f"used by the dashboard or alerts but not exported: {missing}"


def test_series_of_things_that_may_not_exist_yet_are_declared():
    """Series labelled by a version on trial or a retrained version cannot be exported before one
    exists (tests/integration/test_retraining_cycle.py goes through them); their names must still
    be the ones the serving code declares."""
    used = {m for e in expressions() for m in METRIC.findall(e)}
    source = "\n".join(p.read_text() for p in (ROOT / "serving").rglob("*.py"))
    for name in ONLY_ONCE_THEY_EXIST:
        assert name in used, f"{name} is no longer used: drop it from ONLY_ONCE_THEY_EXIST"
        assert f'"{name}"' in source, f"{name} is not declared in serving/"
