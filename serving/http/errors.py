"""One JSON error shape at the HTTP edge: the exception handlers, and the shape's OpenAPI model.

`serving/errors.py` holds the `ServingError` hierarchy that the rest of the code raises; here each
becomes `{"error": {"code", "message", "fields"}}` with its status code and headers, and so do
FastAPI's own errors (a body that does not validate, an unknown path). `responses(...)` declares
those answers per route, so the OpenAPI document names every status a route can really give.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.config.flags import FlagConfigError
from serving.errors import BadRequest, InvalidInput, ServingError
from serving.http.openapi import ApiModel


class FieldError(ApiModel):
    field: str = Field(description="Path of the offending field: features.age, instances[3].x")
    message: str


class ErrorDetail(ApiModel):
    code: str = Field(
        description="Stable error code: bad_request, invalid_input, unauthorized, forbidden, "
        "not_found, conflict, payload_too_large, unsupported_media_type, overloaded, "
        "model_unavailable, method_not_allowed"
    )
    message: str = Field(description="What went wrong, for a person")
    fields: list[FieldError] = Field(
        default_factory=list, description="Each offending field; left out when none"
    )


class ErrorResponse(ApiModel):
    """Every error the API answers with (serving/errors.py `ServingError.body()`)."""

    error: ErrorDetail


WHEN = {
    400: "The body is not JSON or not a JSON object, a field has the wrong JSON shape, or the "
    "Content-Length header is invalid",
    401: "No credentials: send 'Authorization: Bearer <token>'",
    403: "Wrong credentials, or the feature is disabled on the server",
    404: "The resource does not exist, or the feature is not available in this router",
    409: "The action conflicts with the configuration in force",
    413: "The body is larger than the server accepts (SERVING_MAX_BODY_BYTES)",
    415: "The body is not application/json",
    422: "The request parsed but does not fit the schema: `fields` names each offending field",
    503: "Too many requests in flight (with Retry-After), or a model that cannot answer",
}
HEADERS = {
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    503: {
        "Retry-After": {
            "description": "Seconds to wait; sent when the router is at its in-flight limit",
            "schema": {"type": "string"},
        }
    },
}
BODY = (400, 413, 415, 422)
"""What any request with a body can get: from the middleware (413, 415, a bad Content-Length) and
from parsing it (400 not JSON or not an object, 422 not the schema)."""


def responses(*codes: int, notes: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error codes, all with the one error body; `notes` replace the
    general description of a code where a route knows better (e.g. 404: unknown request_id)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        out[code] = {"model": ErrorResponse, "description": (notes or {}).get(code, WHEN[code])}
        if code in HEADERS:
            out[code]["headers"] = HEADERS[code]
    return out


def unroutable_404(note: str | None = None) -> dict[int | str, dict[str, Any]]:
    """404 on a route with a path parameter: our error body, or BentoML's plain-text "Not Found"
    when the path cannot reach the app at all (a newline, %0A, in the parameter)."""
    out = responses(404, notes={404: note} if note else None)
    out[404]["description"] += "; text/plain when the path cannot be routed (a newline in it)"
    out[404]["content"] = {"text/plain": {"schema": {"type": "string"}}}
    return out


def install_error_handlers(app: FastAPI) -> None:
    # Starlette types a handler as taking any Exception, though it only calls one with the
    # class it was registered for: the narrower handlers are right, the stub is too wide.
    app.add_exception_handler(ServingError, _serving_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(FlagConfigError, _flag_config_error)  # type: ignore[arg-type]


async def _serving_error(_: Request, exc: ServingError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        {"error": {"code": code, "message": str(exc.detail)}},
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    """A body that does not parse or fit its model: 400 when its JSON shape is wrong (not JSON,
    not an object), else 422; `fields` names each offending field by path."""
    fields = [field_error(err) for err in exc.errors()]
    body_error = any(
        err["type"] in {"json_invalid", "model_attributes_type", "dict_type"}
        and len(err["loc"]) <= 2
        for err in exc.errors()
    )
    error = (BadRequest if body_error else InvalidInput)(
        "request body is not valid: "
        + "; ".join(f"{f['field']}: {f['message']}" for f in fields[:10]),
        fields=fields[:50],
    )
    return JSONResponse(error.body(), status_code=error.status_code)


async def _flag_config_error(_: Request, exc: FlagConfigError) -> JSONResponse:
    """A rejected flag config (PUT /api/admin/flags): the core validated it before applying
    anything, so the config in force is kept."""
    error = InvalidInput(
        f"flag config rejected, previous config kept: {exc}",
        fields=[
            {"field": p.split(":", 1)[0], "message": p.split(":", 1)[-1].strip()}
            for p in exc.problems
        ],
    )
    return JSONResponse(error.body(), status_code=error.status_code)


def field_error(err: Any) -> dict[str, str]:
    """A pydantic/FastAPI error as {field, message}, with the field as a dotted path."""
    if err["type"] == "json_invalid":
        position = err["loc"][-1] if len(err["loc"]) > 1 else "?"
        detail = err.get("ctx", {}).get("error", err["msg"])
        return {"field": "body", "message": f"invalid JSON near character {position}: {detail}"}
    path = (
        ".".join(str(p) for p in err["loc"][1:] if p != "body")
        if err["loc"][:1] == ("body",)
        else ".".join(map(str, err["loc"]))
    )
    return {"field": path or "body", "message": err["msg"]}
