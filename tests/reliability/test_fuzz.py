"""Fuzzed inputs: schemathesis generates requests from the served OpenAPI document (/docs.json)
for every public endpoint; none may answer 5xx, and 2xx answers must conform to the schema.

(schemathesis's pytest plugin does not run under pytest 9, so the operations are driven with
hypothesis directly.)"""

from __future__ import annotations

import re

import hypothesis
import pytest
import schemathesis

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
PUBLIC = re.compile(r"^/api/(classify|v1|v2|models|feedback|status)")


def test_no_server_errors_and_schema_conformance(server):
    schema = schemathesis.openapi.from_url(f"{server.url}/docs.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    operations = [op for op in operations if PUBLIC.match(op.path)]
    assert {op.path for op in operations} >= {
        "/api/classify",
        "/api/classify/batch",
        "/api/feedback",
    }
    seen: dict[str, set[int]] = {}

    for operation in operations:

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=30,
            deadline=None,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        def fuzz(case):
            response = case.call(base_url=server.url, timeout=30)
            seen.setdefault(f"{operation.method.upper()} {operation.path}", set()).add(
                response.status_code
            )
            assert response.status_code < 500, (
                f"{case.method} {case.path} -> {response.status_code}: {response.text[:300]}"
            )
            if response.status_code < 300:
                case.validate_response(response)

        fuzz()
    print("\nfuzzed status codes:", {k: sorted(v) for k, v in seen.items()})
