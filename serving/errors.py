"""One error hierarchy for the HTTP surface: each error carries its status and a JSON body."""

from __future__ import annotations

from typing import Any


class ServingError(Exception):
    """Base of every error the API answers with; subclasses fix the status code."""

    status_code = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        fields: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.fields = fields or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields:
            error["fields"] = self.fields
        return {"error": error}


class BadRequest(ServingError):
    status_code, code = 400, "bad_request"


class InvalidInput(ServingError):
    """The body parsed but does not fit the schema; `fields` names each offending field."""

    status_code, code = 422, "invalid_input"


class Unauthorized(ServingError):
    status_code, code = 401, "unauthorized"

    def __init__(
        self,
        message: str = "missing bearer token: send 'Authorization: Bearer <token>'",
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message, headers=headers or {"WWW-Authenticate": "Bearer"})


class Forbidden(ServingError):
    status_code, code = 403, "forbidden"


class NotFound(ServingError):
    status_code, code = 404, "not_found"


class Conflict(ServingError):
    status_code, code = 409, "conflict"


class PayloadTooLarge(ServingError):
    status_code, code = 413, "payload_too_large"


class UnsupportedMediaType(ServingError):
    status_code, code = 415, "unsupported_media_type"


class Overloaded(ServingError):
    """Too many requests in flight: refused at once rather than queued."""

    status_code, code = 503, "overloaded"

    def __init__(self, message: str = "server is at its in-flight request limit; retry shortly"):
        super().__init__(message, headers={"Retry-After": "1"})


class ArmUnavailable(ServingError):
    """A direct (unrouted) call whose model service failed or is not ready."""

    status_code, code = 503, "model_unavailable"


class StoreUnavailable(ServingError):
    """The shared state store cannot be reached: nothing was recorded; the client may retry."""

    status_code, code = 503, "state_store_unavailable"

    def __init__(self, message: str = "the state store is unreachable; nothing was recorded"):
        super().__init__(message, headers={"Retry-After": "2"})
