"""HMAC primitives shared by user tokens and signed request ids: one way to sign, one to verify.

Both are stateless by design: any replica holding the secret verifies without a database read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from pydantic import SecretStr

MIN_SECRET_LENGTH = 16

Secret = str | bytes | SecretStr


def secret_bytes(secret: Secret, what: str = "secret") -> bytes:
    """The secret as bytes; ValueError when shorter than MIN_SECRET_LENGTH."""
    if isinstance(secret, SecretStr):
        secret = secret.get_secret_value()
    if isinstance(secret, str):
        secret = secret.encode()
    if len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(f"the {what} must be at least {MIN_SECRET_LENGTH} characters")
    return secret


def mac(secret: bytes, message: bytes, length: int = 32) -> bytes:
    """HMAC-SHA256 of `message`, truncated to `length` bytes (`hmac.digest`: the C fast path)."""
    return hmac.digest(secret, message, hashlib.sha256)[:length]


def b64encode(data: bytes) -> str:
    """URL-safe base64 without padding (safe in paths, headers and JSON)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64decode(text: str) -> bytes:
    """Inverse of `b64encode`; ValueError on anything that is not such a string."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError("not url-safe base64") from exc


def same(a: str | bytes, b: str | bytes) -> bool:
    """Constant-time equality."""
    a = a.encode() if isinstance(a, str) else a
    b = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(a, b)
