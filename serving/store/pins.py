"""Model version pins: the version of each model every replica serves, kept in the state store.

An admin swap (POST /api/admin/models/{name}/version) loads the version on the answering router's
services and, once they accepted it, pins it here; every classic and ensemble service (and every
router's in-process classic) polls the pins and swaps to the pinned version, so all replicas
serve the same one. A version that fails to load on some replica is refused there (logged once),
and that replica keeps serving its current version.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

log = logging.getLogger(__name__)

PINS_KEY = "model_pins"


class PinStore(Protocol):
    def get_versioned(self, key: str) -> tuple[Any, int]: ...

    def set_if_version(self, key: str, expected_version: int, value: Any) -> int | None: ...

    def version_of(self, key: str) -> int: ...


class VersionPins:
    """{model name: tag} with a version counter; reads cost one column until something changes."""

    def __init__(self, store: PinStore):
        self.store = store
        self._version = -1
        self._pins: dict[str, str] = {}
        self._lock = threading.Lock()

    def pin(self, name: str, tag: str) -> int:
        """Pin `name` to `tag` for every replica (retries when another pin lands in between)."""
        for _ in range(20):
            pins, version = self.store.get_versioned(PINS_KEY)
            new = self.store.set_if_version(PINS_KEY, version, {**(pins or {}), name: tag})
            if new is not None:
                return new
        raise RuntimeError("could not pin the model version: too many concurrent writers")

    def current(self) -> dict[str, str]:
        """The pins in force (cached until the stored version changes)."""
        version = self.store.version_of(PINS_KEY)
        with self._lock:
            if version != self._version:
                pins, self._version = self.store.get_versioned(PINS_KEY)
                self._pins = dict(pins or {})
            return dict(self._pins)

    def pinned(self, name: str) -> str | None:
        return self.current().get(name)
