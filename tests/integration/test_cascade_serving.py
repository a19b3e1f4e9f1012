"""Dynamic selection over real HTTP: the cascade by header and by the flags' target, its answers
equal to the model's own cascade, its metrics, its feedback joins and its fallback."""

from __future__ import annotations

import copy

import httpx
import numpy as np
import pytest

from tests.conftest import BASELINE_FLAGS
from tests.integration.test_api import metric_values, post, varied_rows

pytestmark = pytest.mark.integration
CASCADE = {"X-Model-Preference": "cascade"}


def counter(server, name: str) -> float:
    return sum(v for k, v in metric_values(server, name).items() if k.split("{")[0] == name)


def test_the_ensemble_describes_its_cascade(server, trained_store):
    described = httpx.get(f"{server.url}/api/models", timeout=30).json()["ensemble"]["cascade"]
    trained = trained_store["cascade"]
    assert described["available"] is True
    assert (described["first_stage"], described["threshold"]) == (
        trained["first_stage"],
        trained["threshold"],
    )
    assert described["test"] == trained["test"]


def test_header_routes_to_the_cascade_with_the_models_own_answers(
    server, trained_store, example_row
):
    from models import store

    rows = varied_rows(example_row, 40, seed=1601)
    before = counter(server, "tabular_cascade_rows_total")
    escalated_before = counter(server, "tabular_cascade_escalated_total")
    answers = [post(server, "/api/classify", {"features": r}, headers=CASCADE) for r in rows]
    assert [a.status_code for a in answers] == [200] * len(rows)
    bodies = [a.json() for a in answers]
    assert {(b["model"], b["reason"], b["fallback"]) for b in bodies} == {
        ("cascade", "header", False)
    }
    # the served probabilities are the stored model's cascade, row by row
    model, _ = store.load(trained_store["ensemble"]["tag"])
    expected = model.predict_cascade(model.schema.encode_rows(rows))
    served = np.array([[b["probabilities"][c] for c in model.classes] for b in bodies])
    np.testing.assert_allclose(served, expected.probabilities, atol=1e-6)
    rows_counted = counter(server, "tabular_cascade_rows_total") - before
    escalated = counter(server, "tabular_cascade_escalated_total") - escalated_before
    assert rows_counted == len(rows) and escalated == int(expected.escalated.sum())


def test_flags_target_serves_the_ensembles_traffic_by_the_cascade(
    server, set_flags, admin_headers, example_row
):
    flags = copy.deepcopy(BASELINE_FLAGS)
    flags["ensemble"]["target"] = "cascade"
    assert set_flags(flags).status_code == 200
    rows = varied_rows(example_row, 6, seed=1602)
    bodies = [
        post(server, "/api/classify", {"features": r, "user_id": "beta_bob"}).json() for r in rows
    ]
    assert {(b["model"], b["reason"]) for b in bodies} == {("cascade", "allow_list")}
    other = post(server, "/api/classify", {"features": rows[0], "user_id": "x"}).json()
    assert other["model"] == "classic"  # the split (0 %) still sends everyone else to classic
    first = bodies[0]
    joined = post(server, "/api/feedback", {"request_id": first["request_id"], "label": "high"})
    assert joined.status_code == 200 and joined.json()["arm"] == "cascade"
    report = httpx.get(f"{server.url}/api/admin/evaluation", headers=admin_headers, timeout=30)
    arms = report.json()["arms"]
    # the allow-list chose the arm: its label is reported apart, never A/B evidence
    assert arms["cascade"]["count"] >= len(rows) and arms["cascade"]["forced_labelled"] >= 1
    assert report.json()["cascade_comparison"]["candidate"] == "cascade"


def test_a_failing_cascade_falls_back_to_classic(server, set_flags, admin_headers, example_row):
    assert set_flags(BASELINE_FLAGS).status_code == 200
    faults = httpx.put(
        f"{server.url}/api/admin/faults", json={"error_rate": 1.0}, headers=admin_headers
    )
    assert faults.status_code == 200
    row = varied_rows(example_row, 1, seed=1603)[0]
    body = post(server, "/api/classify", {"features": row}, headers=CASCADE).json()
    assert (body["model"], body["fallback"]) == ("classic", True)
