"""What the routes receive: the router core, the control plane, the settings, a JSON object body,
parsed headers.

The BentoML service puts its `RouterCore` on `app.state.core` and its `ControlPlane` on
`app.state.control` at start-up; `create_app` puts the
settings on `app.state.settings`. Dependencies are `async def` on purpose: FastAPI runs a plain
`def` dependency in its thread pool, a thread hop per request.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Header, Path, Request

from serving.config.settings import ServingSettings
from serving.control import ControlPlane
from serving.errors import BadRequest, InvalidInput, NotFound
from serving.routing.core import RouterCore
from serving.routing.policy import ARMS
from serving.routing.preferences import USER_ID_MAX_LENGTH, USER_ID_PATTERN, valid_user_id

if TYPE_CHECKING:
    from serving.delivery.live import LiveEvaluation

PREFERENCE_HEADER = "X-Model-Preference"


async def _core(request: Request) -> RouterCore:
    return request.app.state.core


async def _control(request: Request) -> ControlPlane:
    return request.app.state.control


async def _settings(request: Request) -> ServingSettings:
    return request.app.state.settings


async def json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object, for routes that validate it themselves (400 otherwise)."""
    raw = await request.body()
    try:
        data = json.loads(raw) if raw else None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


async def _user_id(
    user_id: Annotated[
        str,
        Path(  # documented, not enforced here: the check below answers with its own message
            json_schema_extra={
                "pattern": USER_ID_PATTERN.pattern,
                "minLength": 1,
                "maxLength": USER_ID_MAX_LENGTH,
            }
        ),
    ],
) -> str:
    if not valid_user_id(user_id):
        message = f"user_id must be 1..{USER_ID_MAX_LENGTH} characters: letters, digits, _ . : @ -"
        raise InvalidInput(message, fields=[{"field": "user_id", "message": message}])
    return user_id


# Module level: with postponed annotations FastAPI resolves these names in the module's globals.
Core = Annotated[RouterCore, Depends(_core)]
Control = Annotated[ControlPlane, Depends(_control)]
Settings = Annotated[ServingSettings, Depends(_settings)]
JsonObject = Annotated[dict[str, Any], Depends(json_object)]
UserIdPath = Annotated[str, Depends(_user_id)]
PreferenceHeader = Annotated[  # `str`, not `str | None`: the schema says "string" (3.0)
    str,
    Header(
        alias=PREFERENCE_HEADER,
        description="classic|ensemble|cascade: override the split (if enabled in flags)",
    ),
]


def preference(value: str | None) -> str | None:
    """The X-Model-Preference header, normalised; a value other than an arm's name is a 400.

    Called in the route, not as a dependency, so a bad body is still reported before a bad header.
    """
    if value is None:
        return None
    value = value.strip().lower()
    if value not in ARMS:
        raise BadRequest(
            f"{PREFERENCE_HEADER} must be 'classic', 'ensemble' or 'cascade', got {value[:40]!r}"
        )
    return value


def live_of(control: ControlPlane) -> LiveEvaluation:
    """The live evaluation, or 404 when this router has none (no classic model)."""
    if control.live is None:
        raise NotFound("live evaluation is not available (no classic model in this router)")
    return control.live
