"""Shadow mode: copy sampled classic-answered requests to the ensemble, compare, off the hot path.

A copy never delays the caller's answer: it runs as a background task, bounded by
`max_in_flight` (excess copies are dropped and counted, never queued).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from serving.config.flags import ShadowConfig
from serving.observability import metrics

log = logging.getLogger(__name__)


@dataclass
class ShadowStats:
    """Running agreement statistics between classic (served) and ensemble (shadow)."""

    compared: int = 0
    agreed: int = 0
    abs_diff_sum: float = 0.0
    latency_sum: float = 0.0
    dropped: int = 0
    errors: int = 0
    by_label: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))

    def record(
        self, classes: list[str], served: np.ndarray, shadow: np.ndarray, seconds: float
    ) -> None:
        served_labels = served.argmax(axis=1)
        shadow_labels = shadow.argmax(axis=1)
        diffs = np.abs(served - shadow).mean(axis=1)
        for label_idx, agree, diff in zip(
            served_labels, served_labels == shadow_labels, diffs, strict=True
        ):
            label = classes[label_idx]
            self.compared += 1
            self.agreed += int(agree)
            self.abs_diff_sum += float(diff)
            counts = self.by_label[label]
            counts[0] += 1
            counts[1] += int(agree)
            metrics.SHADOW_AGREEMENT.labels(label=label, agree=str(bool(agree)).lower()).inc()
            metrics.SHADOW_PROB_DIFF.observe(float(diff))
        self.latency_sum += seconds
        metrics.SHADOW_LATENCY.observe(seconds)

    def summary(self) -> dict:
        n = max(self.compared, 1)
        return {
            "compared": self.compared,
            "label_agreement_rate": round(self.agreed / n, 5) if self.compared else None,
            "mean_abs_probability_diff": round(self.abs_diff_sum / n, 6) if self.compared else None,
            "mean_shadow_latency_ms": round(1000 * self.latency_sum / n, 3)
            if self.compared
            else None,
            "dropped": self.dropped,
            "errors": self.errors,
            "by_label": {
                label: {"compared": c, "agreement_rate": round(a / c, 5)}
                for label, (c, a) in sorted(self.by_label.items())
            },
        }


class ShadowMirror:
    """Fires bounded, sampled background copies of requests to the ensemble."""

    def __init__(self, config: ShadowConfig, rng: random.Random | None = None):
        self.config = config
        self.stats = ShadowStats()
        self._rng = rng or random.Random()
        self._tasks: set[asyncio.Task] = set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def maybe_mirror(
        self,
        predict: Callable[[np.ndarray], Awaitable[np.ndarray]],
        codes: np.ndarray,
        served: np.ndarray,
        classes: list[str],
        on_result: Callable[[np.ndarray, float], None] | None = None,
    ) -> bool:
        """Start a shadow copy if enabled, sampled in and under the in-flight bound.

        `on_result(probabilities, seconds)` is called with the ensemble's answer (for feedback
        joins).
        """
        if not self.config.enabled or self._rng.random() >= self.config.sample_rate:
            return False
        if len(self._tasks) >= self.config.max_in_flight:
            self.stats.dropped += 1
            metrics.SHADOW.labels(outcome="dropped").inc()
            return False
        task = asyncio.get_running_loop().create_task(
            self._run(predict, codes, served, classes, on_result)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(
        self, predict, codes: np.ndarray, served: np.ndarray, classes: list[str], on_result=None
    ) -> None:
        start = time.perf_counter()
        try:
            shadow = np.asarray(await predict(codes), dtype=np.float64)
        except Exception as exc:  # a failing shadow must never surface to callers
            self.stats.errors += 1
            metrics.SHADOW.labels(outcome="error").inc()
            log.debug("shadow call failed: %s", exc)
            return
        seconds = time.perf_counter() - start
        self.stats.record(classes, served, shadow, seconds)
        metrics.SHADOW.labels(outcome="compared").inc()
        if on_result is not None:
            on_result(shadow, seconds)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
