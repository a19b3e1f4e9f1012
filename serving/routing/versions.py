"""Ensemble versions served next to the champion: challengers and experiment variants.

The ensemble service serves one version, the champion (batched, its own process). A version on
trial runs here in the router, loaded from the same model store, its predictions in a worker
thread so the event loop keeps routing: it takes a small share of traffic (its A/B weight, or a
shadow sample), so the champion's batching matters more than the challenger's. Which versions are
loaded follows the shared state (the flags' experiment and the challenger record), so every
replica loads the same ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from serving.routing.arms import ArmInfo, describe_model, info_from_description

log = logging.getLogger(__name__)

RETRY_AFTER_S = 60.0
"""A version that failed to load is tried again after this long (not on every sync)."""


class VersionArm:
    """One stored ensemble version loaded in this process; answers in a worker thread."""

    name = "ensemble"

    def __init__(self, model: Any, info: ArmInfo):
        self.model = model
        self.info: ArmInfo | None = info

    async def predict(self, codes: np.ndarray) -> np.ndarray:
        return await asyncio.to_thread(self.model.predict_proba, codes)

    async def refresh(self) -> ArmInfo | None:
        return self.info


def load_version_arm(version: str) -> VersionArm:
    """Load `ensemble:<version>` from the model store (blocking: call it in a thread)."""
    from models import store

    model, stored = store.load(f"ensemble:{version}")
    description = describe_model("ensemble", str(stored.tag), model, stored.info.metadata)
    return VersionArm(model, info_from_description(description))


class VersionArms:
    """The ensemble versions loaded here, kept in step with the versions wanted."""

    def __init__(
        self,
        loader: Callable[[str], VersionArm] = load_version_arm,
        max_loaded: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.loader = loader
        self.max_loaded = max_loaded
        self.clock = clock
        self.arms: dict[str, VersionArm] = {}
        self.failed: dict[str, tuple[float, str]] = {}
        """version -> (when, why) it last failed to load."""

    @property
    def loaded(self) -> frozenset[str]:
        return frozenset(self.arms)

    def get(self, version: str | None) -> VersionArm | None:
        return None if version is None else self.arms.get(version)

    async def sync(self, wanted: Iterable[str]) -> None:
        """Load the wanted versions that are missing (at most `max_loaded`), drop the others."""
        wanted = list(dict.fromkeys(v for v in wanted if v))[: self.max_loaded]
        for version in [v for v in self.arms if v not in wanted]:
            del self.arms[version]
            log.info("ensemble %s: no longer on trial here, unloaded", version)
        for version in wanted:
            if version in self.arms:
                continue
            failed = self.failed.get(version)
            if failed is not None and self.clock() - failed[0] < RETRY_AFTER_S:
                continue
            try:
                self.arms[version] = await asyncio.to_thread(self.loader, version)
            except Exception as exc:
                self.failed[version] = (self.clock(), f"{type(exc).__name__}: {exc}")
                log.error("ensemble %s: failed to load for its trial: %s", version, exc)
            else:
                self.failed.pop(version, None)
                log.info("ensemble %s: loaded for its trial", version)

    def status(self) -> dict[str, Any]:
        return {
            "loaded": sorted(self.arms),
            "failed": {v: why for v, (_, why) in self.failed.items()},
        }
