"""A model service's model: loaded from the store, described, swapped safely, its CPU counted.

The BentoML services in service.py hold one `HostedModel` each and map its errors to HTTP
(`ModelUnavailable` -> 503, `InvalidCodes` and `VersionRefused` -> 400). Keeping this here lets
unit tests load, swap and refuse versions against a real model store without a server.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from models import store
from serving.observability import metrics
from serving.routing.arms import describe_model
from serving.store.pins import VersionPins

log = logging.getLogger(__name__)


class ModelUnavailable(RuntimeError):
    """No model is loaded (missing from the store or failed to load)."""


class InvalidCodes(ValueError):
    """The code matrix does not have the model's shape."""


class VersionRefused(ValueError):
    """A version that is not this model's, or that failed to load; the current one keeps serving."""


class HostedModel:
    """One served model. `stored_tag` None means the store does not have `tag`: the host then
    answers "not ready" with the reason instead of failing the service's start-up.

    `on_load` runs after every successful load or swap (e.g. to attach metrics to the new model).
    """

    def __init__(
        self,
        name: str,
        tag: str,
        stored_tag: str | None,
        on_load: Callable[[Any], None] | None = None,
    ) -> None:
        self.name = name
        self.tag = tag
        self.on_load = on_load
        self.model: Any = None
        self.stored: Any = None
        self.error: str | None = None
        self.cpu_seconds = 0.0
        self.rows_served = 0
        self.cascade_cpu_seconds = 0.0
        self.cascade_rows_served = 0
        self._refused: str | None = None  # a pinned tag that failed to load here
        if stored_tag is None:
            self.error = f"model {tag} is not in the model store"
            log.error("%s: %s", name, self.error)
            return
        try:
            self._use(*store.load(stored_tag))
        except Exception as exc:
            self.error = f"model {stored_tag} failed to load: {type(exc).__name__}: {exc}"
            log.exception("%s: model failed to load", name)

    @property
    def ready(self) -> bool:
        return self.model is not None

    def _use(self, model: Any, stored: Any) -> None:
        self.model, self.stored = (
            model,
            stored,
        )  # one assignment each: requests see old or new, never half
        self.cpu_seconds, self.rows_served = 0.0, 0
        self.cascade_cpu_seconds, self.cascade_rows_served = 0.0, 0
        self.error = None
        if self.on_load is not None:
            self.on_load(model)

    def description(self) -> dict:
        """Version, schema, metrics, health and measured CPU per row (what the router reads)."""
        if self.model is None:
            return {"name": self.name, "tag": self.tag, "ready": False, "error": self.error}
        description = describe_model(
            self.name, str(self.stored.tag), self.model, self.stored.info.metadata
        )
        description["cpu_seconds_per_row"] = (
            self.cpu_seconds / self.rows_served if self.rows_served else None
        )
        if isinstance(description.get("cascade"), dict):
            rows = self.cascade_rows_served
            description["cascade"]["cpu_seconds_per_row"] = (
                self.cascade_cpu_seconds / rows if rows else None
            )
        return description

    def swap(self, tag: str) -> dict:
        """Load another stored version and swap it in; on any failure the current model keeps
        serving.
        """
        if not tag.startswith(f"{self.name}:"):
            raise VersionRefused(f"{tag!r} is not a version of {self.name!r}")
        previous = str(self.stored.tag) if self.model is not None else None
        try:
            loaded = store.load(tag)
        except Exception as exc:
            log.error("%s: version %s refused, keeping %s: %s", self.name, tag, previous, exc)
            raise VersionRefused(
                f"version {tag} failed to load ({type(exc).__name__}: {exc}); "
                f"still serving {previous}"
            ) from None
        self._use(*loaded)
        log.warning("%s: now serving %s (was %s)", self.name, self.stored.tag, previous)
        return {"name": self.name, "from": previous, "to": str(self.stored.tag)}

    def follow(self, pins: VersionPins) -> dict | None:
        """Swap to the pinned version when it differs from the one served (all replicas serve the
        pin); a pin that fails to load here is logged once and the current version keeps serving."""
        pinned = pins.pinned(self.name)
        served = str(self.stored.tag) if self.model is not None else None
        if pinned is None or pinned == served or pinned == self._refused:
            return None
        try:
            return self.swap(pinned)
        except VersionRefused as exc:
            self._refused = pinned
            log.error("%s: pinned version refused here: %s", self.name, exc)
            return None

    def check(self, codes: np.ndarray) -> np.ndarray:
        """The codes as a float64 (n, features) matrix; raises if no model or the shape is wrong."""
        if self.model is None:
            raise ModelUnavailable(self.error or "model not loaded")
        codes = np.asarray(codes, dtype=np.float64)
        width = len(self.model.schema.features)
        if codes.ndim != 2 or codes.shape[1] != width:
            raise InvalidCodes(f"codes must have shape (n, {width}), got {codes.shape}")
        return codes

    def predict_proba(self, codes: np.ndarray) -> np.ndarray:
        """predict_proba of checked codes, its CPU time counted for the cost per request."""
        start = time.thread_time()
        probabilities = self.model.predict_proba(codes)
        self.cpu_seconds += time.thread_time() - start
        self.rows_served += len(codes)
        return probabilities

    def predict_cascade(self, codes: np.ndarray) -> np.ndarray:
        """The ensemble's cascade (models/cascade.py) on checked codes, packed as (n, k + 1): the
        class probabilities, then 1.0 where the row escalated to the full ensemble. Its CPU is
        counted apart from `predict_proba`'s (the cascade's cost per row is its own), its rows in
        the `tabular_cascade_*` counters."""
        start = time.thread_time()
        result = self.model.predict_cascade(codes)
        self.cascade_cpu_seconds += time.thread_time() - start
        self.cascade_rows_served += len(codes)
        metrics.CASCADE_ROWS.inc(len(codes))
        metrics.CASCADE_ESCALATED.inc(int(result.escalated.sum()))
        return result.packed()


def instrument_ensemble(model: Any) -> None:
    """Per-member metrics and member threads, after every load or version swap of the ensemble."""
    model.enable_member_parallelism(2)  # members on both cores for batches of 32+ rows
    model.observer = lambda member, seconds: metrics.MEMBER_LATENCY.labels(member=member).observe(
        seconds
    )
    metrics.ENSEMBLE_DEGRADED.set(1 if model.degraded else 0)


class FaultInjector:
    """Test-only faults for a model service: a delay and an error rate on every prediction."""

    def __init__(self, enabled: bool, rng: random.Random | None = None):
        self.enabled = enabled
        self.delay_s = 0.0
        self.error_rate = 0.0
        self._rng = rng or random.Random()

    def configure(self, delay_ms: float = 0.0, error_rate: float = 0.0) -> dict[str, float]:
        if not self.enabled:
            raise FaultsDisabled("fault injection is disabled")
        self.delay_s = max(delay_ms, 0.0) / 1000.0
        self.error_rate = min(max(error_rate, 0.0), 1.0)
        return {"delay_ms": delay_ms, "error_rate": self.error_rate}

    def apply(self) -> None:
        """Sleep and/or fail as configured (a no-op unless a test turned faults on)."""
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.error_rate and self._rng.random() < self.error_rate:
            raise RuntimeError("injected fault")


class FaultsDisabled(ValueError):
    """Fault injection was asked for while SERVING_FAULTS_ENABLED is off."""


async def follow_pins(hosted: HostedModel, state_url: str, period_s: float) -> None:
    """Keep `hosted` on the version pinned in the shared store, checking every `period_s`; runs
    until cancelled. The store is opened lazily, so a database that is down at start-up only
    delays pin following, never the service."""
    pins: VersionPins | None = None
    while True:
        try:
            if pins is None:
                from serving.store import StateStore

                pins = VersionPins(await asyncio.to_thread(StateStore, state_url))
            await asyncio.to_thread(hosted.follow, pins)
        except Exception as exc:  # the store is unreachable: try again next period
            log.warning("%s: version pins unavailable: %s", hosted.name, exc)
        await asyncio.sleep(period_s)
