"""Fuzzed inputs: schemathesis generates requests from the served OpenAPI document (/docs.json) for
every /api/ operation, the admin and user-token ones included; no answer may be a 5xx, and every
answer must be one the document declares for that operation: its status code, its content type,
its body schema and its declared headers.

The server is this module's own (admin calls change flags, rollout state and served versions).
(schemathesis's pytest plugin does not run under pytest 9, so the operations are driven with
hypothesis directly.)"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import unquote

import httpx
import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from serving.routing.preferences import sign_user_token, valid_user_id
from tests.conftest import BASELINE_FLAGS
from tests.support import ADMIN_TOKEN, Server

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
USER_SECRET = "fuzz-user-token-secret"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.fixture(scope="module")
def fuzz_server(trained_store) -> Iterator[Server]:
    srv = Server({"SERVING_USER_TOKEN_SECRET": USER_SECRET}, flags=BASELINE_FLAGS).start()
    yield srv
    srv.stop()


def credentials(case) -> dict[str, str]:
    """The admin token for every call; the path's own user token on the user routes."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    user_id = unquote(str((case.path_parameters or {}).get("user_id", "")))
    if case.operation.path.startswith("/api/users/") and valid_user_id(user_id):
        headers["X-User-Token"] = sign_user_token(USER_SECRET, user_id)
    return headers


def valid_bodies(url: str, row: dict) -> dict[str, tuple[dict, int]]:
    """Bodies the server accepts, per operation, and how many cases to run with each: random data
    rarely fits the model's features, and the 200 answers must be checked against the document
    too. (The rest of each case, headers and path, is still generated.)"""
    served = httpx.post(f"{url}/api/classify", json={"features": row}, timeout=30).json()
    feedback = {"request_id": served["request_id"], "label": served["label"], "rating": 7}
    return {
        "POST /api/classify": ({"features": row, "user_id": "fuzz-user"}, 10),
        "POST /api/classify/batch": ({"instances": [{"features": row}] * 3}, 10),
        "POST /api/v1/classify/classic": ({"features": row}, 5),
        "POST /api/v2/classify/ensemble": ({"features": row}, 5),
        "POST /api/feedback": (feedback, 5),
        "POST /api/feedback/batch": ({"items": [feedback, {**feedback, "label": "?"}]}, 5),
        "PUT /api/admin/flags": (BASELINE_FLAGS, 5),
        "POST /api/admin/models/{name}/version": ({"version": "latest"}, 3),
    }


def test_every_answer_is_declared_and_none_is_a_server_error(fuzz_server, example_row):
    document = httpx.get(f"{fuzz_server.url}/docs.json", timeout=10).json()
    assert "HTTPValidationError" not in str(document)  # FastAPI's default 422: never sent
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    operations = [op for op in operations if op.path.startswith("/api/")]
    assert {op.label for op in operations} >= {
        "POST /api/classify",
        "POST /api/classify/batch",
        "POST /api/feedback",
        "PUT /api/admin/flags",
        "POST /api/admin/models/{name}/version",
        "PUT /api/users/{user_id}/preference",
    }
    bodies = valid_bodies(fuzz_server.url, example_row)
    seen: dict[str, set[int]] = {}
    for operation in operations:
        fuzz(fuzz_server.url, operation.as_strategy(), 30, seen)
        if operation.body or list(operation.iter_parameters()):  # something to make invalid
            fuzz(fuzz_server.url, operation.as_strategy(GenerationMode.NEGATIVE), 15, seen)
        if operation.label in bodies:
            body, examples = bodies[operation.label]
            fuzz(fuzz_server.url, operation.as_strategy(body=body), examples, seen)
    print("\nfuzzed status codes:", {k: sorted(v) for k, v in sorted(seen.items())})
    assert all(200 in seen[label] for label in bodies), seen


def fuzz(url: str, strategy, examples: int, seen: dict) -> None:
    @hypothesis.given(case=strategy)
    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def run(case):
        case.headers = {**(case.headers or {}), **credentials(case)}
        response = case.call(base_url=url, timeout=30)
        seen.setdefault(case.operation.label, set()).add(response.status_code)
        case.validate_response(response, checks=CHECKS)

    run()
