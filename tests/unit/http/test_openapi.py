"""The OpenAPI document tells the truth: every route declares the answers it can give, with the one
error body, its security scheme, and typed bodies (tests/reliability/test_fuzz.py checks the live
server's answers against it)."""

from __future__ import annotations

import json

import pytest
from fastapi.openapi.utils import get_openapi

from serving.config.settings import ServingSettings
from serving.http.app import create_app

ERROR = {"$ref": "#/components/schemas/ErrorResponse"}


@pytest.fixture(scope="module")
def document() -> dict:
    app = create_app(ServingSettings(admin_token="admin-token", user_token_secret="s" * 20))
    # what BentoML serves at /docs.json: get_openapi over the app's routes, not app.openapi()
    return get_openapi(title=app.title, version=app.version, routes=app.routes)


def operations(document: dict):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", method, path, operation


def test_fastapis_default_422_shape_is_gone_and_every_error_is_our_body(document):
    text = json.dumps(document)
    assert "HTTPValidationError" not in text and '"ValidationError"' not in text
    for name, _, _, operation in operations(document):
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                assert response["content"]["application/json"]["schema"] == ERROR, (name, status)
    error = document["components"]["schemas"]["ErrorDetail"]
    assert set(error["required"]) == {"code", "message"} and "fields" in error["properties"]


def test_every_route_declares_the_middlewares_answers(document):
    for name, method, _, operation in operations(document):
        declared = set(operation["responses"])
        assert "503" in declared, name  # the in-flight limit, on every request
        if method in ("post", "put"):
            assert {"400", "413", "415", "422"} <= declared, name
        if operation.get("parameters") or "requestBody" in operation:
            assert "422" in declared, name


def test_admin_and_user_routes_declare_their_security_scheme(document):
    schemes = document["components"]["securitySchemes"]
    assert schemes["AdminToken"] == {**schemes["AdminToken"], "type": "http", "scheme": "bearer"}
    assert schemes["UserToken"]["type"] == "apiKey" and schemes["UserToken"]["in"] == "header"
    assert schemes["UserToken"]["name"] == "X-User-Token"
    for name, _, path, operation in operations(document):
        declared = set(operation["responses"])
        if path.startswith("/api/admin/"):
            assert operation["security"] == [{"AdminToken": []}], name
            assert {"401", "403"} <= declared, name
        elif path in ("/api/status", "/api/experiment", "/api/challenger", "/api/retraining"):
            assert operation["security"] == [{"OperatorToken": []}], name
            assert {"401", "403"} <= declared, name
        elif path.startswith("/api/users/"):
            assert operation["security"] == [{"UserToken": []}, {"UserBearer": []}], name
            assert {"401", "403"} <= declared, name
        else:
            assert "security" not in operation and not {"401", "403"} & declared, name
        # the credentials are the schemes, not loose header parameters
        names = {p["name"].lower() for p in operation.get("parameters", [])}
        assert not names & {"authorization", "x-user-token"}, name


def test_typed_bodies_of_the_flag_and_version_endpoints(document):
    paths = document["paths"]
    flags = {"$ref": "#/components/schemas/FlagDocument"}
    for method in ("get", "put"):
        ok = paths["/api/admin/flags"][method]["responses"]["200"]
        assert ok["content"]["application/json"]["schema"] == flags
    put = paths["/api/admin/flags"]["put"]
    assert put["requestBody"]["content"]["application/json"]["schema"] == flags
    swap = paths["/api/admin/models/{name}/version"]["post"]
    body = swap["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["version"] and body["properties"]["version"]["type"] == "string"
    (name,) = swap["parameters"]
    assert name["schema"]["enum"] == ["classic", "ensemble"]
    ok = swap["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/VersionSwap"}
    feedback = paths["/api/feedback"]["post"]["responses"]["200"]["content"]["application/json"]
    assert feedback["schema"] == {"$ref": "#/components/schemas/FeedbackResult"}
    flag_document = document["components"]["schemas"]["FlagDocument"]
    rule = flag_document["properties"]["ensemble"]["properties"]["eligibility"]["items"]
    window = rule["properties"]["time_window"]["properties"]
    assert "from" in window and "from_" not in window and "in" in rule["properties"]  # as in YAML
    assert flag_document["additionalProperties"] is False


def test_the_schemas_are_in_the_openapi_3_0_dialect_the_document_declares(document):
    """BentoML labels /docs.json OpenAPI 3.0.2: no 2020-12 spellings (serving/http/openapi.py)."""

    def walk(node, where):
        if isinstance(node, dict):
            assert "const" not in node and "$defs" not in node, where
            assert node.get("type") != "null" and not isinstance(node.get("type"), list), where
            assert "exclusiveMinimum" not in node and "exclusiveMaximum" not in node, where
            if node.get("nullable"):
                assert "$ref" not in node, where  # a $ref's siblings are ignored in 3.0
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(document["paths"], "paths")
    walk(document["components"]["schemas"], "schemas")
    flags = document["components"]["schemas"]["FlagDocument"]["properties"]
    ttl = flags["cache"]["properties"]["ttl_s"]  # a number, gt=0
    assert (ttl["minimum"], ttl["not"]) == (0, {"enum": [0]})
    assert flags["ensemble"]["properties"]["deadline_ms"]["minimum"] == 1  # an integer, gt=0


def test_every_reference_resolves(document):
    schemas = document["components"]["schemas"]
    refs = set()

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.add(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert refs and all(r.startswith("#/components/schemas/") for r in refs)
    assert {r.rsplit("/", 1)[1] for r in refs} <= set(schemas)


def test_the_3_0_rewrite_leaves_names_and_values_alone():
    from serving.http.openapi import openapi_30

    schema = {
        "type": "object",
        "properties": {
            "const": {"type": "integer", "exclusiveMinimum": 0},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "maybe": {"anyOf": [{"$ref": "#/components/schemas/X"}, {"type": "null"}]},
            "kind": {"const": "error", "type": "string"},
        },
        "default": {"const": 1, "anyOf": None},
    }
    assert openapi_30(schema) == {
        "type": "object",
        "properties": {
            "const": {"type": "integer", "minimum": 1},
            "ratio": {"type": "number", "minimum": 0, "maximum": 1, "not": {"enum": [0, 1]}},
            "maybe": {"allOf": [{"$ref": "#/components/schemas/X"}], "nullable": True},
            "kind": {"enum": ["error"], "type": "string"},
        },
        "default": {"const": 1, "anyOf": None},
    }
