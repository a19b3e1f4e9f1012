"""The public HTTP API (FastAPI, mounted into the BentoML router service).

Each endpoint: validate -> call the router core -> map errors to HTTP. FastAPI rather than
`@bentoml.api` for the public surface because it needs GET/PUT routes, exact status codes and
one JSON error shape; BentoML merges these routes into its OpenAPI document at /docs.json.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.config.flags import FlagConfigError, dump_flag_config
from serving.config.settings import ServingSettings
from serving.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    ServingError,
    Unauthorized,
    UnsupportedMediaType,
)
from serving.http.preferences import create_preferences_router
from serving.http.schemas import (
    BatchPrediction,
    BatchRequest,
    ClassifyRequest,
    Feedback,
    FeedbackBatch,
    Prediction,
)
from serving.observability import metrics
from serving.routing.core import RouterCore

log = logging.getLogger(__name__)

PREFERENCE_HEADER = "X-Model-Preference"
STATIC = Path(__file__).parent / "static"


async def _core(request: Request) -> RouterCore:
    # async on purpose: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per request
    return request.app.state.core


# Module level: with postponed annotations FastAPI resolves these names in the module's globals.
Core = Annotated[RouterCore, Depends(_core)]
Preference = Annotated[
    str | None,
    Header(
        alias=PREFERENCE_HEADER,
        description="classic|ensemble: override the split (if enabled in flags)",
    ),
]


def create_app(settings: ServingSettings) -> FastAPI:
    """Build the API; the BentoML service puts its RouterCore on `app.state.core` at start-up."""
    app = FastAPI(
        title="Tabular classification router",
        version="1.0",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    fast_routes: dict[str, FastRoute] = {}
    app.add_middleware(
        RequestGuard,
        max_body_bytes=settings.max_body_bytes,
        max_in_flight=settings.max_in_flight,
        fast_routes=fast_routes,
    )

    @app.exception_handler(ServingError)
    async def _serving_error(_: Request, exc: ServingError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            {"error": {"code": code, "message": str(exc.detail)}},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [_field_error(err) for err in exc.errors()]
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

    def preference(value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lower()
        if value not in ("classic", "ensemble"):
            raise BadRequest(
                f"{PREFERENCE_HEADER} must be 'classic' or 'ensemble', got {value[:40]!r}"
            )
        return value

    def require_admin(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> None:
        token = settings.admin_token
        if token is None:
            raise Forbidden(
                "admin API is disabled: set SERVING_ADMIN_TOKEN on the server to enable it"
            )
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthorized()
        if not hmac.compare_digest(
            authorization[7:].strip().encode(), token.get_secret_value().encode()
        ):
            raise Forbidden("invalid admin token")

    Admin = Depends(require_admin)
    app.include_router(create_preferences_router(settings, require_admin))

    # ---------------------------------------------------------------- prediction
    @app.post(
        "/api/classify",
        response_model=Prediction,
        tags=["classify"],
        summary="Classify one instance (routed)",
    )
    async def classify(
        body: ClassifyRequest, router: Core, x_model_preference: Preference = None
    ) -> Any:
        out = await router.classify(
            [body.features],
            user_id=body.user_id,
            header=preference(x_model_preference),
            attributes=body.context,
        )
        return Prediction.of(out[0])

    async def classify_fast(body: bytes, headers: dict[str, str]) -> bytes | None:
        """POST /api/classify without FastAPI's per-request machinery (profiled: a third of the router's
        CPU per request): the same model validates the body and renders the answer. Anything but the
        happy path (a body or header that does not validate) returns None, and the full route answers
        it, so error responses stay exactly those of the route above."""
        try:
            body_model = ClassifyRequest.model_validate_json(body)
            header = preference(headers.get(PREFERENCE_HEADER.lower()))
        except (ValidationError, ServingError):
            return None
        out = await app.state.core.classify(
            [body_model.features],
            user_id=body_model.user_id,
            header=header,
            attributes=body_model.context,
        )
        return Prediction.of(out[0]).model_dump_json().encode()

    if settings.fast_classify:
        fast_routes["/api/classify"] = classify_fast

    @app.post(
        "/api/classify/batch",
        response_model=BatchPrediction,
        tags=["classify"],
        summary="Classify many instances (routed)",
    )
    async def classify_batch(
        body: BatchRequest, router: Core, x_model_preference: Preference = None
    ) -> Any:
        if len(body.instances) > settings.max_batch_instances:
            raise InvalidInput(
                f"too many instances: {len(body.instances)} > {settings.max_batch_instances}",
                fields=[
                    {
                        "field": "instances",
                        "message": f"at most {settings.max_batch_instances} instances",
                    }
                ],
            )
        out = await router.classify(
            [i.features for i in body.instances],
            user_id=body.user_id,
            header=preference(x_model_preference),
            attributes=body.context,
            endpoint="classify_batch",
            prefix="instances",
        )
        return BatchPrediction(predictions=[Prediction.of(p) for p in out])

    @app.post(
        "/api/v1/classify/classic",
        response_model=Prediction,
        tags=["classify"],
        summary="Classic model, unrouted",
    )
    async def classify_classic(body: ClassifyRequest, router: Core) -> Any:
        return Prediction.of((await router.classify_direct("classic", [body.features]))[0])

    @app.post(
        "/api/v2/classify/ensemble",
        response_model=Prediction,
        tags=["classify"],
        summary="Ensemble model, unrouted",
    )
    async def classify_ensemble(body: ClassifyRequest, router: Core) -> Any:
        return Prediction.of((await router.classify_direct("ensemble", [body.features]))[0])

    # ---------------------------------------------------------------- live evaluation
    def live_of(router: RouterCore):
        if router.live is None:
            raise NotFound("live evaluation is not available (no classic model in this router)")
        return router.live

    @app.post(
        "/api/feedback",
        tags=["feedback"],
        summary="Join the true label (and a 1..10 rating) to a served prediction",
    )
    async def feedback(body: Feedback, router: Core) -> Any:
        live = live_of(router)
        return await asyncio.to_thread(live.feedback, body.request_id, body.label, body.rating)

    @app.post(
        "/api/feedback/batch",
        tags=["feedback"],
        summary="Many feedback items; each answered in order",
    )
    async def feedback_batch(body: FeedbackBatch, router: Core) -> Any:
        live = live_of(router)

        def join_all() -> list[dict[str, Any]]:
            out = []
            for item in body.items:
                try:
                    out.append(live.feedback(item.request_id, item.label, item.rating))
                except ServingError as exc:
                    out.append(
                        {
                            "request_id": item.request_id,
                            "status": "error",
                            "error": exc.body()["error"],
                        }
                    )
            return out

        return {"results": await asyncio.to_thread(join_all)}

    @app.get(
        "/api/admin/evaluation",
        tags=["admin"],
        dependencies=[Admin],
        summary="Live metrics per arm, A/B statistics, go/no-go",
    )
    async def evaluation(router: Core) -> Any:
        return await asyncio.to_thread(live_of(router).report)

    @app.get(
        "/api/admin/drift",
        tags=["admin"],
        dependencies=[Admin],
        summary="Input drift against the training reference",
    )
    async def drift(router: Core) -> Any:
        return await asyncio.to_thread(live_of(router).drift_report)

    @app.get(
        "/api/admin/rollout/decisions",
        tags=["admin"],
        dependencies=[Admin],
        summary="The rollout decision log",
    )
    async def decisions(router: Core, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> Any:
        return {"decisions": await asyncio.to_thread(live_of(router).store.decisions, limit)}

    @app.post(
        "/api/admin/rollout/{action}",
        tags=["admin"],
        dependencies=[Admin],
        summary="pause | resume | promote | rollback | evaluate",
    )
    async def rollout_action(
        action: str, router: Core, reason: Annotated[str, Query(max_length=200)] = "manual"
    ) -> Any:
        live = live_of(router)
        if action == "evaluate":
            return await asyncio.to_thread(router.rollout_tick, True) or {
                "action": "none",
                "reasons": ["automatic rollout is off"],
            }
        operations = {
            "pause": live.controller.pause,
            "resume": live.controller.resume,
            "promote": live.controller.promote,
            "rollback": live.controller.rollback,
        }
        if action not in operations:
            raise NotFound(
                f"unknown rollout action {action!r}; use pause, resume, promote, rollback or evaluate"
            )
        if action != "rollback" and not router.flags.rollout.enabled:
            raise Conflict(
                "automatic rollout is off (rollout.enabled: false in the flags): change the split with PUT /api/admin/flags"
            )
        decision = await asyncio.to_thread(operations[action], reason)
        if action == "rollback" and not router.flags.rollout.enabled:
            ensemble = router.flags.ensemble.model_copy(update={"enabled": False})
            await asyncio.to_thread(
                router.update_flags,
                dump_flag_config(router.flags.model_copy(update={"ensemble": ensemble})),
            )
        router.sync_rollout()
        return decision

    @app.get(
        "/api/status",
        tags=["models"],
        summary="Rollout stage, gates, split, shadow agreement, drift, recent decisions",
    )
    async def status(router: Core) -> Any:
        live = router.live
        out: dict[str, Any] = {
            "split": {
                "enabled": router.flags.ensemble.enabled,
                "rollout_percentage": router.flags.ensemble.rollout_percentage,
            },
            "ensemble_ready": router.ensemble_ready(),
            "breaker": router.breaker.state.value,
            "shadow": {
                "enabled": router.flags.ensemble.shadow.enabled,
                **router.shadow.stats.summary(),
            },
        }
        if live is not None:
            report = await asyncio.to_thread(live.report)
            drift = await asyncio.to_thread(live.drift_report)
            out.update(
                arms=report["arms"],
                go_no_go=report["go_no_go"],
                rollout=report["rollout"],
                drift={
                    "enough_data": drift.get("enough_data"),
                    "drifted": drift.get("drifted"),
                    "features_drifted": drift.get("features_drifted", []),
                },
                decisions=await asyncio.to_thread(live.store.decisions, 10),
            )
        return out

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> Any:
        return FileResponse(STATIC / "dashboard.html", media_type="text/html")

    # ---------------------------------------------------------------- models
    @app.get(
        "/api/models",
        tags=["models"],
        summary="Served models: versions, metadata, metrics, degraded state",
    )
    async def list_models(router: Core) -> Any:
        from models import store

        out: dict[str, Any] = {}
        for name, arm in (("classic", router.classic_direct), ("ensemble", router.ensemble)):
            info = arm.info
            entry: dict[str, Any] = info.details.copy() if info else {"name": name, "ready": False}
            if info is not None:
                entry["ready"] = info.ready
            if getattr(arm, "last_error", None):
                entry["error"] = arm.last_error
            if name == "ensemble":
                entry["routable"] = router.ensemble_ready()
                entry["breaker"] = router.breaker.snapshot()
            try:
                entry["versions"] = await asyncio.to_thread(
                    store.versions, name
                )  # store listing is slow
            except Exception:  # split deployment: the router may have no local model store
                entry["versions"] = []
            out[name] = entry
        if router.classic is not router.classic_direct and router.classic.info is not None:
            out["classic"]["router_local_version"] = router.classic.info.version
        return out

    @app.post(
        "/api/admin/models/{name}/version",
        tags=["admin"],
        dependencies=[Admin],
        summary="Serve another stored version: previous, latest or an exact version",
    )
    async def swap_version(name: str, request: Request, router: Core) -> Any:
        if name not in ("classic", "ensemble"):
            raise NotFound(f"unknown model {name!r}: classic or ensemble")
        version = (await _json_body(request)).get("version")
        if not isinstance(version, str) or not version or len(version) > 64:
            raise InvalidInput(
                "version must be 'previous', 'latest' or a stored version",
                fields=[{"field": "version", "message": "required string"}],
            )
        return await router.swap_model(name, version)

    # ---------------------------------------------------------------- admin
    @app.get(
        "/api/admin/flags", tags=["admin"], dependencies=[Admin], summary="The flag config in force"
    )
    async def get_flags(router: Core) -> Any:
        return router.flags_document()

    @app.put(
        "/api/admin/flags",
        tags=["admin"],
        dependencies=[Admin],
        summary="Replace the flag config (validated; hot)",
    )
    async def put_flags(request: Request, router: Core) -> Any:
        data = await _json_body(request)
        try:
            router.update_flags(data)
        except FlagConfigError as exc:
            raise InvalidInput(
                f"flag config rejected, previous config kept: {exc}",
                fields=[
                    {"field": p.split(":", 1)[0], "message": p.split(":", 1)[-1].strip()}
                    for p in exc.problems
                ],
            ) from None
        return router.flags_document()

    @app.get(
        "/api/admin/flags/explain",
        tags=["admin"],
        dependencies=[Admin],
        summary="Which rule routes this user, and why",
    )
    async def explain_user(
        router: Core, user_id: Annotated[str | None, Query(max_length=128)] = None
    ) -> Any:
        return router.explain(user_id)

    @app.get(
        "/api/admin/shadow",
        tags=["admin"],
        dependencies=[Admin],
        summary="Shadow agreement statistics",
    )
    async def shadow_stats(router: Core) -> Any:
        return {
            "enabled": router.flags.ensemble.shadow.enabled,
            "in_flight": router.shadow.in_flight,
            **router.shadow.stats.summary(),
        }

    @app.put("/api/admin/faults", tags=["admin"], dependencies=[Admin], include_in_schema=False)
    async def set_faults(request: Request, router: Core) -> Any:
        if not settings.faults_enabled or router.fault_setter is None:
            raise NotFound("fault injection is disabled (SERVING_FAULTS_ENABLED is not set)")
        data = await _json_body(request)
        try:
            delay_ms = float(data.get("delay_ms", 0.0))
            error_rate = float(data.get("error_rate", 0.0))
        except (TypeError, ValueError):
            raise InvalidInput("delay_ms and error_rate must be numbers") from None
        return await router.fault_setter(delay_ms=delay_ms, error_rate=error_rate)

    return app


def _field_error(err: dict[str, Any]) -> dict[str, str]:
    """A pydantic/FastAPI error as {field, message}, with the field as a dotted path."""
    if err["type"] == "json_invalid":
        position = err["loc"][-1] if len(err["loc"]) > 1 else "?"
        return {
            "field": "body",
            "message": f"invalid JSON near character {position}: {err.get('ctx', {}).get('error', err['msg'])}",
        }
    path = (
        ".".join(str(p) for p in err["loc"][1:] if p != "body")
        if err["loc"][:1] == ("body",)
        else ".".join(map(str, err["loc"]))
    )
    return {"field": path or "body", "message": err["msg"]}


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        data = json.loads(raw) if raw else None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


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
        """POST path -> handler(body, headers) answering the happy path (JSON bytes) or None (full route)."""

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
            if (
                answer is None
            ):  # not the happy path: the full route answers, from the body already read
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
        content_type = headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if content_type != "application/json" and not content_type.endswith("+json"):
            return UnsupportedMediaType(
                f"send the body as application/json (got {content_type[:60]!r})"
            )
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


FastRoute = Callable[[bytes, dict[str, str]], Awaitable[bytes | None]]


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
