"""Rolling live metrics per arm: what each arm answered (latency, errors, fallbacks, cache hits,
CPU) and how its labelled predictions fared, bounded in size and age, rebuilt from the shared
store's rows on start-up. The clock is injected; the windows never read the store themselves."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from serving.evidence.evaluation.comparison import compare_accuracy, compare_latency

ARMS: tuple[str, ...] = ("classic", "ensemble", "cascade", "shadow")
"""The arms the windows track by default."""


class ArmWindow:
    """Rolling live metrics of one arm, bounded in size and age; thread-safe.

    Requests and labels are kept in two deques of at most `max_events` entries each; entries older
    than `max_age_s` (by the injected `clock`, epoch seconds by default) are dropped whenever the
    window is touched. Cache hits count as requests but are left out of the latency samples (a
    cache hit says nothing about the model's speed).
    """

    def __init__(
        self,
        max_events: int = 10_000,
        max_age_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ):
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        if max_age_s <= 0:
            raise ValueError("max_age_s must be positive")
        self.max_events = int(max_events)
        self.max_age_s = float(max_age_s)
        self._clock = clock
        self._lock = threading.Lock()
        # (time, latency_ms or None, error, fallback, cached, cpu_seconds or None)
        self._requests: deque[tuple[float, float | None, bool, bool, bool, float | None]] = deque(
            maxlen=self.max_events
        )
        # (time, correct, rating or None)
        self._labels: deque[tuple[float, bool, int | None]] = deque(maxlen=self.max_events)

    def record_request(
        self,
        latency_ms: float | None,
        error: bool,
        fallback: bool,
        cached: bool,
        cpu_seconds: float | None,
        at: float | None = None,
    ) -> None:
        """Count one request to this arm.

        `error`: the arm failed it (also when the router then answered by fallback);
        `fallback`: classic answered in the arm's place; `cached`: answered from the cache (no
        latency sample); `cpu_seconds`: CPU time the arm spent on it, None when unknown; `at`:
        when it was answered (replays from the shared store), default now.
        """
        if cached or latency_ms is None or not math.isfinite(latency_ms):
            latency = None
        else:
            latency = float(latency_ms)
        cpu = None if cpu_seconds is None or not math.isfinite(cpu_seconds) else float(cpu_seconds)
        now = self._clock()
        stamp = now if at is None else float(at)
        with self._lock:
            self._requests.append((stamp, latency, bool(error), bool(fallback), bool(cached), cpu))
            self._prune(now)

    def record_label(
        self, correct: bool, rating: int | None = None, at: float | None = None
    ) -> None:
        """Count one labelled prediction of this arm, with the user's 1..10 rating if given."""
        now = self._clock()
        stamp = now if at is None else float(at)
        with self._lock:
            self._labels.append((stamp, bool(correct), None if rating is None else int(rating)))
            self._prune(now)

    def latencies(self) -> list[float]:
        """The latency samples (ms) in the window, oldest first (cache hits excluded)."""
        with self._lock:
            self._prune(self._clock())
            return [r[1] for r in self._requests if r[1] is not None]

    def clear(self) -> None:
        """Forget everything (e.g. when a new rollout stage starts)."""
        with self._lock:
            self._requests.clear()
            self._labels.clear()

    def _prune(self, now: float) -> None:
        horizon = now - self.max_age_s
        for events in (self._requests, self._labels):
            while events and events[0][0] < horizon:
                events.popleft()

    def snapshot(self) -> dict:
        """The window's metrics as a JSON-able dict; rates and percentiles are None without data.

        Keys: `count` (requests), `errors`, `error_rate`, `success_rate` (1 - error_rate),
        `fallbacks`, `fallback_rate`, `cached`, `cache_hit_rate`, `latency_samples`,
        `p50_latency_ms`, `p95_latency_ms`, `p99_latency_ms` (linear-interpolated percentiles of
        the non-cached latencies), `cpu_samples`, `cpu_seconds_per_request` (mean over requests
        with a CPU measurement), `labelled`, `correct`, `accuracy`, `rated`, `satisfaction`
        (mean rating / 10).
        """
        with self._lock:
            self._prune(self._clock())
            requests = list(self._requests)
            labels = list(self._labels)
        count = len(requests)
        errors = sum(1 for r in requests if r[2])
        fallbacks = sum(1 for r in requests if r[3])
        cached = sum(1 for r in requests if r[4])
        latencies = np.array([r[1] for r in requests if r[1] is not None], dtype=np.float64)
        cpu = [r[5] for r in requests if r[5] is not None]
        labelled = len(labels)
        correct = sum(1 for entry in labels if entry[1])
        ratings = [entry[2] for entry in labels if entry[2] is not None]
        p50: float | None = None
        p95: float | None = None
        p99: float | None = None
        if latencies.size:
            p50, p95, p99 = (float(v) for v in np.percentile(latencies, [50, 95, 99]))
        error_rate = errors / count if count else None
        return {
            "count": count,
            "errors": errors,
            "error_rate": error_rate,
            "success_rate": None if error_rate is None else 1.0 - error_rate,
            "fallbacks": fallbacks,
            "fallback_rate": fallbacks / count if count else None,
            "cached": cached,
            "cache_hit_rate": cached / count if count else None,
            "latency_samples": int(latencies.size),
            "p50_latency_ms": p50,
            "p95_latency_ms": p95,
            "p99_latency_ms": p99,
            "cpu_samples": len(cpu),
            "cpu_seconds_per_request": float(np.mean(cpu)) if cpu else None,
            "labelled": labelled,
            "correct": correct,
            "accuracy": correct / labelled if labelled else None,
            "rated": len(ratings),
            "satisfaction": float(np.mean(ratings)) / 10.0 if ratings else None,
        }


class EvaluationWindows:
    """One `ArmWindow` per arm ("classic", "ensemble", "cascade", "shadow"); what a request
    costs is `serving.evidence.cost`'s business (it reads the arms' CPU from these windows)."""

    def __init__(
        self,
        arms: Sequence[str] = ARMS,
        max_events: int = 10_000,
        max_age_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ):
        self.windows: dict[str, ArmWindow] = {
            arm: ArmWindow(max_events=max_events, max_age_s=max_age_s, clock=clock) for arm in arms
        }
        self.forced_labels: dict[str, int] = {}
        """Labels of requests whose arm was chosen, not assigned at random (header, preference,
        allow-list, direct endpoint, fallback): reported per arm, never compared."""

    def __getitem__(self, arm: str) -> ArmWindow:
        """The window of `arm` (KeyError for an unknown arm)."""
        return self.windows[arm]

    def record_request(
        self,
        arm: str,
        latency_ms: float | None,
        error: bool = False,
        fallback: bool = False,
        cached: bool = False,
        cpu_seconds: float | None = None,
    ) -> None:
        """Shorthand for `self[arm].record_request(...)`."""
        self.windows[arm].record_request(latency_ms, error, fallback, cached, cpu_seconds)

    def record_label(self, arm: str, correct: bool, rating: int | None = None) -> None:
        """Shorthand for `self[arm].record_label(...)`."""
        self.windows[arm].record_label(correct, rating)

    def replay_requests(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Rebuild the request windows from stored outcomes (`StateStore.requests_since`, every
        replica's), oldest first, each at the time it was answered. Returns the rows replayed."""
        replayed = 0
        for row in rows:
            window = self.windows.get(str(row.get("arm")))
            if window is not None:
                window.record_request(
                    row.get("latency_ms"),
                    bool(row.get("error")),
                    bool(row.get("fallback")),
                    bool(row.get("cached")),
                    row.get("cpu_seconds"),
                    at=row.get("created_at"),
                )
                replayed += 1
        return replayed

    def replay_feedback(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Rebuild the label windows from stored feedback (`StateStore.feedback_since`).

        Only rows whose arm was assigned at random (`randomised`, missing = True) are labels
        here; the others are counted in `forced_labels`. Each row's label goes to its serving arm
        and, when it carries a shadow prediction, to the "shadow" window (without the rating,
        which judged the served answer). Only labels are
        rebuilt here (`replay_requests` rebuilds the request counters). Returns the number of rows
        replayed. A row's label counts from the row's `created_at` (the prediction's time) when it
        has one, else from now.
        """
        replayed = 0
        for row in rows:
            arm, at = row.get("arm"), row.get("created_at")
            if not row.get("randomised", True):  # only randomised traffic is A/B evidence
                self.forced_labels[str(arm)] = self.forced_labels.get(str(arm), 0) + 1
                replayed += 1
                continue
            if arm in self.windows:
                correct = row.get("correct")
                if correct is None:
                    correct = row.get("predicted") == row.get("label")
                self.windows[arm].record_label(bool(correct), row.get("rating"), at=at)
            shadow = row.get("shadow_predicted")
            if shadow is not None and "shadow" in self.windows:
                self.windows["shadow"].record_label(shadow == row.get("label"), at=at)
            replayed += 1
        return replayed

    def clear(self) -> None:
        """Empty every window."""
        for window in self.windows.values():
            window.clear()

    def snapshot(self) -> dict[str, dict]:
        """{arm: ArmWindow.snapshot()} for every arm, with `forced_labelled`: labels of traffic
        whose arm was not assigned at random (left out of `labelled`)."""
        out = {arm: window.snapshot() for arm, window in self.windows.items()}
        for arm, snap in out.items():
            snap["forced_labelled"] = self.forced_labels.get(arm, 0)
        return out

    def compare(
        self,
        baseline: str = "classic",
        candidate: str = "ensemble",
        alpha: float = 0.05,
        min_samples: int = 100,
    ) -> dict:
        """A/B statistics of `candidate` against `baseline`: accuracy and latency comparisons."""
        a = self.windows[baseline].snapshot()
        b = self.windows[candidate].snapshot()
        return {
            "baseline": baseline,
            "candidate": candidate,
            "accuracy": compare_accuracy(
                a["correct"],
                a["labelled"],
                b["correct"],
                b["labelled"],
                alpha=alpha,
                min_samples=min_samples,
            ),
            "latency": compare_latency(
                self.windows[baseline].latencies(),
                self.windows[candidate].latencies(),
                min_samples=min_samples,
                alpha=alpha,
            ),
        }
