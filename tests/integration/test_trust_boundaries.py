"""Attacks on the trust boundaries (issue 24, items 4 and 6) over real HTTP against a real
`bentoml serve`: a blank admin token, whitespace bearer tokens, huge numbers, bodies without a JSON
Content-Type (a cross-site form post), and the secrets' values in what the server shows."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import BASELINE_FLAGS
from tests.support import Server

pytestmark = pytest.mark.integration

VIEWER_TOKEN = "viewer-token-0f3a9c"
USER_SECRET = "user-token-secret-7d1e5b20"
REQUEST_ID_SECRET = "request-id-secret-4c8e1f77"
NBSP = b"Bearer \xa0"
"""`Authorization: Bearer <U+00A0>`: str.strip() made it "", which compare_digest matched
against an empty admin token."""


@pytest.fixture(scope="module")
def blank_admin_server(trained_store) -> Iterator[Server]:
    """A server whose operator set SERVING_ADMIN_TOKEN="" (meaning: no admin API)."""
    srv = Server(
        {
            "SERVING_ADMIN_TOKEN": "",
            "SERVING_VIEWER_TOKEN": VIEWER_TOKEN,
            "SERVING_USER_TOKEN_SECRET": USER_SECRET,
            "SERVING_REQUEST_ID_SECRET": REQUEST_ID_SECRET,
        },
        flags=BASELINE_FLAGS,
    ).start()
    yield srv
    srv.stop()


def test_an_empty_admin_token_never_opens_admin(blank_admin_server):
    url = blank_admin_server.url
    for authorization in (NBSP, b"Bearer \t\xa0", b"Bearer \xa0\xa0", b"bearer  \xa0"):
        response = httpx.get(
            f"{url}/api/admin/flags", headers={"Authorization": authorization}, timeout=10
        )
        assert response.status_code == 403, (authorization, response.text)
        assert "disabled" in response.json()["error"]["message"]
        put = httpx.put(
            f"{url}/api/admin/flags",
            json={"ensemble": {"enabled": True, "rollout_percentage": 100}},
            headers={"Authorization": authorization},
            timeout=10,
        )
        assert put.status_code == 403, put.text


def test_a_token_that_strips_to_nothing_is_no_token(blank_admin_server):
    url = blank_admin_server.url
    for authorization in (NBSP, b"Bearer \t\xa0", b"Basic dXNlcjrCoA=="):  # user:<U+00A0>
        response = httpx.get(
            f"{url}/api/status", headers={"Authorization": authorization}, timeout=10
        )
        assert response.status_code == 401, (authorization, response.text)
    ok = httpx.get(
        f"{url}/api/status", headers={"Authorization": f"Bearer \t{VIEWER_TOKEN}"}, timeout=10
    )
    assert ok.status_code == 200, ok.text  # spaces and tabs around a real token: stripped


@pytest.mark.parametrize(
    "value",
    [10**400, -(10**400), 10**20, 1e308, -1e308, 1.7976931348623157e308],
    ids=["400-digit", "-400-digit", "1e20-int", "1e308", "-1e308", "max-float"],
)
def test_huge_numbers_are_a_422_naming_the_field(blank_admin_server, example_row, value):
    url = blank_admin_server.url
    body = json.dumps({"features": {**example_row, "age": value}})
    for path in ("/api/classify", "/api/v1/classify/classic", "/api/v2/classify/ensemble"):
        response = httpx.post(
            f"{url}{path}",
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert response.status_code == 422, (path, response.status_code, response.text[:300])
        error = response.json()["error"]
        assert error["code"] == "invalid_input"
        assert [f["field"] for f in error["fields"]] == ["features.age"]
    batch = {"instances": [{"features": example_row}, {"features": {**example_row, "age": value}}]}
    response = httpx.post(
        f"{url}/api/classify/batch",
        content=json.dumps(batch),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 422, response.text[:300]
    assert [f["field"] for f in response.json()["error"]["fields"]] == ["instances[1].features.age"]


def test_far_but_sane_values_are_still_served(blank_admin_server, example_row):
    response = httpx.post(
        f"{blank_admin_server.url}/api/classify",
        json={"features": {**example_row, "age": -1e6}},
        timeout=30,
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "headers",
    [
        {},  # fetch(url, {method: "POST", body: new Blob([json])}) sends no Content-Type
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "multipart/form-data; boundary=x"},
    ],
    ids=["none", "text-plain", "form", "multipart"],
)
def test_bodies_without_a_json_content_type_are_415(blank_admin_server, example_row, headers):
    url = blank_admin_server.url
    served = httpx.post(f"{url}/api/classify", json={"features": example_row}, timeout=30)
    assert served.status_code == 200
    feedback = {"request_id": served.json()["request_id"], "label": served.json()["label"]}
    for path, body in (
        ("/api/classify", {"features": example_row}),
        ("/api/classify/batch", {"instances": [{"features": example_row}]}),
        ("/api/feedback", feedback),
        ("/api/feedback/batch", {"items": [feedback]}),
    ):
        request = httpx.Request("POST", f"{url}{path}", content=json.dumps(body).encode())
        for name in ("content-type",):
            request.headers.pop(name, None)
        request.headers.update(headers)
        response = httpx.Client(timeout=30).send(request)
        assert response.status_code == 415, (path, headers, response.text)
        assert response.json()["error"]["code"] == "unsupported_media_type"
    document = httpx.get(f"{url}/docs.json", timeout=10).json()
    for path in ("/api/classify", "/api/classify/batch", "/api/feedback", "/api/feedback/batch"):
        assert "415" in document["paths"][path]["post"]["responses"], path


def test_no_secret_value_in_what_the_server_shows_or_logs(blank_admin_server, example_row):
    """The answers an operator or a client can read, and the server's own log."""
    url = blank_admin_server.url
    viewer = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
    shown = [
        httpx.get(f"{url}/api/status", headers=viewer, timeout=10).text,
        httpx.get(f"{url}/api/models", headers=viewer, timeout=10).text,
        httpx.get(f"{url}/docs.json", timeout=10).text,
        httpx.get(f"{url}/metrics", timeout=10).text,
        httpx.get(f"{url}/api/admin/flags", headers=viewer, timeout=10).text,
        httpx.post(f"{url}/api/classify", json={"features": example_row}, timeout=30).text,
    ]
    shown.append(blank_admin_server.log_path.read_text(errors="replace"))
    for secret in (VIEWER_TOKEN, USER_SECRET, REQUEST_ID_SECRET):
        assert not any(secret in text for text in shown), secret
