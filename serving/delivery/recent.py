"""The answers this replica gave, kept briefly so a feedback call can join its label to them."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple


class Served(NamedTuple):
    """What the router answered for one request id, kept for the feedback join.

    RecentPredictions keeps it as a plain tuple of atomic values, which CPython's collector stops
    tracking (it untracks exact tuples only, not NamedTuples): the ~100k kept then add nothing to
    the full collections that pause the router (serving/observability/gcpause.py)."""

    arm: str
    label: str
    latency_ms: float | None
    created_at: float
    shadow_label: str | None = None
    randomised: bool = False
    """The split chose the arm: only such labels are A/B evidence (routing.policy)."""


class RecentPredictions:
    """request id -> Served, bounded in size and age (oldest first out)."""

    def __init__(self, max_entries: int, ttl_s: float, clock: Callable[[], float] = time.time):
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._items: OrderedDict[str, tuple] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, request_id: str, served: Served) -> None:
        with self._lock:
            self._items[request_id] = tuple(served)  # an exact tuple: untracked by the collector
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def get(self, request_id: str) -> Served | None:
        with self._lock:
            item = self._items.get(request_id)
            if item is None:
                return None
            served = Served._make(item)
            if self._clock() - served.created_at > self.ttl_s:
                del self._items[request_id]
                return None
            return served

    def __len__(self) -> int:
        return len(self._items)
