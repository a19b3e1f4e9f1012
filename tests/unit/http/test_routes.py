"""Routes in process (stub arms, no server): admin flags and model versions keep their validation
and its order (auth before the body), and every error answer is the declared error body."""

from __future__ import annotations

import json

import pytest

from serving.config.flags import dump_flag_config
from serving.config.settings import ServingSettings
from serving.control import ControlPlane
from serving.http.app import create_app
from serving.http.errors import ErrorResponse
from serving.http.schemas import FeedbackResults, VersionSwap
from tests.doubles import AppClient, make_routed_core

ADMIN = {"Authorization": "Bearer admin-token"}


@pytest.fixture
def core():
    return make_routed_core()


@pytest.fixture
def client(core) -> AppClient:
    app = create_app(ServingSettings(admin_token="admin-token", max_body_bytes=4096))
    app.state.core, app.state.control = core, ControlPlane(core)
    return AppClient(app)


def error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return ErrorResponse.model_validate(response.json()).error.model_dump()


def test_flags_round_trip_as_the_flag_document(client, core):
    got = client.get("/api/admin/flags", headers=ADMIN)
    assert got.status_code == 200 and got.json() == core.flags_document()
    config = {**got.json(), "ensemble": {**got.json()["ensemble"], "rollout_percentage": 40}}
    put = client.put("/api/admin/flags", json=config, headers=ADMIN)
    assert put.status_code == 200 and put.json() == dump_flag_config(core.flags)
    assert core.flags.ensemble.rollout_percentage == 40


def test_a_bad_flag_config_is_a_422_naming_fields_and_the_old_config_stays(client, core):
    bad = {"ensemble": {"rollout_percentage": 250, "shadow": {"sample_rate": 2}}, "typo": True}
    body = error(client.put("/api/admin/flags", json=bad, headers=ADMIN), 422)
    assert body["message"].startswith("flag config rejected, previous config kept")
    fields = {f["field"] for f in body["fields"]}
    assert {"ensemble.rollout_percentage", "ensemble.shadow.sample_rate", "typo"} <= fields
    assert core.flags.ensemble.rollout_percentage == 0
    for raw in (b"[]", b"null", b"", b"{not json"):
        response = client.put(
            "/api/admin/flags",
            content=raw,
            headers={**ADMIN, "content-type": "application/json"},
        )
        assert error(response, 400)["code"] == "bad_request"


def test_credentials_are_checked_before_the_body_is_read(client):
    garbage = {"content": b"{not json", "headers": {"content-type": "application/json"}}
    assert error(client.put("/api/admin/flags", **garbage), 401)["code"] == "unauthorized"
    wrong = {**garbage["headers"], "Authorization": "Bearer nope"}
    response = client.put("/api/admin/flags", content=b"{", headers=wrong)
    assert error(response, 403)["code"] == "forbidden"
    assert client.put("/api/admin/flags", **garbage).headers["www-authenticate"] == "Bearer"


def test_version_swap_validates_name_then_body(client, core):
    calls = []

    async def swap_model(name, version):
        calls.append((name, version))
        return {"name": name, "from": f"{name}:old", "to": f"{name}:new"}

    client.app.state.control.swap_model = swap_model
    url = "/api/admin/models/{}/version"
    as_json = {**ADMIN, "Content-Type": "application/json"}
    assert error(client.post(url.format("gpt"), content=b"[", headers=as_json), 404)
    assert error(client.post(url.format("ensemble"), content=b"[1]", headers=as_json), 400)
    for body in ({}, {"version": ""}, {"version": 3}, {"version": "x" * 65}):
        missing = error(client.post(url.format("ensemble"), json=body, headers=ADMIN), 422)
        assert missing["fields"] == [{"field": "version", "message": "required string"}]
    ok = client.post(url.format("classic"), json={"version": "previous", "extra": 1}, headers=ADMIN)
    assert ok.status_code == 200 and calls == [("classic", "previous")]
    assert ok.json() == {"name": "classic", "from": "classic:old", "to": "classic:new"}
    VersionSwap.model_validate(ok.json())


def test_routes_that_need_live_evaluation_answer_404_without_it(client):
    assert error(client.get("/api/admin/evaluation", headers=ADMIN), 404)["code"] == "not_found"
    assert error(client.post("/api/admin/rollout/pause", headers=ADMIN), 404)
    feedback = {"request_id": "r1", "label": "yes"}
    assert error(client.post("/api/feedback", json=feedback), 404)
    assert error(client.post("/api/feedback/batch", json={"items": [feedback]}), 404)


def test_feedback_batch_answers_each_item_in_order(client, core):
    class Live:
        def feedback(self, request_id, label, rating):
            if label != "yes":
                from serving.errors import InvalidInput

                raise InvalidInput("unknown label")
            return {
                "request_id": request_id,
                "status": "recorded",
                "arm": "classic",
                "predicted": "yes",
                "correct": True,
            }

    client.app.state.control.live = Live()
    items = [{"request_id": "a", "label": "yes"}, {"request_id": "b", "label": "no"}]
    response = client.post("/api/feedback/batch", json={"items": items})
    assert response.status_code == 200
    assert response.json()["results"][1] == {
        "request_id": "b",
        "status": "error",
        "error": {"code": "invalid_input", "message": "unknown label"},
    }
    FeedbackResults.model_validate(response.json())


@pytest.mark.parametrize(
    "method, path, kwargs, status",
    [
        ("POST", "/api/classify", {"content": b"x" * 5000}, 413),
        ("POST", "/api/classify", {"content": b"a=1", "headers": {"content-type": "text/x"}}, 415),
        ("POST", "/api/classify", {"content": b"{", "headers": {"content-length": "x1"}}, 400),
        ("POST", "/api/classify/batch", {"json": {"instances": []}}, 422),
        ("POST", "/api/v1/classify/classic", {"json": {"features": {"x": "a"}}}, 422),
        ("GET", "/api/admin/rollout/decisions?limit=0", {"headers": ADMIN}, 422),
        ("GET", "/api/admin/flags/explain?user_id=" + "u" * 200, {"headers": ADMIN}, 422),
        ("GET", "/api/admin/shadow", {}, 401),
        ("GET", "/api/nowhere", {}, 404),
    ],
)
def test_every_error_is_the_declared_body(client, method, path, kwargs, status):
    error(client.request(method, path, **kwargs), status)


def test_overload_is_a_503_with_retry_after(core):
    app = create_app(ServingSettings(max_in_flight=1))
    app.state.core = core
    stack = app.build_middleware_stack()
    guard = stack
    while not hasattr(guard, "in_flight"):
        guard = guard.app
    guard.in_flight = 1  # one request already in flight
    app.middleware_stack = stack
    response = AppClient(app).get("/api/status")
    assert error(response, 503)["code"] == "overloaded" and response.headers["retry-after"] == "1"


def test_shadow_and_status_answer_json_objects(client):
    shadow = client.get("/api/admin/shadow", headers=ADMIN)
    assert shadow.status_code == 200 and shadow.json()["compared"] == 0
    assert client.get("/api/status").status_code == 401  # operators only
    status = client.get("/api/status", headers=ADMIN)
    assert status.status_code == 200 and json.loads(status.text)["split"]["enabled"] is True
