"""Arms: the models the router can send a request to, local (in-process) or remote (a service).

An arm answers `predict(codes)` with class probabilities and describes itself (version, schema,
readiness) through `info`. The router core sees only this interface, so unit tests drive it with
in-process models and the BentoML wiring plugs in remote services.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from models.schema import FeatureSchema

log = logging.getLogger(__name__)

NOT_READY_AFTER = 2
"""Consecutive failed health refreshes before a remote arm counts as not ready: one slow answer
under load must not take a healthy service out of rotation (failed calls trip the breaker anyway).
"""


@dataclass
class ArmInfo:
    """What the router knows about the model behind an arm."""

    name: str
    tag: str
    schema: FeatureSchema
    ready: bool = True
    degraded: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.tag.split(":", 1)[-1]

    @cached_property
    def schema_id(self) -> str:  # compared on every routed request: computed once per ArmInfo
        return hashlib.sha256(self.schema.model_dump_json().encode()).hexdigest()[:16]


def describe_model(
    name: str, tag: str, model: Any, metadata: dict[str, Any], ready: bool = True
) -> dict[str, Any]:
    """The JSON description a model service returns from its `describe` API."""
    out: dict[str, Any] = {
        "name": name,
        "tag": tag,
        "version": tag.split(":", 1)[-1],
        "ready": ready,
        "degraded": bool(getattr(model, "degraded", False)),
        "schema": model.schema.model_dump(exclude_none=True),
        "metrics": metadata.get("metrics", {}),
        "training": metadata.get("training", {}),
        "labels": metadata.get("labels", {}),
    }
    if name == "ensemble":
        out.update(
            combiner=model.combiner,
            members={n: metadata.get("members", {}).get(n, {}) for n in model.members},
            weights=model.weights,
            unavailable=model.unavailable,
            network=metadata.get("network", {}),
            cascade=describe_cascade(model, metadata),
            lineage=metadata.get("lineage"),
            feature_importance=metadata.get("feature_importance"),
        )
    return out


def describe_cascade(model: Any, metadata: dict[str, Any]) -> dict[str, Any] | None:
    """The ensemble's cascade as the router needs it (None for a model trained without one):
    whether it can serve here (`available`: its first stage loaded), its spec and the figures of
    its training run (models/cascade.py, training/cascade.py)."""
    trained = metadata.get("cascade")
    if not isinstance(trained, dict):
        return None
    return {
        "available": getattr(model, "cascade", None) is not None,
        "unavailable": getattr(model, "cascade_unavailable", None),
        "first_stage": trained.get("first_stage"),
        "score": trained.get("score"),
        "threshold": trained.get("threshold"),
        "goal": trained.get("goal"),
        "validation": trained.get("validation"),
        "test": trained.get("test"),
    }


def info_from_description(description: dict[str, Any]) -> ArmInfo:
    return ArmInfo(
        name=description["name"],
        tag=description["tag"],
        schema=FeatureSchema.model_validate(description["schema"]),
        ready=bool(description.get("ready", True)),
        degraded=bool(description.get("degraded", False)),
        details=description,
    )


class LocalArm:
    """A model loaded in this process: predictions run inline (classic takes microseconds)."""

    def __init__(self, name: str, model: Any, info: ArmInfo):
        self.name = name
        self.model = model
        self.info: ArmInfo | None = info

    async def predict(self, codes: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(codes)

    async def refresh(self) -> ArmInfo | None:
        return self.info


class ArmCallError(Exception):
    """A model service failed a call; `cause` is the fallback metric's label."""

    cause = "error"


class ArmOverloaded(ArmCallError):
    """The service refused the call for load (HTTP 503 or 429): it is up, but busy."""

    cause = "overloaded"


OVERLOAD_STATUSES = frozenset({429, 503})


def arm_error(exc: Exception) -> ArmCallError:
    """Classify a client exception by its HTTP status (BentoML's `error_code`), never its text."""
    status = getattr(exc, "error_code", None)
    kind = (
        ArmOverloaded if status is not None and int(status) in OVERLOAD_STATUSES else ArmCallError
    )
    return kind(f"{type(exc).__name__}: {exc}")


class RemoteArm:
    """A model service reached through BentoML's client (its own process or container).

    No retry here: the calls it is given carry the one retry policy (serving/transport/retry.py).
    """

    def __init__(
        self,
        name: str,
        predict: Callable[[np.ndarray], Awaitable[np.ndarray]],
        describe: Callable[[], Awaitable[dict[str, Any]]],
    ):
        self.name = name
        self._predict = predict
        self._describe = describe
        self.info: ArmInfo | None = None
        self.last_error: str | None = None
        self.failed_refreshes = 0

    async def predict(self, codes: np.ndarray) -> np.ndarray:
        try:
            result = await self._predict(codes)
        except (TimeoutError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise arm_error(exc) from exc
        return np.asarray(result, dtype=np.float64)

    async def refresh(self) -> ArmInfo | None:
        """Ask the service to describe itself; on failure keep the last info, marked not ready."""
        try:
            description = await self._describe()
            if "schema" not in description:  # the service runs but has no model to serve
                self.info = None
                self.last_error = str(description.get("error", "model not loaded"))
                return None
            self.info = info_from_description(description)
            self.last_error = None
            self.failed_refreshes = 0
        except Exception as exc:  # unreachable, starting, crashed: "not ready" once it persists
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            self.failed_refreshes += 1
            log.warning(
                "%s: health refresh failed (%d in a row): %s",
                self.name,
                self.failed_refreshes,
                self.last_error,
            )
            if self.info is not None and self.failed_refreshes >= NOT_READY_AFTER:
                self.info.ready = False
        return self.info


class CascadeArm:
    """The ensemble service's cascade (dynamic selection) as an arm of its own.

    It is the ensemble service answering through its `predict_cascade` API, so it shares the
    ensemble arm's health (no refresh of its own) and, in the router core, its breaker, deadline
    and fallback. Its `info` is the ensemble's under the name "cascade" (so its answers, cache
    entries and request ids carry that name), with the cascade's own CPU per row, and None while
    the served ensemble has no cascade that can run (trained without one, or its first stage not
    loaded). The service returns (n, k + 1) arrays, the last column the escalated flag; the arm
    answers the probabilities (the service counts escalations, `tabular_cascade_*`).
    """

    name = "cascade"

    def __init__(self, ensemble: RemoteArm, predict: Callable[[np.ndarray], Awaitable[Any]]):
        self.ensemble = ensemble
        self._predict = predict
        self._derived: tuple[ArmInfo, ArmInfo] | None = None  # (ensemble info, cascade info)

    @property
    def info(self) -> ArmInfo | None:
        base = self.ensemble.info
        cascade = base.details.get("cascade") if base is not None else None
        if base is None or not isinstance(cascade, dict) or not cascade.get("available"):
            return None
        if self._derived is None or self._derived[0] is not base:
            details = {**base.details, "cpu_seconds_per_row": cascade.get("cpu_seconds_per_row")}
            info = ArmInfo("cascade", base.tag, base.schema, base.ready, base.degraded, details)
            self._derived = (base, info)
        derived = self._derived[1]
        derived.ready = base.ready  # a refresh failure marks the ensemble's info not ready
        return derived

    async def predict(self, codes: np.ndarray) -> np.ndarray:
        try:
            result = await self._predict(codes)
        except (TimeoutError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise arm_error(exc) from exc
        return np.asarray(result, dtype=np.float64)[:, :-1]

    async def refresh(self) -> ArmInfo | None:
        return self.info
