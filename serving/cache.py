"""An in-memory LRU cache of predictions whose entries also expire after a time to live.

Keys name the model version, so a deployed new version never serves the old one's answers.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from serving.config import CacheConfig


class PredictionCache:
    """Least-recently-used eviction beyond `max_entries`, expiry `ttl_s` after an entry is stored.

    `max_entries=0` disables the cache: `put` keeps nothing and `get` always misses without
    counting. `None` is never cached, since `get` uses it to say "miss". `hits` and `misses` count
    over the cache's whole life (`clear` keeps them), as metrics counters expect.
    """

    def __init__(self, max_entries: int, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self._check(max_entries, ttl_s)
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, Any]] = (
            OrderedDict()
        )  # key -> (stored_at, value)
        self.hits = 0
        self.misses = 0

    @classmethod
    def from_config(
        cls, config: CacheConfig, clock: Callable[[], float] = time.monotonic
    ) -> PredictionCache:
        return cls(config.max_entries if config.enabled else 0, config.ttl_s, clock)

    @staticmethod
    def make_key(model: str, version: str, features: Mapping[str, Any]) -> str:
        """A sha256 of the canonical JSON of model, version and features.

        Independent of key order, and floats with an integral value count as ints (1.0 == 1),
        as they do in JSON; features must be JSON-able.
        """
        canonical = json.dumps(
            {"model": model, "version": version, "features": _normalise(features)},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    def get(self, key: str) -> Any | None:
        """The cached value, or None when absent or expired (an expired entry is dropped)."""
        if self.max_entries == 0:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and self._clock() - entry[0] >= self.ttl_s:
                del self._entries[key]
                entry = None
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: str, value: Any) -> None:
        """Store `value` as the most recent entry, evicting the least recent beyond capacity."""
        if self.max_entries == 0 or value is None:
            return
        with self._lock:
            self._entries[key] = (self._clock(), value)
            self._entries.move_to_end(key)
            self._evict()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def resize(self, max_entries: int, ttl_s: float) -> None:
        """Apply new limits at once: extra entries go least recent first, the TTL applies to all."""
        self._check(max_entries, ttl_s)
        with self._lock:
            self.max_entries = max_entries
            self.ttl_s = ttl_s
            self._evict()

    def reconfigure(self, config: CacheConfig) -> None:
        self.resize(config.max_entries if config.enabled else 0, config.ttl_s)

    def __len__(self) -> int:
        """Entries held, including expired ones not yet looked up or evicted."""
        return len(self._entries)

    def _evict(self) -> None:
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    @staticmethod
    def _check(max_entries: int, ttl_s: float) -> None:
        if max_entries < 0:
            raise ValueError(f"max_entries must be >= 0, got {max_entries}")
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")


def _normalise(value: Any) -> Any:
    """Integral floats to ints, recursively, so 1.0 and 1 give the same key."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(key): _normalise(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(item) for item in value]
    return value
