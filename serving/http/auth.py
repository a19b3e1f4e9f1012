"""Who may call what: the admin bearer token, and a user's own token for their preference.

The schemes are FastAPI security dependencies with `auto_error=False`, so the OpenAPI document
declares them (AdminToken; UserToken or UserBearer) while the checks here read the headers and
answer with the API's own 401/403 bodies and messages.
"""

import base64
import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from serving.config.secrets import presented
from serving.errors import Forbidden, Unauthorized
from serving.http.dependencies import UserIdPath
from serving.routing.preferences import MIN_SECRET_LENGTH, verify_user_token

# No `from __future__ import annotations`: the user dependency is defined inside a function, and
# FastAPI must see its parameter types at definition time.

admin_bearer = HTTPBearer(
    scheme_name="AdminToken",
    description="`Authorization: Bearer <SERVING_ADMIN_TOKEN>`; the admin API answers 403 while "
    "the server has no admin token.",
    auto_error=False,
)
user_token_header = APIKeyHeader(
    name="X-User-Token",
    scheme_name="UserToken",
    description="The user's own token (HMAC-SHA256 of the user id under "
    "SERVING_USER_TOKEN_SECRET); minted by POST /api/admin/users/{user_id}/token.",
    auto_error=False,
)
user_bearer = HTTPBearer(
    scheme_name="UserBearer",
    description="The user's own token sent as `Authorization: Bearer <token>` instead.",
    auto_error=False,
)
operator_bearer = HTTPBearer(
    scheme_name="OperatorToken",
    description="`Authorization: Bearer <SERVING_VIEWER_TOKEN or SERVING_ADMIN_TOKEN>` for the "
    "dashboard and /api/status (a browser may send the token as a Basic password instead).",
    auto_error=False,
)
OPERATOR_CHALLENGE = {"WWW-Authenticate": 'Basic realm="tabular-serving operators"'}
"""Makes a browser ask for the token (any user name, the token as password) on /dashboard."""
USER_TOKENS_DISABLED = (
    "user preferences are disabled: set SERVING_USER_TOKEN_SECRET (a random string of at least "
    f"{MIN_SECRET_LENGTH} characters, shared with the backend that mints user tokens) on the "
    "router to enable them"
)
AdminCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)]
UserCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(user_bearer)]
UserTokenHeader = Annotated[str | None, Depends(user_token_header)]
OperatorCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(operator_bearer)]


async def require_admin(request: Request, _: AdminCredentials) -> None:
    """403 while the server has no admin token, 401 without a bearer token, 403 when wrong."""
    token: SecretStr | None = request.app.state.settings.admin_token
    if token is None:
        raise Forbidden("admin API is disabled: set SERVING_ADMIN_TOKEN on the server to enable it")
    authorization = request.headers.get("authorization")
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized()
    value = presented(authorization[7:])
    if value is None:  # `Bearer <U+00A0>` and the like: no token at all
        raise Unauthorized()
    if not _same_secret(value, token):
        raise Forbidden("invalid admin token")


async def require_operator(request: Request, _: OperatorCredentials) -> None:
    """The viewer (read-only) or admin token: 403 while the server has neither, 401 without a
    token (with a Basic challenge for browsers), 403 when wrong."""
    settings = request.app.state.settings
    tokens = [t for t in (settings.viewer_token, settings.admin_token) if t is not None]
    if not tokens:
        raise Forbidden(
            "the dashboard and /api/status are disabled: set SERVING_VIEWER_TOKEN (read-only) or "
            "SERVING_ADMIN_TOKEN on the server"
        )
    token = presented_token(request.headers.get("authorization"))
    if token is None:
        raise Unauthorized(
            "missing operator token: send 'Authorization: Bearer <token>' (viewer or admin)",
            headers=OPERATOR_CHALLENGE,
        )
    if not any(_same_secret(token, t) for t in tokens):
        raise Forbidden("invalid operator token")


def presented_token(authorization: str | None) -> str | None:
    """The token of `Bearer <token>`, or the password of `Basic base64(user:token)`."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip(" \t").partition(" ")
    if scheme.lower() == "bearer":
        return presented(value)
    if scheme.lower() == "basic":
        try:
            _user, _, password = (
                base64.b64decode(value.strip(" \t"), validate=True).decode().partition(":")
            )
        except (ValueError, UnicodeDecodeError):
            return None
        return presented(password)
    return None


def _same_secret(value: str, secret: SecretStr) -> bool:
    """Constant-time comparison; an empty secret (never configured so) matches nothing."""
    expected = secret.get_secret_value()
    return bool(expected) and hmac.compare_digest(value.encode(), expected.encode())


def user_token_dependency(secret: SecretStr | None) -> Callable[..., Awaitable[str]]:
    """A dependency that returns the path's user id once the request's token proves it is that
    user (403 while `secret` is None)."""

    async def require_user(
        user_id: UserIdPath,
        request: Request,
        x_user_token: UserTokenHeader,
        _: UserCredentials,
    ) -> str:
        if secret is None:
            raise Forbidden(USER_TOKENS_DISABLED)
        token = x_user_token
        authorization = request.headers.get("authorization")
        if not token and authorization and authorization.lower().startswith("bearer "):
            token = authorization[7:]
        token = presented(token)
        if token is None:
            raise Unauthorized(
                "missing user token: send 'Authorization: Bearer <token>' or "
                "'X-User-Token: <token>'"
            )
        if not verify_user_token(secret, user_id, token):
            raise Forbidden(f"the token is not valid for user {user_id!r}")
        return user_id

    return require_user
