"""One arm's answer to a batch of rows: the call through the prediction cache, timed, and the
rendering of its probabilities as the API's predictions (with signed request ids)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.observability import metrics
from serving.results import RoutedPrediction
from serving.routing.arms import ArmInfo
from serving.routing.cache import PredictionCache
from serving.routing.policy import is_randomised

RequestId = Callable[[str, str, int, np.ndarray, bool], str]
"""(arm, version, class index, probabilities, randomised) -> the request id of one answered row."""


@dataclass
class Answer:
    """Probabilities for a batch of rows from one arm, with how they were obtained."""

    arm: str
    info: ArmInfo
    probabilities: np.ndarray
    cached: list[bool]
    fallback: bool = False
    latency_s: float | None = None
    cpu_seconds: float | None = None


async def call_arm(
    arm: Any,
    info: ArmInfo,
    codes: np.ndarray,
    cache: PredictionCache,
    timeout_s: float | None = None,
    use_cache: bool = True,
) -> Answer:
    """The arm's answer for `codes`: cached rows from the cache, the others in one call (under
    `timeout_s` when given), timed, with the CPU it cost."""
    use_cache = use_cache and cache.max_entries > 0
    n = len(codes)
    keys = (
        [PredictionCache.make_key(arm.name, info.version, row) for row in codes]
        if use_cache
        else []
    )
    found: list[Any] = [cache.get(k) for k in keys] if keys else [None] * n
    missing = [i for i, p in enumerate(found) if p is None]
    cached = [p is not None for p in found]
    for hit in cached:
        metrics.CACHE.labels(result="hit" if hit else "miss").inc()
    latency = cpu = None
    if missing:
        start, cpu_start = time.perf_counter(), time.thread_time()
        call = arm.predict(codes if len(missing) == n else codes[missing])
        fresh = await (asyncio.wait_for(call, timeout_s) if timeout_s else call)
        latency = time.perf_counter() - start
        metrics.LATENCY.labels(arm=arm.name).observe(latency)
        # CPU: measured here for an in-process arm; a service reports its own per-row figure.
        per_row = info.details.get("cpu_seconds_per_row")
        cpu = per_row * len(missing) if per_row is not None else time.thread_time() - cpu_start
        for j, i in enumerate(missing):
            found[i] = fresh[j]
            if keys:
                cache.put(keys[i], fresh[j])
    return Answer(arm.name, info, np.vstack(found), cached, latency_s=latency, cpu_seconds=cpu)


def render(
    answer: Answer, reason: str, endpoint: str, request_id: RequestId
) -> list[RoutedPrediction]:
    """Each row's prediction as the API answers it (and counted per endpoint, arm and outcome)."""
    classes = answer.info.schema.classes
    outcome = "fallback" if answer.fallback else "ok"
    metrics.REQUESTS.labels(endpoint=endpoint, arm=answer.arm, outcome=outcome).inc(
        len(answer.cached)
    )
    version, out = answer.info.version, []
    randomised = is_randomised(reason, answer.fallback)
    for probs, cached in zip(answer.probabilities, answer.cached, strict=True):
        index = int(np.argmax(probs))
        out.append(
            RoutedPrediction(
                label=classes[index],
                probabilities={c: float(p) for c, p in zip(classes, probs, strict=True)},
                model=answer.arm,
                model_version=version,
                request_id=request_id(answer.arm, version, index, probs, randomised),
                fallback=answer.fallback,
                cached=cached,
                reason=reason,
            )
        )
    return out
