"""How a secret is read and kept out of sight: blank means unset, and known values are redacted.

Why: `SERVING_ADMIN_TOKEN=""` used to be a configured (empty) token, and a presented
`Bearer <U+00A0>` stripped (by `str.strip`, which strips every Unicode space) to the same empty
string, so `compare_digest` let it in. Here only spaces and tabs are stripped, and a value that is
blank after that (or made only of other whitespace) is no secret at all. Pure: no I/O, no settings.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

BLANKS = " \t"
"""What may be stripped from a token's ends (HTTP's optional whitespace); nothing else."""
REDACTED = "***"


def clean_secret(value: Any) -> Any:
    """A configured secret: None when unset or blank; spaces and tabs stripped from its ends;
    ValueError (without the value) when it holds control characters such as a newline."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not isinstance(value, str):
        return value
    stripped = value.strip(BLANKS)
    if not stripped.strip():  # empty, or only other whitespace (U+00A0, newlines, ...)
        return None
    if any(unicodedata.category(c) == "Cc" for c in stripped):
        raise ValueError("must not contain control characters (a newline, a tab inside it)")
    return stripped


def presented(value: str | None) -> str | None:
    """A token a client sent: spaces and tabs stripped from its ends; None when that leaves
    nothing or only whitespace of another kind (it never authenticates)."""
    if value is None:
        return None
    stripped = value.strip(BLANKS)
    return stripped if stripped.strip() else None


def url_password(url: str | None) -> str | None:
    """The password inside a URL (`scheme://user:password@host/...`), if any."""
    if not url or "://" not in url:
        return None
    try:
        return urlsplit(url).password
    except ValueError:
        match = re.match(r"^[^:/]+://[^:/@]*:([^@]*)@", url)
        return match.group(1) if match else None


def redact(text: str, secrets: Iterable[str | SecretStr | None]) -> str:
    """`text` with every known secret value (4+ characters) replaced by ***."""
    values = {s.get_secret_value() if isinstance(s, SecretStr) else s for s in secrets}
    for value in sorted((v for v in values if v and len(v) >= 4), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


def webhook_url_problem(url: str) -> str | None:
    """Why a webhook URL is refused (None: fine): https anywhere, http only to loopback."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        return "is not a valid URL"
    if parts.scheme == "https" and host:
        return None
    if parts.scheme == "http" and host in {"localhost", "127.0.0.1", "::1"}:
        return None
    if parts.scheme == "http" and host.startswith("127.") and host.replace(".", "").isdigit():
        return None
    return "must be https:// (or http:// to localhost / 127.0.0.1 / ::1)"
