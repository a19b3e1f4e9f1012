"""Opt-in betas: each user's model choice, the tokens that let them change it, and a hot-path cache.

Identity: HMAC-SHA256 user tokens
---------------------------------
The application backend that already authenticates its users (the router has no user database and
should not get one) mints a token per user: ``token = base64url(HMAC-SHA256(secret, "v1:" +
user_id))`` with a secret it shares with the router (``SERVING_USER_TOKEN_SECRET``). The browser
sends it as ``Authorization: Bearer <token>`` or ``X-User-Token``; the router recomputes the MAC
for the user id in the URL and compares in constant time (``hmac.compare_digest``).

Why this scheme:

- simple: one standard-library primitive, no JWT library, no key server, no sessions;
- stateless: any replica verifies any token with the secret alone, no database read, no user
  table in the router;
- scoped: a token names exactly one user id, so it can read and write only that user's
  preference (a token for another user is a 403);
- revocable: rotating the secret invalidates every token at once (the backend re-mints them).

What it is not: tokens do not expire (rotate the secret to end them all), and they only gate a
low-stakes choice between two models that both serve the user; they are no login.

The cache
---------
`PreferenceCache` sits in front of `StateStore.get_preference` so that routing a request costs no
database read: a user's value (including "never chose", the common case) is kept for `ttl_s`
seconds. Writes go through it (store first, then the cache), so this process routes by a new
choice at once and other replicas within `ttl_s`.

Most users never choose, and most requests come from users not seen in the last `ttl_s`, so a
per-user cache alone still reads the store on nearly every request (profiled: a tenth of the
router's CPU). `sync()`, run every `ttl_s` by the router, loads the whole preferences table once,
then only the choices written since (each write is numbered); while that snapshot is fresh, a user
missing from it has no preference and costs no read. Past `max_entries` stored choices the
snapshot is dropped and per-user reads take over.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal, Protocol

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving import tokens
from serving.tokens import MIN_SECRET_LENGTH  # noqa: F401  (re-exported for callers)

log = logging.getLogger(__name__)

Model = Literal["classic", "ensemble", "auto"]
MODELS: tuple[str, ...] = ("classic", "ensemble", "auto")
USER_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:@\-]+$")
"""Same rule as serving/http/schemas.py `UserId`: 1..128 of letters, digits, _ . : @ -."""
USER_ID_MAX_LENGTH = 128
TOKEN_VERSION = "v1"


class PreferenceSettings(BaseSettings):
    """This feature's environment knobs (prefix SERVING_), for callers without ServingSettings."""

    model_config = SettingsConfigDict(env_prefix="SERVING_", extra="ignore")

    user_token_secret: SecretStr | None = None
    """Shared secret for user tokens; the preference endpoints answer 403 while it is unset."""


def valid_user_id(user_id: object) -> bool:
    return (
        isinstance(user_id, str)
        and 0 < len(user_id) <= USER_ID_MAX_LENGTH
        and USER_ID_PATTERN.fullmatch(user_id) is not None
    )


def sign_user_token(secret: str | bytes | SecretStr, user_id: str) -> str:
    """The token for `user_id`: url-safe base64 (no padding) of HMAC-SHA256(secret, "v1:" + id)."""
    if not valid_user_id(user_id):
        raise ValueError(f"invalid user id {user_id!r}")
    key = tokens.secret_bytes(secret, "user token secret")
    return tokens.b64encode(tokens.mac(key, f"{TOKEN_VERSION}:{user_id}".encode()))


def verify_user_token(secret: str | bytes | SecretStr, user_id: str, token: str | None) -> bool:
    """Whether `token` was minted for exactly `user_id` with `secret` (constant-time compare)."""
    if not token or not valid_user_id(user_id):
        return False
    expected = sign_user_token(secret, user_id)
    return tokens.same(token.strip(), expected)


class PreferenceStore(Protocol):
    """What the cache needs of serving.store.StateStore."""

    def get_preference(self, user_id: str) -> str | None: ...

    def set_preference(self, user_id: str, model: str) -> None: ...

    def preference_snapshot(self, limit: int) -> tuple[dict[str, str] | None, int]: ...

    def preference_changes(self, since: int, limit: int) -> tuple[dict[str, str] | None, int]: ...


class PreferenceCache:
    """Users' model choices in memory for `ttl_s` seconds, in front of a StateStore; thread-safe.

    `get` answers from memory while an entry is fresh (absent choices are cached too, as None),
    and reads the store otherwise; a failing store read keeps the last value (or None: follow the
    rollout) for another `ttl_s` rather than failing the request. `set` writes the store, then the
    cache. At most `max_entries` users are kept (least recently used go first).
    """

    def __init__(
        self,
        store: PreferenceStore,
        ttl_s: float = 2.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        if ttl_s < 0:
            raise ValueError("ttl_s must be >= 0")
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.store = store
        self.ttl_s = float(ttl_s)
        self.max_entries = int(max_entries)
        self._clock = clock
        self._lock = threading.Lock()
        # user id -> (model or None, expires at, write sequence number when stored)
        self._entries: OrderedDict[str, tuple[str | None, float, int]] = OrderedDict()
        self._seq = 0
        self._snapshot: dict[str, str] | None = None  # every stored choice, as of _snapshot_at
        self._snapshot_at = float("-inf")
        self._change: int | None = None  # the store's preference change number the snapshot has
        self.hits = 0
        self.misses = 0
        self.errors = 0

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, user_id: str | None) -> tuple[bool, str | None]:
        """(fresh entry found, its value) without touching the store."""
        if not user_id:
            return True, None
        with self._lock:
            entry = self._entries.get(user_id)
            now = self._clock()
            if entry is not None and entry[1] > now:
                self._entries.move_to_end(user_id)
                self.hits += 1
                return True, entry[0]
            if self._snapshot is not None and now - self._snapshot_at <= self.snapshot_max_age_s:
                self.hits += 1
                return True, self._snapshot.get(user_id)
            self.misses += 1
            return False, None

    @property
    def snapshot_max_age_s(self) -> float:
        """A snapshot answers for three sync periods; older (syncs failing), reads take over."""
        return 3 * self.ttl_s

    def sync(self) -> bool:
        """Bring the snapshot up to date (see the module docstring); False when not possible.

        The first sync loads every stored choice in one query; later ones fetch only the choices
        written since the change number last seen (`StateStore.preference_changes`), so a sync
        costs one indexed query whatever the table's size.
        """
        with self._lock:
            seq_before = self._seq
            incremental = self._snapshot is not None and self._change is not None
            since = self._change or 0
        try:
            if incremental:
                found, change = self.store.preference_changes(since, self.max_entries)
                if found is None:  # too many changes at once: reload everything
                    incremental = False
            if not incremental:
                found, change = self.store.preference_snapshot(self.max_entries)
        except Exception as exc:
            self.errors += 1
            log.warning(
                "preference sync failed (%s: %s); per-user reads until it works",
                type(exc).__name__,
                exc,
            )
            return False
        with self._lock:
            if found is None:  # too many to hold: per-user reads
                self._snapshot, self._change = None, None
                return False
            snapshot = self._snapshot if incremental and self._snapshot is not None else {}
            snapshot.update((user, model) for user, model in found.items() if model in MODELS)
            for user, (value, _, seq) in self._entries.items():
                if seq > seq_before and value is not None:
                    snapshot[user] = value  # a `set` landed while we read: newer than our read
            if len(snapshot) > self.max_entries:
                self._snapshot, self._change = None, None
                return False
            self._snapshot, self._snapshot_at, self._change = snapshot, self._clock(), change
        return True

    def get(self, user_id: str | None) -> str | None:
        """The user's choice ("classic", "ensemble", "auto"); None: anonymous, or never chose."""
        found, value = self.peek(user_id)
        return value if found else self._load(user_id)  # type: ignore[arg-type]

    async def aget(self, user_id: str | None) -> str | None:
        """`get` for the event loop: a fresh entry answers inline, a store read runs in a thread."""
        found, value = self.peek(user_id)
        return value if found else await asyncio.to_thread(self._load, user_id)  # type: ignore[arg-type]

    def refresh(self, user_id: str) -> str | None:
        """Read the store now (e.g. for the settings page) and cache what it says; errors raise."""
        return self._load(user_id, raise_errors=True)

    def set(self, user_id: str, model: str) -> None:
        """Store the user's choice (ValueError for a value outside MODELS), then cache it."""
        if model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {model!r}")
        self.store.set_preference(user_id, model)
        with self._lock:
            self._seq += 1
            self._put(user_id, model, self._seq)
            if self._snapshot is not None:
                self._snapshot[user_id] = model

    def invalidate(self, user_id: str | None = None) -> None:
        """Forget one user (or everyone), so the next `get` reads the store."""
        with self._lock:
            if user_id is None:
                self._entries.clear()
            else:
                self._entries.pop(user_id, None)
            self._snapshot, self._change = None, None  # until the next sync

    # ------------------------------------------------------------------ internals
    def _load(self, user_id: str, raise_errors: bool = False) -> str | None:
        with self._lock:
            seq_before = self._seq
        try:
            value = self.store.get_preference(user_id)
        except Exception as exc:
            self.errors += 1
            if raise_errors:
                raise
            with self._lock:
                stale = self._entries.get(user_id)
                value = stale[0] if stale is not None else None
                self._put(user_id, value, stale[2] if stale is not None else 0)
            log.warning(
                "preference read for %r failed (%s: %s); using %r for %.1fs",
                user_id,
                type(exc).__name__,
                exc,
                value,
                self.ttl_s,
            )
            return value
        if value not in MODELS:
            value = None  # an unknown stored value must not break routing
        with self._lock:
            current = self._entries.get(user_id)
            if current is not None and current[2] > seq_before:
                return current[0]  # a `set` landed while we read: it is newer than our read
            self._put(user_id, value, seq_before)
        return value

    def _put(self, user_id: str, value: str | None, seq: int) -> None:
        """Insert under the lock; evict the least recently used beyond max_entries."""
        self._entries[user_id] = (value, self._clock() + self.ttl_s, seq)
        self._entries.move_to_end(user_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
