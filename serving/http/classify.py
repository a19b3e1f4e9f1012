"""Prediction routes: routed one and batch, the models directly, and the lean POST /api/classify.

Each route validates its body (FastAPI, with the models in schemas.py), calls the router core and
renders the core's typed results (`Prediction.of`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from pydantic import ValidationError

from serving.errors import InvalidInput, ServingError
from serving.http.dependencies import (
    PREFERENCE_HEADER,
    Core,
    PreferenceHeader,
    Settings,
    preference,
)
from serving.http.errors import BODY, WHEN, responses
from serving.http.middleware import FastRoute
from serving.http.schemas import BatchPrediction, BatchRequest, ClassifyRequest, Prediction
from serving.routing.core import RouterCore

router = APIRouter(tags=["classify"], responses=responses(*BODY, 503))
BAD_HEADER = {400: WHEN[400] + "; or X-Model-Preference is not classic|ensemble"}


@router.post(
    "/api/classify",
    response_model=Prediction,
    summary="Classify one instance (routed)",
    responses=responses(400, notes=BAD_HEADER),
)
async def classify(
    body: ClassifyRequest,
    core: Core,
    x_model_preference: PreferenceHeader = None,  # type: ignore[assignment]  # see PreferenceHeader
) -> Any:
    return await classify_one(core, body, preference(x_model_preference))


@router.post(
    "/api/classify/batch",
    response_model=BatchPrediction,
    summary="Classify many instances (routed)",
    responses=responses(
        400, 422, notes={**BAD_HEADER, 422: "A row does not fit the schema, or too many rows"}
    ),
)
async def classify_batch(
    body: BatchRequest,
    core: Core,
    settings: Settings,
    x_model_preference: PreferenceHeader = None,  # type: ignore[assignment]  # see PreferenceHeader
) -> Any:
    _check_batch_size(body, settings.max_batch_instances)
    out = await core.classify(
        [i.features for i in body.instances],
        user_id=body.user_id,
        header=preference(x_model_preference),
        attributes=body.context,
        endpoint="classify_batch",
        prefix="instances",
    )
    return BatchPrediction(predictions=[Prediction.of(p) for p in out])


@router.post(
    "/api/v1/classify/classic", response_model=Prediction, summary="Classic model, unrouted"
)
async def classify_classic(body: ClassifyRequest, core: Core) -> Any:
    return Prediction.of((await core.classify_direct("classic", [body.features]))[0])


@router.post(
    "/api/v2/classify/ensemble",
    response_model=Prediction,
    summary="Ensemble model, unrouted",
    responses=responses(503, notes={503: "The ensemble cannot answer (no fallback), or overload"}),
)
async def classify_ensemble(body: ClassifyRequest, core: Core) -> Any:
    return Prediction.of((await core.classify_direct("ensemble", [body.features]))[0])


async def classify_one(core: RouterCore, body: ClassifyRequest, header: str | None) -> Prediction:
    """One routed row: what both POST /api/classify paths answer."""
    out = await core.classify(
        [body.features], user_id=body.user_id, header=header, attributes=body.context
    )
    return Prediction.of(out[0])


def fast_route(app: FastAPI) -> FastRoute:
    """POST /api/classify without FastAPI's per-request machinery (profiled: a third of the
    router's CPU per request): the same model validates the body and `classify_one` answers.
    Anything but the happy path (a body or header that does not validate) returns None and the
    full route answers it, so error responses stay exactly the route's."""

    async def classify_fast(body: bytes, headers: dict[str, str]) -> bytes | None:
        try:
            request = ClassifyRequest.model_validate_json(body)
            header = preference(headers.get(PREFERENCE_HEADER.lower()))
        except (ValidationError, ServingError):
            return None
        return (await classify_one(app.state.core, request, header)).model_dump_json().encode()

    return classify_fast


def fast_direct_routes(app: FastAPI) -> dict[str, FastRoute]:
    """The lean path of the two direct endpoints, as `fast_route` is /api/classify's: the same
    body model, `classify_direct` answers, any body that does not validate takes the full route.
    (The endpoints take no header: X-Model-Preference is ignored on both paths.)"""

    def direct(arm: str) -> FastRoute:
        async def classify_direct_fast(body: bytes, headers: dict[str, str]) -> bytes | None:
            try:
                request = ClassifyRequest.model_validate_json(body)
            except ValidationError:
                return None
            out = await app.state.core.classify_direct(arm, [request.features])
            return Prediction.of(out[0]).model_dump_json().encode()

        return classify_direct_fast

    return {
        "/api/v1/classify/classic": direct("classic"),
        "/api/v2/classify/ensemble": direct("ensemble"),
    }


def _check_batch_size(body: BatchRequest, limit: int) -> None:
    if len(body.instances) > limit:
        raise InvalidInput(
            f"too many instances: {len(body.instances)} > {limit}",
            fields=[{"field": "instances", "message": f"at most {limit} instances"}],
        )
