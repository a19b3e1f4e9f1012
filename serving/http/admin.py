"""Admin routes (bearer token, serving/http/auth.py): flags, explain, shadow, evaluation, drift,
rollout actions and decisions, model versions, and test-only fault injection."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Response

from serving.config.flags import dump_flag_config
from serving.control import ControlPlane
from serving.errors import BadRequest, Conflict, InvalidInput, NotFound
from serving.http.auth import require_admin
from serving.http.dependencies import Control, Core, JsonObject, Settings, live_of
from serving.http.errors import BODY, responses, unroutable_404
from serving.http.openapi import FlagDocument
from serving.http.schemas import DecisionLog, ShadowStats, VersionRequest, VersionSwap

MODELS = ("classic", "ensemble")
ROLLOUT_ACTIONS = ("pause", "resume", "promote", "rollback", "evaluate")

router = APIRouter(
    prefix="/api/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=responses(401, 403, 503),
)
Object = dict[str, Any]
NO_LIVE = "No live evaluation in this router (no classic model)"


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """`openapi_extra` declaring a JSON request body that the route parses itself (after the
    admin check, which FastAPI's own body parsing would come before)."""
    content = {"application/json": {"schema": schema}}
    return {"requestBody": {"required": True, "content": content}}


# ---------------------------------------------------------------- flags
@router.get(
    "/flags",
    response_model=FlagDocument,
    summary="The flag config in force",
)
async def get_flags(core: Core, response: Response) -> Any:
    response.headers["ETag"] = etag(core.flags_version)
    return core.flags_document()


def etag(version: int) -> str:
    return f'"{version}"'


def if_match_version(if_match: str | None) -> int | None:
    """The flags version an If-Match header names (`"7"`, `W/"7"` or `7`); None when absent or
    `*` (then the write is based on the version in force on this replica)."""
    if if_match is None or if_match.strip() == "*":
        return None
    value = if_match.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise BadRequest(f"If-Match must name a flags version (an ETag), got {if_match[:40]!r}")
    return int(value)


@router.put(
    "/flags",
    response_model=FlagDocument,
    summary="Replace the flag config (validated; hot)",
    openapi_extra=_json_body({"$ref": "#/components/schemas/FlagDocument"}),
    responses=responses(
        *BODY,
        409,
        notes={
            409: "Another replica or operator changed the flags first: re-read them and retry",
            422: "The config is invalid (`fields` names each problem); the old one is kept",
        },
    ),
)
async def put_flags(
    data: JsonObject,
    core: Core,
    response: Response,
    if_match: Annotated[str, Header(description="The ETag of GET /api/admin/flags")] = None,  # type: ignore[assignment]
) -> Any:
    expected = if_match_version(if_match)
    # FlagConfigError: 422, StaleFlags: 409 (serving/http/errors.py); the store write is I/O
    await asyncio.to_thread(core.update_flags, data, expected)
    response.headers["ETag"] = etag(core.flags_version)
    return core.flags_document()


@router.get(
    "/flags/explain",
    response_model=Object,
    summary="Which rule routes this user, and why",
    responses=responses(422),
)
async def explain_user(
    core: Core,
    user_id: Annotated[str, Query(max_length=128)] = None,  # type: ignore[assignment]
) -> Any:
    return core.explain(user_id)


@router.get("/shadow", response_model=ShadowStats, summary="Shadow agreement statistics")
async def shadow_stats(core: Core) -> Any:
    return {
        "enabled": core.flags.ensemble.shadow.enabled,
        "in_flight": core.shadow.in_flight,
        **core.shadow.stats.summary(),
    }


# ---------------------------------------------------------------- live evaluation and rollout
@router.get(
    "/evaluation",
    response_model=Object,
    summary="Live metrics per arm, A/B statistics, go/no-go",
    responses=responses(404, notes={404: NO_LIVE}),
)
async def evaluation(control: Control) -> Any:
    return await asyncio.to_thread(live_of(control).report)


@router.get(
    "/drift",
    response_model=Object,
    summary="Input drift against the training reference",
    responses=responses(404, notes={404: NO_LIVE}),
)
async def drift(control: Control) -> Any:
    return await asyncio.to_thread(live_of(control).drift_report)


@router.get(
    "/rollout/decisions",
    response_model=DecisionLog,
    summary="The rollout decision log",
    responses=responses(404, 422, notes={404: NO_LIVE}),
)
async def decisions(control: Control, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> Any:
    return {"decisions": await asyncio.to_thread(live_of(control).store.decisions, limit)}


@router.post(
    "/rollout/{action}",
    response_model=Object,
    summary="pause | resume | promote | rollback | evaluate",
    responses={
        **responses(
            *BODY,
            409,
            notes={409: "Automatic rollout is off: only rollback (kill switch) and evaluate act"},
        ),
        **unroutable_404("Unknown action, or no live evaluation in this router"),
    },
)
async def rollout_action(
    action: Annotated[str, Path(json_schema_extra={"enum": list(ROLLOUT_ACTIONS)})],
    control: Control,
    reason: Annotated[str, Query(max_length=200)] = "manual",
) -> Any:
    return await _rollout_action(control, action, reason)


async def _rollout_action(control: ControlPlane, action: str, reason: str) -> dict[str, Any]:
    """Evaluate now, or act on the controller; a rollback with automatic rollout off throws the
    kill switch instead (the flags say why traffic left the ensemble)."""
    live, core = live_of(control), control.core
    if action == "evaluate":
        return await asyncio.to_thread(control.rollout_tick, True) or {
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
    if action != "rollback" and not core.flags.rollout.enabled:
        raise Conflict(
            "automatic rollout is off (rollout.enabled: false in the flags): change the split "
            "with PUT /api/admin/flags"
        )
    decision = await asyncio.to_thread(operations[action], reason)
    if action == "rollback" and not core.flags.rollout.enabled:
        ensemble = core.flags.ensemble.model_copy(update={"enabled": False})
        await asyncio.to_thread(
            core.update_flags,
            dump_flag_config(core.flags.model_copy(update={"ensemble": ensemble})),
        )
    control.sync_rollout()
    if decision.get("logged", True) and decision.get("applied", True):
        control.notifier.announce(decision)  # the replica that acted tells the operators, once
    return decision


# ---------------------------------------------------------------- model versions
async def _model_name(
    name: Annotated[str, Path(json_schema_extra={"enum": list(MODELS)})],
) -> str:
    if name not in MODELS:
        raise NotFound(f"unknown model {name!r}: classic or ensemble")
    return name


async def _version(data: JsonObject) -> str:
    version = data.get("version")
    if not isinstance(version, str) or not version or len(version) > 64:
        raise InvalidInput(
            "version must be 'previous', 'latest' or a stored version",
            fields=[{"field": "version", "message": "required string"}],
        )
    return version


@router.post(
    "/models/{name}/version",
    response_model=VersionSwap,
    summary="Serve another stored version: previous, latest or an exact version",
    openapi_extra=_json_body(VersionRequest.model_json_schema()),
    responses={
        **responses(
            *BODY,
            503,
            notes={
                422: "No version given, or the service refused it (the current one keeps serving)",
                503: "The model's service is not ready, or the router is overloaded",
            },
        ),
        **unroutable_404("Unknown model, or no version older than the one served ('previous')"),
    },
)
async def swap_version(
    name: Annotated[str, Depends(_model_name)],
    version: Annotated[str, Depends(_version)],
    control: Control,
) -> Any:
    return await control.swap_model(name, version)


# ---------------------------------------------------------------- test-only fault injection
async def _fault_setter(control: Control, settings: Settings) -> Callable[..., Awaitable[Any]]:
    if not settings.faults_enabled or control.fault_setter is None:
        raise NotFound("fault injection is disabled (SERVING_FAULTS_ENABLED is not set)")
    return control.fault_setter


@router.put("/faults", include_in_schema=False)
async def set_faults(
    setter: Annotated[Callable[..., Awaitable[Any]], Depends(_fault_setter)], data: JsonObject
) -> Any:
    return await setter(**_fault_values(data))


def _fault_values(data: dict[str, Any]) -> dict[str, float]:
    try:
        return {
            "delay_ms": float(data.get("delay_ms", 0.0)),
            "error_rate": float(data.get("error_rate", 0.0)),
        }
    except (TypeError, ValueError):
        raise InvalidInput("delay_ms and error_rate must be numbers") from None
