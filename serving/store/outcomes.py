"""Answered requests on their way to the shared store: buffered in memory, written in batches.

The hot path only appends a tuple (no database I/O); a background job writes what accumulated
every `SERVING_OUTCOME_FLUSH_S` in one transaction, so the evaluation on every replica sums every
replica's traffic. When the database is down the rows wait and the next flush retries them; past
`max_pending` the oldest are dropped — counted in a metric and logged, never silently.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from serving.observability import metrics

log = logging.getLogger(__name__)


class OutcomeStore(Protocol):
    def record_requests(self, rows: Sequence[dict[str, Any]]) -> None: ...

    def record_shadow_labels(self, items: Sequence[tuple[str, str, float]]) -> None: ...

    def record_served(self, rows: Sequence[Mapping[str, Any]]) -> None: ...

    def record_drift_rows(
        self, replica: str, rows: Sequence[Sequence[float]], at: float
    ) -> None: ...


class OutcomeBuffer:
    """Pending request outcomes, shadow labels and served requests' features of this replica."""

    def __init__(self, store: OutcomeStore, replica: str, max_pending: int = 200_000):
        self.store = store
        self.replica = replica
        self.max_pending = max_pending
        self._requests: deque[tuple] = deque()
        self._shadow: deque[tuple[str, str, float]] = deque()
        self._served: deque[dict[str, Any]] = deque()
        self.max_inputs = 100
        """Newest input rows shipped per flush for the shared drift window (a sample by design:
        the window is every replica's newest rows; LiveEvaluation sets it to window / 20)."""
        self._inputs: deque[list[float]] = deque(maxlen=self.max_inputs)
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self.dropped = 0
        self.written = 0

    @property
    def pending(self) -> int:
        return len(self._requests) + len(self._shadow) + len(self._served)

    def add_request(
        self,
        arm: str,
        latency_ms: float | None,
        cpu_seconds: float | None,
        at: float,
        *,
        error: bool = False,
        fallback: bool = False,
        cached: bool = False,
    ) -> None:
        self._requests.append((at, arm, latency_ms, cpu_seconds, error, fallback, cached))
        if len(self._requests) > self.max_pending:
            self._drop(self._requests)

    def add_inputs(self, codes: Any) -> None:
        """Queue input rows (a code matrix) for the shared drift window; only the newest
        `max_inputs` wait for the next flush (older ones are replaced, not counted as drops)."""
        if self._inputs.maxlen != self.max_inputs:
            with self._lock:
                self._inputs = deque(self._inputs, maxlen=self.max_inputs)
        self._inputs.extend(codes.tolist() if hasattr(codes, "tolist") else codes)

    def add_shadow(self, request_id: str, label: str, at: float) -> None:
        self._shadow.append((request_id, label, at))
        if len(self._shadow) > self.max_pending:
            self._drop(self._shadow)

    def add_served(
        self,
        request_id: str,
        features: Mapping[str, Any],
        arm: str,
        model_version: str | None,
        predicted: str,
        created_at: float,
    ) -> None:
        """Keep a served request's features (the dict the client sent, no user id) for retraining;
        written by the next `flush` (`StateStore.record_served`)."""
        self._served.append(
            {
                "request_id": request_id,
                "features": features,
                "arm": arm,
                "model_version": model_version,
                "predicted": predicted,
                "created_at": created_at,
            }
        )
        if len(self._served) > self.max_pending:
            self._drop(self._served)

    def flush(self) -> int:
        """Write everything pending; on failure put it back (it is retried) and raise."""
        with self._flush_lock:  # one writer at a time keeps rows in order
            with self._lock:
                requests, self._requests = list(self._requests), deque()
                shadow, self._shadow = list(self._shadow), deque()
                served, self._served = list(self._served), deque()
                inputs = list(self._inputs)
                self._inputs.clear()
            if not requests and not shadow and not served and not inputs:
                return 0
            rows = [
                {
                    "created_at": at,
                    "arm": arm,
                    "latency_ms": latency,
                    "cpu_seconds": cpu,
                    "error": error,
                    "fallback": fallback,
                    "cached": cached,
                    "replica": self.replica,
                }
                for at, arm, latency, cpu, error, fallback, cached in requests
            ]
            try:
                self.store.record_shadow_labels(shadow)
                shadow = []
                if served:
                    self.store.record_served(served)
                    served = []
                self.store.record_requests(rows)
            except Exception:
                with self._lock:  # back in front of what arrived meanwhile, still bounded
                    self._requests.extendleft(reversed(requests))
                    self._shadow.extendleft(reversed(shadow))
                    self._served.extendleft(reversed(served))
                    for pending in (self._requests, self._shadow, self._served):
                        while len(pending) > self.max_pending:
                            self._drop(pending)
                raise
            self.written += len(rows)
            if inputs:  # a sample: if this write fails, the next flush brings newer rows
                try:
                    self.store.record_drift_rows(self.replica, inputs, time.time())
                except Exception as exc:
                    log.warning("input rows for the shared drift window not written: %s", exc)
            return len(rows)

    def _drop(self, pending: deque) -> None:
        pending.popleft()
        self.dropped += 1
        metrics.OUTCOMES_DROPPED.inc()
        if self.dropped in (1, 10, 100, 1000) or self.dropped % 10_000 == 0:
            log.error(
                "shared store unreachable for long: %d request outcomes dropped so far "
                "(oldest first, beyond %d pending)",
                self.dropped,
                self.max_pending,
            )
