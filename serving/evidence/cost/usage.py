"""What the bill is priced from: the router's measurements over its evaluation window (`Usage`),
the process-CPU meter that yields the router's own share (`CpuMeter`), and an arm's CPU per
served prediction from its window. The caller takes the readings; nothing here reads a clock."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Usage:
    """What the router measured (or was told to assume) over its evaluation window."""

    requests_per_second: float | None
    """Served predictions per second (all arms, cache hits included)."""
    router_cpu_seconds_per_request: float | None
    """The router's own CPU per served prediction, without models run in its process."""
    classic_cpu_seconds_per_request: float | None
    """Classic's model CPU per prediction it served."""
    ensemble_cpu_seconds_per_request: float | None
    """The ensemble service's CPU per prediction it served."""
    classic_in_router: bool = True
    """Classic answers in the router process (its CPU bills as the router's)."""
    shadow_rate: float = 0.0
    """Share of classic-served predictions mirrored to the ensemble (0 with shadow off)."""
    cascade_cpu_seconds_per_request: float | None = None
    """The ensemble service's CPU per prediction the cascade served (its cheap first stage,
    the whole ensemble for the rows it escalates); None before the cascade served any."""


@dataclass(frozen=True)
class MeterReading:
    """Differences between the oldest and newest `CpuMeter` samples."""

    seconds: float
    served: int
    cpu_seconds: float
    in_process_cpu_seconds: float

    @property
    def requests_per_second(self) -> float | None:
        return self.served / self.seconds if self.seconds > 0 else None

    @property
    def router_cpu_seconds_per_request(self) -> float | None:
        """Process CPU less in-process model CPU, per served prediction (None before traffic)."""
        if self.served <= 0:
            return None
        return max(0.0, self.cpu_seconds - self.in_process_cpu_seconds) / self.served


class CpuMeter:
    """Samples of (time, process CPU seconds, predictions served, in-process model CPU seconds),
    kept for `max_age_s`; `reading()` is the difference between the oldest and the newest.

    The caller takes the readings (e.g. `time.process_time()` each rollout tick); samples closer
    than `min_interval_s` to the previous one replace it, so memory stays bounded. Thread-safe.
    """

    def __init__(self, max_age_s: float, min_interval_s: float = 0.5):
        if max_age_s <= 0:
            raise ValueError("max_age_s must be positive")
        self.max_age_s = float(max_age_s)
        self.min_interval_s = float(min_interval_s)
        self._samples: deque[tuple[float, float, int, float]] = deque()
        self._lock = threading.Lock()

    def add(
        self, at: float, cpu_seconds: float, served: int, in_process_cpu_seconds: float
    ) -> None:
        sample = (float(at), float(cpu_seconds), int(served), float(in_process_cpu_seconds))
        with self._lock:
            samples = self._samples
            if len(samples) >= 2 and at - samples[-2][0] < self.min_interval_s:
                samples[-1] = sample  # keep the newest, not one per call
            else:
                samples.append(sample)
            while len(samples) > 2 and samples[1][0] <= at - self.max_age_s:
                samples.popleft()

    def reading(self) -> MeterReading | None:
        """None until two samples exist."""
        with self._lock:
            if len(self._samples) < 2:
                return None
            (t0, cpu0, n0, in0), (t1, cpu1, n1, in1) = self._samples[0], self._samples[-1]
        return MeterReading(t1 - t0, n1 - n0, cpu1 - cpu0, in1 - in0)


def arm_cpu_per_served(snapshot: Mapping[str, Any]) -> float | None:
    """CPU per prediction an arm served, from its `ArmWindow.snapshot()`: the mean over computed
    predictions, spread over cache hits too (a hit costs the arm nothing)."""
    mean = snapshot.get("cpu_seconds_per_request")
    if mean is None:
        return None
    computed = int(snapshot.get("cpu_samples") or 0)
    hits = int(snapshot.get("cached") or 0)
    return float(mean) * computed / (computed + hits) if computed + hits else None
