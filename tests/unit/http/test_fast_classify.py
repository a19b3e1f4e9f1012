"""The lean POST /api/classify path (serving/http/middleware.py RequestGuard + classify.fast_route):
it must answer exactly like the full FastAPI route, and hand everything but the happy path to it."""

from __future__ import annotations

import json

import pytest

from serving.config.settings import ServingSettings
from serving.http.app import create_app
from serving.http.middleware import RequestGuard
from tests.doubles import AppClient, make_routed_core

CASES = [  # (body bytes, headers)
    (json.dumps({"features": {"x": 1.5}}), {}),
    (json.dumps({"features": {"x": 1.5}, "user_id": "vip"}), {}),
    (
        json.dumps({"features": {"x": -3}, "user_id": "u1", "context": {"tier": "paid"}}),
        {"X-Model-Preference": "ensemble"},
    ),
    (json.dumps({"features": {"x": 2}}), {"X-Model-Preference": " Classic "}),
    (json.dumps({"features": {"x": 2}}), {"X-Model-Preference": "gpt"}),  # bad header: 400
    (json.dumps({"features": {"x": "abc"}}), {}),  # not a number: 422 naming the field
    (json.dumps({"features": {}}), {}),  # missing feature
    (json.dumps({"features": {"x": 1}, "extra": 1}), {}),  # unknown key
    (json.dumps({"features": {"x": 1}, "user_id": "bad id!"}), {}),
    ('{"features": {"x": NaN}}', {}),
    ("{not json", {}),
    ("", {}),
    ("[]", {}),
]


def app_with(fast: bool):
    app = create_app(ServingSettings(fast_classify=fast))
    app.state.core = make_routed_core()
    stack = app.build_middleware_stack()
    guard = stack
    while not isinstance(guard, RequestGuard):
        guard = guard.app
    calls = []
    inner = guard.app

    async def counting(scope, receive, send):
        calls.append(scope["path"])
        await inner(scope, receive, send)

    guard.app = counting
    app.middleware_stack = stack
    return AppClient(app), calls


def answer(response):
    body = response.json()
    if isinstance(body, dict):
        body.pop("request_id", None)
    return response.status_code, response.headers["content-type"], body


@pytest.mark.parametrize("body,headers", CASES)
def test_fast_path_answers_exactly_like_the_full_route(body, headers):
    fast, _ = app_with(True)
    full, _ = app_with(False)
    headers = {"content-type": "application/json", **headers}
    assert answer(fast.post("/api/classify", content=body, headers=headers)) == answer(
        full.post("/api/classify", content=body, headers=headers)
    )


def test_valid_requests_skip_the_full_route_and_invalid_ones_take_it():
    client, calls = app_with(True)
    ok = client.post("/api/classify", json={"features": {"x": 1.0}, "user_id": "vip"})
    assert (
        ok.status_code == 200
        and ok.json()["model"] == "ensemble"
        and ok.json()["reason"] == "allow_list"
    )
    assert calls == []
    schema_error = client.post(
        "/api/classify", json={"features": {"x": "abc"}}
    )  # the router core's 422
    assert (
        schema_error.status_code == 422
        and schema_error.json()["error"]["fields"][0]["field"] == "features.x"
    )
    assert calls == []
    bad = client.post(
        "/api/classify", json={"features": {"x": 1.0}, "extra": 1}
    )  # the body model's 422
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_input"
    assert calls == ["/api/classify"]
    client.post("/api/classify/batch", json={"instances": [{"features": {"x": 1.0}}]})
    assert calls[-1] == "/api/classify/batch"  # other routes are untouched


def test_oversize_bodies_are_refused_on_the_fast_path_too():
    app = create_app(ServingSettings(max_body_bytes=1024))
    app.state.core = make_routed_core()
    client = AppClient(app)
    big = json.dumps({"features": {"x": 1.0}, "user_id": "u" * 2000})
    response = client.post(
        "/api/classify", content=big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


DIRECT = ["/api/v1/classify/classic", "/api/v2/classify/ensemble"]


@pytest.mark.parametrize("path", DIRECT)
@pytest.mark.parametrize("body,headers", CASES)
def test_direct_fast_paths_answer_exactly_like_the_full_routes(path, body, headers):
    fast, _ = app_with(True)
    full, _ = app_with(False)
    headers = {"content-type": "application/json", **headers}
    assert answer(fast.post(path, content=body, headers=headers)) == answer(
        full.post(path, content=body, headers=headers)
    )


@pytest.mark.parametrize("path,model", zip(DIRECT, ["classic", "ensemble"], strict=True))
def test_valid_direct_requests_skip_the_full_route(path, model):
    client, calls = app_with(True)
    ok = client.post(path, json={"features": {"x": 1.0}, "user_id": "vip"})
    assert ok.status_code == 200
    assert (ok.json()["model"], ok.json()["reason"], ok.json()["fallback"]) == (
        model,
        "direct",
        False,
    )
    assert calls == []
    bad = client.post(path, json={"features": {"x": 1.0}, "extra": 1})
    assert bad.status_code == 422 and calls == [path]


def test_a_direct_arm_that_cannot_answer_gives_the_full_routes_503():
    fast, _ = app_with(True)
    full, _ = app_with(False)
    for client in (fast, full):
        client.app.state.core.ensemble.info = None  # not ready: no fallback on a direct route
    body = json.dumps({"features": {"x": 1.0}})
    headers = {"content-type": "application/json"}
    got = answer(fast.post(DIRECT[1], content=body, headers=headers))
    assert got == answer(full.post(DIRECT[1], content=body, headers=headers))
    assert got[0] == 503 and got[2]["error"]["code"] == "model_unavailable"
