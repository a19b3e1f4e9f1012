"""The router core: validate -> decide -> (cache) -> call the arm -> fall back -> shadow -> answer.

Free of BentoML and HTTP: arms are objects with `predict`/`refresh` (serving/routing/arms.py), so
the whole flow runs in unit tests with in-process models. The ensemble is called under a deadline
and a circuit breaker; whatever happens to it, a routed request is answered by classic.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from models.schema import SchemaValidationError
from serving.config.flags import (
    FlagConfig,
    FlagConfigError,
    dump_flag_config,
    parse_flag_config,
)
from serving.errors import ArmUnavailable, InvalidInput
from serving.observability import metrics
from serving.results import RoutedPrediction
from serving.routing.answer import Answer, call_arm, render
from serving.routing.arms import (
    ArmCallError,
    ArmInfo,
    LocalArm,
)
from serving.routing.breaker import BreakerState, CircuitBreaker
from serving.routing.cache import PredictionCache
from serving.routing.challenger_shadow import ChallengerShadow
from serving.routing.flag_source import FlagSource
from serving.routing.policy import (
    SERVICE_ARMS,
    Arm,
    ChallengerSplit,
    Decision,
    Health,
    RequestContext,
    decide,
    explain,
)
from serving.routing.shadow import ShadowMirror
from serving.routing.versions import VersionArms

if TYPE_CHECKING:
    from serving.delivery.challenger import ChallengerView
    from serving.delivery.live import LiveEvaluation

log = logging.getLogger(__name__)

UserChoice = Literal["classic", "ensemble", "auto"]
"""A user's stored model preference (RequestContext.user_preference)."""

_BREAKER_LEVEL = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


@dataclass
class Arms:
    """The models a router core answers from: classic (in this process or its service), its
    service for direct calls, the ensemble service, its cascade, and ensemble versions on trial."""

    classic: Any
    ensemble: Any
    classic_direct: Any = None
    cascade: Any = None
    """The ensemble service's cascade (serving/routing/arms.py CascadeArm), or None."""
    versions: VersionArms | None = None


class RouterCore:
    """Routes classify requests between a classic arm and an ensemble arm."""

    def __init__(
        self,
        arms: Arms,
        flags: FlagConfig,
        *,
        flag_source: FlagSource | None = None,
        flags_path: Path | None = None,
        ensemble_min_members: int = 1,
        live: LiveEvaluation | None = None,
        preferences=None,
        request_ids=None,
    ):
        self.classic = arms.classic
        self.ensemble = arms.ensemble
        self.cascade = arms.cascade
        self.classic_direct = arms.classic_direct or arms.classic
        self.versions = arms.versions or VersionArms()
        """Ensemble versions on trial, loaded here next to the champion (routing/versions.py)."""
        self.flag_source = flag_source or FlagSource(None, flags_path)
        """Where flags come from: the shared store document, seeded from and watching the file."""
        self.ensemble_min_members = ensemble_min_members
        self.live = live
        """Where answers are recorded and whose rollout stage governs the flags (the control
        plane, serving/control.py, drives it)."""
        self.preferences = preferences
        """PreferenceCache of users' stored choices (serving/routing/preferences.py), or None."""
        self.request_ids = request_ids
        """RequestIds signer (serving/delivery/request_ids.py), or None for random ids."""
        self.challenger: ChallengerView | None = None
        """The trial as the shared record says (serving/delivery/challenger.py ChallengerView),
        kept current by the control plane's challenger loop."""
        self.challenger_shadow = ChallengerShadow(self.versions)
        """The challenger's shadow comparisons on this replica (routing/challenger_shadow.py)."""
        flags = self.flag_source.initial(flags)
        if live is not None:
            live.configure(flags)
            flags = live.governed_flags(flags) or flags
        self._flags = flags
        self.breaker = CircuitBreaker(flags.ensemble.breaker, on_change=self._on_breaker_change)
        metrics.BREAKER_STATE.set(_BREAKER_LEVEL[self.breaker.state])
        self.cache = PredictionCache.from_config(flags.cache)
        self.shadow = ShadowMirror(flags.ensemble.shadow)
        self._export_flag_gauges()

    # ------------------------------------------------------------------ flags
    @property
    def flags(self) -> FlagConfig:
        return self._flags

    def apply_flags(self, cfg: FlagConfig, source: str) -> None:
        """Swap in a validated config; in-flight requests finish under the one they started with.

        With automatic rollout on, the controller's percentage and kill switch win over the file's.
        """
        if self.live is not None:
            self.live.configure(cfg)
            cfg = self.live.governed_flags(cfg) or cfg
        self._flags = cfg
        self.breaker.reconfigure(cfg.ensemble.breaker)
        self.cache.reconfigure(cfg.cache)
        self.shadow.config = cfg.ensemble.shadow
        self._export_flag_gauges()
        metrics.FLAG_RELOADS.labels(source=source, result="applied").inc()
        log.info(
            "flags applied from %s: rollout %.1f%%, enabled=%s",
            source,
            cfg.ensemble.rollout_percentage,
            cfg.ensemble.enabled,
        )

    def update_flags(
        self, data: Mapping[str, Any] | None, expected_version: int | None = None
    ) -> FlagConfig:
        """Validate a new config (admin API), store it for every replica, apply it here.

        Raises FlagConfigError and keeps the config in force when `data` is invalid, and
        StaleFlags when `expected_version` (the If-Match of the request) is not the stored one.
        """
        try:
            cfg = parse_flag_config(data)
        except FlagConfigError:
            metrics.FLAG_RELOADS.labels(source="api", result="rejected").inc()
            raise
        self.flag_source.write(cfg, expected_version)
        self.apply_flags(cfg, "api")
        return cfg

    @property
    def flags_version(self) -> int:
        """Version of the stored flag document in force (0 without a store)."""
        return self.flag_source.version

    def reload_flags_if_changed(self) -> bool:
        """Apply a newer stored document or an edited flag file; a bad file is logged, ignored."""
        try:
            found = self.flag_source.poll()
        except FlagConfigError as exc:
            metrics.FLAG_RELOADS.labels(source="file", result="rejected").inc()
            log.error("flag file rejected, keeping the config in force: %s", exc)
            return False
        if found is None:
            return False
        self.apply_flags(*found)
        return True

    def _export_flag_gauges(self) -> None:
        metrics.ROLLOUT_PERCENTAGE.set(self._flags.ensemble.rollout_percentage / 100)  # 0..1
        metrics.ENSEMBLE_ENABLED.set(1 if self._flags.ensemble.enabled else 0)

    def _on_breaker_change(self, old: BreakerState, new: BreakerState) -> None:
        metrics.BREAKER_STATE.set(_BREAKER_LEVEL[new])
        metrics.BREAKER_TRANSITIONS.labels(to=new.value).inc()
        log.warning("ensemble circuit breaker %s -> %s", old.value, new.value)

    # ------------------------------------------------------------------ health
    @property
    def ready(self) -> bool:
        """Ready when classic can answer: the ensemble being down degrades, it does not un-ready."""
        return self.classic.info is not None and self.classic.info.ready

    def ensemble_ready(self) -> bool:
        info = self.ensemble.info
        if info is None or not info.ready:
            return False
        loaded = (
            len(info.details.get("members", {}))
            if "members" in info.details
            else self.ensemble_min_members
        )
        return loaded >= self.ensemble_min_members

    def health(self) -> Health:
        trial = self.challenger
        return Health(
            ensemble_ready=self.ensemble_ready(),
            breaker_open=self.breaker.state == BreakerState.OPEN,
            cascade_available=self.cascade is not None and self.cascade.info is not None,
            versions=self.versions.loaded,
            challenger=ChallengerSplit(trial.version, trial.weight, trial.salt)
            if trial is not None and trial.stage == "ab"
            else None,
        )

    async def refresh_health(self) -> None:
        await asyncio.gather(
            self.ensemble.refresh(), self.classic.refresh(), self.classic_direct.refresh()
        )
        metrics.ENSEMBLE_READY.set(1 if self.ensemble_ready() else 0)

    # ------------------------------------------------------------------ requests
    def encode(self, info: ArmInfo, rows: Sequence[Mapping[str, Any]], prefix: str) -> np.ndarray:
        try:
            return info.schema.encode_rows(rows, prefix=prefix)
        except SchemaValidationError as exc:
            raise InvalidInput(
                f"{len(exc.errors)} invalid field(s): {exc}",
                fields=[e.model_dump() for e in exc.errors],
            ) from None

    def context(
        self,
        rows: Sequence[Mapping[str, Any]],
        user_id: str | None,
        header: str | None,
        attributes: Mapping[str, str] | None = None,
        user_preference: str | None = None,
    ) -> RequestContext:
        """The policy's view of a request; anonymous requests stick by a hash of their features."""
        if user_id:
            key = user_id  # the policy buckets by user id; no need to hash the features
        else:
            key = hashlib.sha256(
                json.dumps(rows[0], sort_keys=True, default=str).encode()
            ).hexdigest()[:16]
        return RequestContext(
            user_id=user_id,
            request_key=key,
            header_preference=cast(
                "Arm | None", header if self._flags.ensemble.header_override else None
            ),
            user_preference=cast("UserChoice | None", user_preference),
            attributes=dict(attributes or {}),
        )

    async def classify(
        self,
        rows: Sequence[Mapping[str, Any]],
        *,
        user_id: str | None = None,
        header: str | None = None,
        attributes: Mapping[str, str] | None = None,
        user_preference: str | None = None,
        endpoint: str = "classify",
        prefix: str = "features",
    ) -> list[RoutedPrediction]:
        """Route one request (one or more rows, one user) and answer every row."""
        classic_info = self._require(self.classic)
        codes = self.encode(classic_info, rows, prefix)  # bad input is a 422 whatever the arm
        if user_preference is None and user_id and self.preferences is not None:
            user_preference = await self.preferences.aget(
                user_id
            )  # memory; a store read once per TTL
        ctx = self.context(rows, user_id, header, attributes, user_preference)
        decision = decide(ctx, self._flags, self.health())
        metrics.DECISIONS.labels(reason=decision.reason.value).inc()

        answer: Answer | None = None
        ensemble_error = False
        served_by_ensemble = decision.arm in SERVICE_ARMS
        if served_by_ensemble and decision.version is not None:
            answer = await self._try_version(decision, rows, codes, classic_info)
        if served_by_ensemble and answer is None:
            arm = self.cascade if decision.arm == "cascade" else self.ensemble
            answer, ensemble_error = await self._try_ensemble(rows, codes, classic_info, arm)
            if answer is not None and answer.arm == "ensemble":
                self.challenger_shadow.maybe_compare(
                    self.challenger, codes, answer.info, answer.probabilities
                )
        elif decision.fallback:
            metrics.FALLBACKS.labels(cause=decision.reason.value).inc()
        shadow = False
        if answer is None:
            answer = await call_arm(self.classic, classic_info, codes, self.cache)
            answer.fallback = decision.fallback or served_by_ensemble
            shadow = decision.arm == "classic" and not decision.fallback
        out = self._render(answer, decision.reason.value, endpoint)
        if self.live is not None:
            self.live.observe_inputs(codes)
            latency_ms = None if answer.latency_s is None else answer.latency_s * 1000.0
            meant = decision.arm if served_by_ensemble else decision.meant or "ensemble"
            self.live.record(
                out, latency_ms, answer.cpu_seconds, ensemble_error=ensemble_error, meant=meant
            )
            if self._flags.retraining.enabled:  # labelled later, they become training data
                self._keep_served(rows, out)
        if shadow:
            self._mirror(codes, answer, [p.request_id for p in out])
        return out

    async def classify_direct(
        self, arm_name: str, rows: Sequence[Mapping[str, Any]], prefix: str = "features"
    ) -> list[RoutedPrediction]:
        """Unrouted call to one arm; no fallback (the caller asked for this model).

        Classic answers from the router's own copy when it holds one (SERVING_CLASSIC_LOCAL: the
        same version as the classic service, kept in step by swaps and pins), as routed classic
        does: the hop to the classic service cost 4x the CPU per request (README "Performance").
        """
        arm = self.ensemble if arm_name == "ensemble" else self.classic
        info = self._require(arm)
        codes = self.encode(info, rows, prefix)
        timeout_s = None if isinstance(arm, LocalArm) else 30.0  # in process: nothing to wait on
        try:
            answer = await call_arm(arm, info, codes, self.cache, timeout_s, use_cache=False)
        except TimeoutError:
            raise ArmUnavailable(f"{arm_name} did not answer in time") from None
        except Exception as exc:
            log.warning("direct %s call failed: %s: %s", arm_name, type(exc).__name__, exc)
            raise ArmUnavailable(f"{arm_name} failed: {type(exc).__name__}") from None
        return self._render(answer, "direct", f"direct_{arm_name}")

    def explain(
        self,
        user_id: str | None,
        header: str | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        preference = (
            self.preferences.get(user_id) if self.preferences is not None and user_id else None
        )
        ctx = RequestContext(
            user_id=user_id,
            request_key=user_id or "anonymous",
            header_preference=cast("Arm | None", header),
            user_preference=cast("UserChoice | None", preference),
            attributes=dict(attributes or {}),
        )
        return explain(ctx, self._flags, self.health())

    # ------------------------------------------------------------------ internals
    def _require(self, arm) -> ArmInfo:
        info = arm.info
        if info is None or not info.ready:
            raise ArmUnavailable(f"the {arm.name} model is not ready")
        return info

    async def _try_ensemble(
        self, rows, codes: np.ndarray, classic_info: ArmInfo, arm=None
    ) -> tuple[Answer | None, bool]:
        """(the ensemble service's answer, False), or (None, whether it failed) when classic must
        answer. `arm`: the ensemble (default) or the cascade; one breaker and deadline for both,
        the service they call."""
        arm = arm or self.ensemble
        info = arm.info
        if info is None:
            return self._fell_back("unhealthy")
        if info.schema_id != classic_info.schema_id:
            try:
                codes = info.schema.encode_rows(rows)
            except SchemaValidationError:
                return self._fell_back("schema_mismatch")
        if not self.breaker.allow():
            return self._fell_back("breaker_open")
        deadline = self._flags.ensemble.deadline_ms / 1000.0
        try:
            answer = await call_arm(arm, info, codes, self.cache, deadline)
        except TimeoutError:
            self.breaker.record_failure()
            return self._fell_back("timeout", failed=True)
        except Exception as exc:
            self.breaker.record_failure()
            cause = exc.cause if isinstance(exc, ArmCallError) else "error"
            log.warning("%s call failed (%s): %s", arm.name, cause, exc)
            return self._fell_back(cause, failed=True)
        self.breaker.record_success()
        return answer, False

    async def _try_version(
        self, decision: Decision, rows, codes: np.ndarray, classic_info: ArmInfo
    ) -> Answer | None:
        """A version on trial answers (in this process); None when it cannot, so the champion
        answers instead (and the answer's version says so)."""
        arm = self.versions.get(decision.version)
        if arm is None or arm.info is None:
            return None
        info = arm.info
        if info.schema_id != classic_info.schema_id:
            try:
                codes = info.schema.encode_rows(rows)
            except SchemaValidationError:
                return None
        try:
            return await call_arm(
                arm, info, codes, self.cache, self._flags.ensemble.deadline_ms / 1000.0
            )
        except Exception as exc:
            log.warning("ensemble %s (on trial) failed: %s: %s", decision.version, type(exc), exc)
            metrics.FALLBACKS.labels(cause="trial_error").inc()
            return None

    def _keep_served(self, rows: Sequence[Mapping[str, Any]], out: list[RoutedPrediction]):
        """Queue the features of answered rows (never the user id) for retraining; the outcome
        buffer writes them with the next flush, bounded by `retraining.retention_s` and
        `max_stored_requests` (pruned by the leader)."""
        if self.live is None:
            return
        now, outcomes = time.time(), self.live.outcomes
        for row, prediction in zip(rows, out, strict=True):
            outcomes.add_served(
                prediction.request_id,
                row,
                prediction.model,
                prediction.model_version,
                prediction.label,
                now,
            )

    def _fell_back(self, cause: str, failed: bool = False) -> tuple[None, bool]:
        metrics.FALLBACKS.labels(cause=cause).inc()
        return None, failed

    def _mirror(self, codes: np.ndarray, answer: Answer, request_ids: list[str]) -> None:
        info = self.ensemble.info
        if info is None or not self.ensemble_ready() or self.breaker.state == BreakerState.OPEN:
            return
        if info.schema_id != answer.info.schema_id:
            return
        on_result = None
        if self.live is not None:
            on_result = lambda probs, seconds: self.live.record_shadow(request_ids, probs, seconds)  # noqa: E731
        self.shadow.maybe_mirror(
            self.ensemble.predict,
            codes,
            answer.probabilities,
            answer.info.schema.classes,
            on_result,
        )

    def _render(self, answer: Answer, reason: str, endpoint: str) -> list[RoutedPrediction]:
        return render(answer, reason, endpoint, self._request_id)

    def _request_id(
        self, arm: str, version: str, index: int, probs: np.ndarray, randomised: bool
    ) -> str:
        """A signed id any replica can join feedback to; a random one without a signer."""
        if self.request_ids is None:
            return uuid.uuid4().hex
        return self.request_ids.issue(arm, version, index, probs, randomised)

    def flags_document(self) -> dict[str, Any]:
        return dump_flag_config(self._flags)
