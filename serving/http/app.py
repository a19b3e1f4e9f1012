"""The public HTTP API: a FastAPI app mounted into the BentoML router service.

FastAPI rather than `@bentoml.api` for the public surface because it needs GET/PUT routes, exact
status codes and one JSON error shape. BentoML serves the OpenAPI document at /docs.json, built
from these routes with FastAPI's `get_openapi(routes=...)` (not `app.openapi()`): what a route
declares (responses, security, `openapi_extra`) is what the document says.

| module | what |
| --- | --- |
| classify.py | routed one and batch, the models directly, the lean POST /api/classify |
| feedback.py | labels (and ratings) joined to served predictions |
| status.py | /api/status, /api/models, /dashboard |
| admin.py | flags, explain, shadow, evaluation, drift, rollout, model versions, faults |
| preferences.py | a user's model preference, the settings page, user token minting |
| schemas.py | request and response bodies |
| errors.py | the JSON error body, its handlers and per-route declarations |
| middleware.py | RequestGuard: JSON only, body size and in-flight limits, fast routes |
| auth.py, dependencies.py | the admin and user tokens; what routes receive |
"""

from __future__ import annotations

from fastapi import FastAPI

from serving.config.settings import ServingSettings
from serving.http import admin, classify, experiments, feedback, status
from serving.http.auth import require_admin
from serving.http.errors import install_error_handlers
from serving.http.middleware import FastRoute, RequestGuard
from serving.http.preferences import create_preferences_router

__all__ = ["RequestGuard", "create_app"]


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
    if settings.fast_classify:
        fast_routes["/api/classify"] = classify.fast_route(app)
        fast_routes.update(classify.fast_direct_routes(app))  # the direct endpoints too
    app.add_middleware(
        RequestGuard,
        max_body_bytes=settings.max_body_bytes,
        max_in_flight=settings.max_in_flight,
        fast_routes=fast_routes,
    )
    install_error_handlers(app)
    app.include_router(create_preferences_router(settings, require_admin))
    for module in (classify, feedback, status, experiments, admin):
        app.include_router(module.router)
    return app
