"""The ASGI guard in front of every route: JSON-only bodies, a body size limit, an in-flight limit,
and the lean paths ("fast routes") that answer a route's happy path without FastAPI's machinery."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from serving.errors import (
    BadRequest,
    Overloaded,
    PayloadTooLarge,
    ServingError,
    UnsupportedMediaType,
)
from serving.observability import metrics

FastRoute = Callable[[bytes, dict[str, str]], Awaitable[bytes | None]]
"""A lean handler: (body, lower-cased headers) -> the JSON answer (200), or None to let the full
route answer (everything but the happy path, so errors stay exactly the route's)."""


class RequestGuard:
    """ASGI middleware: JSON-only bodies, a body size limit, and an in-flight limit (fail fast).

    Runs before any parsing, so a malformed upload (wrong content type, a multipart body without
    a boundary, a 10 MB string) is a 4xx here instead of an error deeper in the stack.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        max_in_flight: int,
        fast_routes: dict[str, FastRoute] | None = None,
    ):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.fast_routes = fast_routes if fast_routes is not None else {}
        """POST path -> its FastRoute."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        error = self._check(scope["method"], headers)
        if error is None and self.in_flight >= self.max_in_flight:
            metrics.ADMISSION_REJECTED.labels(reason="in_flight").inc()
            error = Overloaded()
        if error is not None:
            return await _send_error(send, error)
        self.in_flight += 1
        try:
            fast = self.fast_routes.get(scope["path"]) if scope["method"] == "POST" else None
            if fast is None:
                await self.app(scope, self._limited(receive), send)
                return
            body = await self._read_body(receive)
            try:
                answer = await fast(body, headers)
            except ServingError as exc:
                return await _send_error(send, exc)
            if answer is None:  # not the happy path: the full route answers, from the body read
                await self.app(scope, _replay(body, receive), send)
                return
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(answer)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": answer})
        except _BodyTooLarge:
            await _send_error(
                send, PayloadTooLarge(f"request body exceeds {self.max_body_bytes} bytes")
            )
        except _ClientGone:
            pass
        finally:
            self.in_flight -= 1

    def _check(self, method: str, headers: dict[str, str]) -> ServingError | None:
        if method not in ("POST", "PUT", "PATCH"):
            return None
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return BadRequest("invalid Content-Length header")
            if int(length) > self.max_body_bytes:
                metrics.ADMISSION_REJECTED.labels(reason="too_large").inc()
                return PayloadTooLarge(
                    f"request body of {length} bytes exceeds {self.max_body_bytes}"
                )
        no_body = length == "0" or (length is None and "transfer-encoding" not in headers)
        if no_body and "content-type" not in headers:
            return None  # a bodiless POST (an admin action): nothing to be JSON
        # A body must say it is JSON: without a Content-Type it used to be read as JSON anyway,
        # so a cross-site form post (a Blob without a type) reached classify and feedback.
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json" and not content_type.endswith("+json"):
            got = repr(content_type[:60]) if content_type else "no Content-Type"
            return UnsupportedMediaType(f"send the body as application/json (got {got})")
        return None

    async def _read_body(self, receive: Receive) -> bytes:
        chunks, more, wrapped = [], True, self._limited(receive)
        while more:
            message = await wrapped()
            if message["type"] != "http.request":  # the client went away: nobody to answer
                raise _ClientGone
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        return b"".join(chunks)

    def _limited(self, receive: Receive) -> Receive:
        seen = 0

        async def wrapped():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise _BodyTooLarge
            return message

        return wrapped


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that yields the already-read body once, then whatever the client sends next."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _send_error(send: Send, error: ServingError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
