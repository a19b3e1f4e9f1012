"""Routes of the opt-in beta: a user's model preference, its settings page, user token minting.

| method & path | who | what |
| --- | --- | --- |
| `GET /api/users/{user_id}/preference` | the user (token) | {"user_id", "model"}; "auto" if unset |
| `PUT /api/users/{user_id}/preference` | the user (token) | body {"model": ensemble/classic/auto} |
| `POST /api/admin/users/{user_id}/token` | admin | mint the user's token (and settings link) |
| `GET /settings?user_id=...&token=...` | anyone | the settings page (calls the two user routes) |

User tokens are HMAC-SHA256 of the user id under `SERVING_USER_TOKEN_SECRET`
(serving/routing/preferences.py explains the choice; serving/http/auth.py checks them); while the
secret is unset the user routes and minting answer 403.
Writes go through the router's `PreferenceCache` (`router.preferences`), so the router routes by
a new choice at once, and other replicas within the cache's TTL.
"""

# No `from __future__ import annotations`: FastAPI must see the dependency types defined inside
# create_preferences_router at definition time, not as names to look up in this module's globals.
import asyncio
import base64
import hashlib
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import ConfigDict, Field, SecretStr

from serving.errors import Forbidden, NotFound
from serving.http.auth import USER_TOKENS_DISABLED, user_token_dependency
from serving.http.dependencies import UserIdPath
from serving.http.errors import BODY, responses, unroutable_404
from serving.http.openapi import ApiModel
from serving.routing.preferences import (
    MIN_SECRET_LENGTH,
    PreferenceCache,
    PreferenceSettings,
    sign_user_token,
)

SETTINGS_PAGE = Path(__file__).parent / "static" / "settings.html"


class PreferenceUpdate(ApiModel):
    model_config = ConfigDict(extra="forbid")

    model: Literal["ensemble", "classic", "auto"] = Field(
        description="ensemble = Ensemble ML (beta), classic, or auto = the cascade (a fast first "
        "stage, the ensemble when it is unsure) when it can answer, else follow the rollout"
    )


class PreferenceOut(ApiModel):
    user_id: str
    model: Literal["ensemble", "classic", "auto"]


class UserToken(ApiModel):
    user_id: str
    token: str
    settings_url: str = Field(
        description="Relative link to the user's settings page, token included"
    )


NO_STORE = "No preference store in this router"
BAD_USER_ID = "user_id is not 1..128 of letters, digits, _ . : @ -"
MINT_FORBIDDEN = "Wrong admin token, the admin API or user tokens are disabled"


async def _preferences(request: Request) -> PreferenceCache:
    cache = getattr(getattr(request.app.state, "core", None), "preferences", None)
    if cache is None:
        raise NotFound("user preferences are not available in this router (no state store)")
    return cache


Preferences = Annotated[PreferenceCache, Depends(_preferences)]


def create_preferences_router(settings: Any, require_admin) -> APIRouter:
    """The preference routes; `settings.user_token_secret` (a SecretStr, or None) enables them.

    `require_admin` is the admin dependency (serving/http/auth.py). When `settings` has no
    `user_token_secret` attribute, the secret is read from the environment (PreferenceSettings).
    """
    secret: SecretStr | None = (
        settings.user_token_secret
        if hasattr(settings, "user_token_secret")
        else PreferenceSettings().user_token_secret
    )
    if secret is not None and not secret.get_secret_value():
        secret = None  # SERVING_USER_TOKEN_SECRET="" means unset
    if secret is not None and len(secret.get_secret_value()) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"SERVING_USER_TOKEN_SECRET must be at least {MIN_SECRET_LENGTH} characters"
        )

    page = SETTINGS_PAGE.read_bytes()
    page_headers = {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",  # the URL carries the user's token
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": _content_security_policy(page),
    }

    User = Annotated[str, Depends(user_token_dependency(secret))]
    user_errors = {
        **responses(401, 403, 422, 503, notes={422: BAD_USER_ID}),
        **unroutable_404(NO_STORE),
    }
    router = APIRouter()

    @router.get(
        "/api/users/{user_id}/preference",
        response_model=PreferenceOut,
        tags=["preferences"],
        summary="The user's model choice ('auto' = the cascade, else follow the rollout)",
        responses=user_errors,
    )
    async def get_preference(user_id: User, cache: Preferences) -> Any:
        model = await asyncio.to_thread(cache.refresh, user_id)
        return {"user_id": user_id, "model": model or "auto"}

    @router.put(
        "/api/users/{user_id}/preference",
        response_model=PreferenceOut,
        tags=["preferences"],
        summary="Choose the ensemble (beta), classic, or auto (the cascade, else the rollout)",
        responses={**user_errors, **responses(*BODY, notes={422: BAD_USER_ID + "; or the body"})},
    )
    async def put_preference(body: PreferenceUpdate, user_id: User, cache: Preferences) -> Any:
        await asyncio.to_thread(cache.set, user_id, body.model)
        return {"user_id": user_id, "model": body.model}

    @router.post(
        "/api/admin/users/{user_id}/token",
        response_model=UserToken,
        tags=["admin"],
        dependencies=[Depends(require_admin)],
        summary="Mint a user's preference token",
        responses={
            **responses(*BODY, 401, 403, 503, notes={403: MINT_FORBIDDEN, 422: BAD_USER_ID}),
            **unroutable_404(),
        },
    )
    async def mint_token(user_id: UserIdPath) -> Any:
        if secret is None:
            raise Forbidden(USER_TOKENS_DISABLED)
        token = sign_user_token(secret, user_id)
        return {
            "user_id": user_id,
            "token": token,
            "settings_url": "/settings?" + urlencode({"user_id": user_id, "token": token}),
        }

    @router.get("/settings", include_in_schema=False)
    async def settings_page() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=page_headers)

    return router


def _content_security_policy(page: bytes) -> str:
    """Only this page's own inline script and style run; it talks to this origin only, unframed."""

    def hashes(tag: str) -> str:
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>".encode(), page, flags=re.S)
        return (
            " ".join(
                f"'sha256-{base64.b64encode(hashlib.sha256(b).digest()).decode()}'" for b in bodies
            )
            or "'none'"
        )

    return (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
