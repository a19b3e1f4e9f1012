"""Where the flags in force come from: one versioned document in the state store, for every replica.

The YAML file seeds an empty store and is never rewritten. An admin change (PUT /api/admin/flags)
is a compare-and-set on the document's version, so a write based on a stale read is refused
(`StaleFlags`, HTTP 409) instead of silently undoing another operator's change; every replica
polls the version (one single-column read) and applies a newer document within a poll period.
Editing the file while a router runs is still an operator's change: the router that sees the file
change writes it to the store, and so to every replica. Without a store (a unit test), the file
alone is the source, as before.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from serving.config.flags import FlagConfig, FlagConfigError, dump_flag_config, load_flag_config
from serving.errors import Conflict

log = logging.getLogger(__name__)

FLAGS_KEY = "flags"


class VersionedStore(Protocol):
    """What this needs of serving.store.StateStore."""

    def get_versioned(self, key: str) -> tuple[Any, int]: ...

    def set_if_version(self, key: str, expected_version: int, value: Any) -> int | None: ...

    def version_of(self, key: str) -> int: ...


class StaleFlags(Conflict):
    """A flag write based on an old version: someone else changed the flags first (HTTP 409)."""

    def __init__(self, expected: int, current: int):
        super().__init__(
            f"the flags changed since version {expected} (now {current}): re-read them "
            "(GET /api/admin/flags, header ETag) and retry with If-Match",
            headers={"ETag": f'"{current}"'},
        )
        self.expected, self.current = expected, current


class FlagSource:
    """The shared flag document (`store`, key "flags") and the seed/watch file (`path`)."""

    def __init__(self, store: VersionedStore | None, path: Path | None):
        self.store = store
        self.path = path
        self.version = 0
        """Version of the document in force here (0: none stored, or no store)."""
        self._mtime = self._file_mtime()

    def initial(self, seed: FlagConfig) -> FlagConfig:
        """The flags to start with: the store's, after seeding it with `seed` when it is empty."""
        if self.store is None:
            return seed
        if self.store.set_if_version(FLAGS_KEY, 0, dump_flag_config(seed)) is not None:
            log.info("flags: seeded the state store from %s", self.path)
        return self._read_store() or seed

    def write(self, cfg: FlagConfig, expected_version: int | None = None) -> int:
        """Store `cfg` for every replica; `expected_version` None means "the version in force
        here". Raises StaleFlags when the stored version is another."""
        if self.store is None:
            return self.version
        expected = self.version if expected_version is None else int(expected_version)
        new = self.store.set_if_version(FLAGS_KEY, expected, dump_flag_config(cfg))
        if new is None:
            raise StaleFlags(expected, self.store.version_of(FLAGS_KEY))
        self.version = new
        return new

    def poll(self) -> tuple[FlagConfig, str] | None:
        """A newer config and where it came from ("store" or "file"), or None. A bad file is
        logged and ignored (FlagConfigError is raised for the caller to count)."""
        mtime = self._file_mtime()
        if self.path is not None and mtime is not None and mtime != self._mtime:
            self._mtime = mtime
            cfg = load_flag_config(self.path)  # FlagConfigError: the caller keeps what it has
            if self.store is not None:
                try:
                    self.write(cfg, self.store.version_of(FLAGS_KEY))
                except StaleFlags:  # changed under us a moment ago: the store wins next poll
                    return None
            return cfg, "file"
        if self.store is not None and self.store.version_of(FLAGS_KEY) != self.version:
            stored = self._read_store()
            return None if stored is None else (stored, "store")
        return None

    def _read_store(self) -> FlagConfig | None:
        document, version = self.store.get_versioned(FLAGS_KEY)  # type: ignore[union-attr]
        try:
            cfg = FlagConfig.model_validate(document)
        except Exception as exc:  # validated on every write; never expected
            log.error("flags: stored version %d is invalid, keeping mine: %s", version, exc)
            self.version = version
            return None
        self.version = version
        return cfg

    def _file_mtime(self) -> int | None:
        try:
            return self.path.stat().st_mtime_ns if self.path else None
        except OSError:
            return None


__all__ = ["FLAGS_KEY", "FlagConfigError", "FlagSource", "StaleFlags"]
