"""The REST API over real HTTP against a real `bentoml serve` of the whole graph."""

from __future__ import annotations

import copy
import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.integration


def post(server, path: str, body, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=30, **kwargs)


def metric_values(server, name: str) -> dict[str, float]:
    """Every sample of one metric family on /metrics, keyed by the sample line's name+labels."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def varied_rows(example: dict, n: int, seed: int = 7) -> list[dict]:
    """n distinct valid rows (distinct per seed: one test's cache entries never serve another)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        row = copy.deepcopy(example)
        row["age"] = float(rng.integers(18, 80))
        row["income"] = float(rng.uniform(5_000, 150_000))
        row["debt_ratio"] = float(rng.uniform(0, 1))
        rows.append(row)
    return rows


def test_health_endpoints_and_openapi(server):
    assert httpx.get(f"{server.url}/livez").status_code == 200
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    assert "tabular_router_rollout_ratio" in httpx.get(f"{server.url}/metrics").text
    paths = httpx.get(f"{server.url}/docs.json").json()["paths"]
    for path in (
        "/api/classify",
        "/api/classify/batch",
        "/api/v1/classify/classic",
        "/api/v2/classify/ensemble",
        "/api/models",
    ):
        assert path in paths


def test_the_served_openapi_document_is_the_apps_own(server):
    """BentoML merges the FastAPI routes into /docs.json: nothing of theirs may be lost on the way
    (responses, security, typed bodies), and FastAPI's default 422 shape must not appear."""
    from fastapi.openapi.utils import get_openapi

    from serving.config.settings import ServingSettings
    from serving.http.app import create_app

    served = httpx.get(f"{server.url}/docs.json").json()
    app = create_app(ServingSettings())
    own = get_openapi(title=app.title, version=app.version, routes=app.routes)
    assert {path: served["paths"][path] for path in own["paths"]} == own["paths"]
    assert served["components"]["securitySchemes"] == own["components"]["securitySchemes"]
    for name, schema in own["components"]["schemas"].items():
        assert served["components"]["schemas"][name] == schema, name
    assert "HTTPValidationError" not in json.dumps(served)
    bad = httpx.post(f"{server.url}/api/classify", json={"features": {}, "extra": 1})
    assert bad.status_code == 422 and set(bad.json()) == {"error"}


def test_classify_routes_to_classic_by_default(server, example_row):
    response = post(server, "/api/classify", {"features": example_row, "user_id": "someone"})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "classic" and body["fallback"] is False and body["reason"] == "split"
    assert body["label"] in body["probabilities"]
    assert sum(body["probabilities"].values()) == pytest.approx(1.0)
    assert re.fullmatch(r"[A-Za-z0-9_-]{60,128}", body["request_id"])  # signed, url-safe
    assert body["model_version"]


def test_header_and_allow_list_route_to_the_ensemble(server, example_row):
    by_header = post(
        server,
        "/api/classify",
        {"features": example_row},
        headers={"X-Model-Preference": "ensemble"},
    )
    assert by_header.status_code == 200
    assert (by_header.json()["model"], by_header.json()["reason"]) == ("ensemble", "header")
    by_group = post(server, "/api/classify", {"features": example_row, "user_id": "beta_bob"})
    assert (by_group.json()["model"], by_group.json()["reason"]) == ("ensemble", "allow_list")


def test_batch_answers_every_instance_in_order(server, example_row):
    rows = varied_rows(example_row, 5)
    batch = post(
        server,
        "/api/classify/batch",
        {"instances": [{"features": r} for r in rows], "user_id": "beta_bob"},
    )
    assert batch.status_code == 200
    predictions = batch.json()["predictions"]
    assert len(predictions) == 5 and {p["model"] for p in predictions} == {"ensemble"}
    for row, prediction in zip(rows, predictions, strict=True):
        single = post(server, "/api/v2/classify/ensemble", {"features": row}).json()
        assert single["probabilities"] == pytest.approx(prediction["probabilities"], abs=1e-9)


def test_direct_endpoints_are_unrouted(server, example_row):
    classic = post(
        server, "/api/v1/classify/classic", {"features": example_row, "user_id": "beta_bob"}
    )
    ensemble = post(server, "/api/v2/classify/ensemble", {"features": example_row})
    assert (classic.status_code, classic.json()["model"], classic.json()["reason"]) == (
        200,
        "classic",
        "direct",
    )
    assert (ensemble.status_code, ensemble.json()["model"]) == (200, "ensemble")


def test_predictions_over_http_equal_in_process(server, example_row):
    from models import store

    rows = varied_rows(example_row, 4)
    for name, path in (
        ("classic", "/api/v1/classify/classic"),
        ("ensemble", "/api/v2/classify/ensemble"),
    ):
        model, _ = store.load(f"{name}:latest")
        expected = model.predict_proba(model.schema.encode_rows(rows))
        for row, want in zip(rows, expected, strict=True):
            got = post(server, path, {"features": row}).json()["probabilities"]
            np.testing.assert_allclose([got[c] for c in model.classes], want, atol=1e-9)


def test_models_endpoint_reports_versions_metrics_and_health(server):
    body = httpx.get(f"{server.url}/api/models").json()
    assert body["classic"]["ready"] and body["ensemble"]["ready"]
    assert body["ensemble"]["degraded"] is False and len(body["ensemble"]["members"]) == 7
    assert set(body["ensemble"]["metrics"]) == {"accuracy", "macro_f1", "log_loss"}
    assert body["classic"]["versions"][0]["version"] == body["classic"]["version"]
    assert abs(sum(body["ensemble"]["weights"].values()) - 1) < 1e-6


def _with(example: dict, **changes) -> dict:
    row = dict(example)
    for key, value in changes.items():
        if value is _DROP:
            row.pop(key)
        else:
            row[key] = value
    return row


_DROP = object()


@pytest.mark.parametrize(
    "make_body, status, field",
    [
        (lambda ex: {"features": _with(ex, age=_DROP)}, 422, "features.age"),
        (lambda ex: {"features": _with(ex, shoe_size=42)}, 422, "features.shoe_size"),
        (lambda ex: {"features": _with(ex, age="forty")}, 422, "features.age"),
        (lambda ex: {"features": _with(ex, age=True)}, 422, "features.age"),
        (lambda ex: {"features": _with(ex, region="atlantis")}, 422, "features.region"),
        (lambda ex: {"features": _with(ex, region=3)}, 422, "features.region"),
        (lambda ex: {"features": "not an object"}, 400, "features"),
        (lambda ex: {"features": ex, "user_id": "has spaces"}, 422, "user_id"),
        (lambda ex: {"features": ex, "unexpected": 1}, 422, "unexpected"),
        (lambda ex: {}, 422, "features"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(server, example_row, make_body, status, field):
    response = post(server, "/api/classify", make_body(example_row))
    assert response.status_code == status, response.text
    fields = [f["field"] for f in response.json()["error"]["fields"]]
    assert field in fields


@pytest.mark.parametrize(
    "content, headers, status",
    [
        (b"", {"content-type": "application/json"}, 422),
        (b'{"features": ', {"content-type": "application/json"}, 400),
        (b"NaN", {"content-type": "application/json"}, 400),
        (
            b"--x\r\n",
            {"content-type": "multipart/form-data"},
            415,
        ),  # no boundary: plain BentoML says 500
        (b"a=1", {"content-type": "application/x-www-form-urlencoded"}, 415),
        (b"x" * (3 * 1024 * 1024), {"content-type": "application/json"}, 413),
        (
            b'{"features": {"region": "' + b"x" * (10 * 1024 * 1024) + b'"}}',
            {"content-type": "application/json"},
            413,
        ),
        (
            b'{"features": {"age": {"a": [1, {"b": [null, [], {}]}]}, "income": [[["x"]]]}}',
            {"content-type": "application/json"},
            422,
        ),  # nested garbage
        (b'[{"features": {}}]', {"content-type": "application/json"}, 400),  # a list, not an object
    ],
)
def test_malformed_requests_are_4xx(server, content, headers, status):
    response = httpx.post(
        f"{server.url}/api/classify", content=content, headers=headers, timeout=30
    )
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]


def test_non_finite_numbers_are_rejected(server, example_row):
    body = json.dumps({"features": {**example_row, "income": float("inf")}})  # the literal Infinity
    assert "Infinity" in body
    response = httpx.post(
        f"{server.url}/api/classify", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "features.income"


def test_batch_limits(server, example_row):
    empty = post(server, "/api/classify/batch", {"instances": []})
    oversize = post(server, "/api/classify/batch", {"instances": [{"features": example_row}] * 257})
    bad_row = post(
        server,
        "/api/classify/batch",
        {"instances": [{"features": example_row}, {"features": _with(example_row, age="x")}]},
    )
    assert empty.status_code == 422 and oversize.status_code == 422
    assert bad_row.status_code == 422
    assert bad_row.json()["error"]["fields"][0]["field"] == "instances[1].features.age"


def test_concurrent_ensemble_requests_are_batched(server, example_row):
    rows = varied_rows(example_row, 64)
    with ThreadPoolExecutor(max_workers=32) as pool:
        responses = list(
            pool.map(lambda r: post(server, "/api/v2/classify/ensemble", {"features": r}), rows)
        )
    assert all(r.status_code == 200 for r in responses)
    # The router coalesces concurrent requests into shared calls (serving/routing/coalesce.py), and
    # the service's adaptive batching merges calls: either way a prediction call must hold several
    # rows.
    for metric in (
        "tabular_router_ensemble_call_rows_bucket",
        "tabular_ensemble_batch_rows_bucket",
    ):
        buckets = metric_values(server, metric)
        single = sum(v for k, v in buckets.items() if 'le="1.0"' in k)
        total = sum(v for k, v in buckets.items() if 'le="+Inf"' in k)
        assert total > single, f"no {metric} call held more than one row: {buckets}"
