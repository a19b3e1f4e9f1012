"""BentoML wiring only: the classic service, the ensemble service and the router in front.

`bentoml serve service:Router` starts all three as separate processes. Logic lives in models/
(prediction) and serving/ (routing policy, resilience, API); each API here is
validate -> call a pure function -> map errors to HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import bentoml
from bentoml.exceptions import InvalidArgument, ServiceUnavailable

with bentoml.importing():
    import aiohttp
    import numpy as np

    from models import store
    from serving.config.flags import FlagConfig, FlagConfigError, load_flag_config
    from serving.config.settings import get_settings
    from serving.delivery.drift import DriftMonitor
    from serving.delivery.live import LiveEvaluation
    from serving.delivery.state import StateStore
    from serving.host import HostedModel, InvalidCodes, ModelUnavailable, VersionRefused
    from serving.http.app import create_app
    from serving.observability import gcpause, metrics
    from serving.routing.arms import LocalArm, RemoteArm, describe_model, info_from_description
    from serving.routing.coalesce import Coalescer
    from serving.routing.core import RouterCore
    from serving.routing.preferences import PreferenceCache

log = logging.getLogger("bentoml.service")
settings = get_settings()
LOGGING = {"access": {"enabled": settings.access_log}}
TRACING = (
    {} if settings.tracing else {"excluded_urls": ".*"}
)  # every URL excluded: no span work per request


def declared_model(tag: str) -> bentoml.models.BentoModel | None:
    """The model reference if the store has it, else None.

    A declared model is bundled by `bentoml build`, but `bentoml serve` refuses to start when a
    declared model is missing; declaring only what exists lets a missing ensemble degrade the
    graph (everything on classic) and a missing classic model keep the router unready with a
    clear message, instead of a refusal to start or a silent serve.
    """
    ref = bentoml.models.BentoModel(tag)
    return ref if ref.stored is not None else None


class ModelHost:
    """The APIs both model services share, over a `serving.host.HostedModel` (the logic)."""

    model_tag: str
    model_ref: bentoml.models.BentoModel | None

    def _host(self, name: str, on_load=None) -> None:
        ref = type(self).model_ref
        stored = ref.stored if ref is not None else None  # never reaches out to a remote store
        self.hosted = HostedModel(
            name, self.model_tag, str(stored.tag) if stored is not None else None, on_load
        )

    @bentoml.api  # APIs on this base class are inherited by both model services
    def describe(self) -> dict:
        """Version, schema, metrics and health of the served model."""
        return self.hosted.description()

    @bentoml.api
    def load_version(self, tag: str) -> dict:
        """Serve another stored version (admin, through the router)."""
        try:
            return self.hosted.swap(tag)
        except VersionRefused as exc:
            raise InvalidArgument(str(exc)) from None

    def __is_ready__(self) -> bool:
        return self.hosted.ready

    def _checked(self, codes: np.ndarray) -> np.ndarray:
        try:
            return self.hosted.check(codes)
        except ModelUnavailable as exc:
            raise ServiceUnavailable(str(exc)) from None
        except InvalidCodes as exc:
            raise InvalidArgument(str(exc)) from None


@bentoml.service(
    name="classic",
    workers=1,
    resources={"cpu": "0.25", "memory": "512Mi"},
    traffic={"timeout": 10},
    logging=LOGGING,
    tracing=TRACING,
)
class Classic(ModelHost):
    """The lightweight classic model (multinomial logistic regression)."""

    model_tag = settings.classic_model
    model_ref = declared_model(settings.classic_model)

    def __init__(self) -> None:
        self._host("classic")

    @bentoml.api
    def predict(self, codes: np.ndarray) -> np.ndarray:
        """Class probabilities for schema-encoded rows (the router validates and encodes)."""
        return self.hosted.predict_proba(self._checked(codes))


@bentoml.service(
    name="ensemble",
    workers=1,
    threads=2,
    resources={"cpu": "0.5", "memory": "1Gi"},
    traffic={"timeout": 30},
    logging=LOGGING,
    tracing=TRACING,
)
class Ensemble(ModelHost):
    """The seven-member ensemble with adaptive batching; degraded (still serving) without TFLite."""

    # In a router-only image (SERVING_ENSEMBLE_URL set) this class is just the typed client of a
    # remote service: declaring no model keeps the ensemble model out of that Bento.
    model_tag = settings.ensemble_model
    model_ref = None if settings.ensemble_url else declared_model(settings.ensemble_model)

    def __init__(self) -> None:
        self.fault_delay_s = 0.0
        self.fault_error_rate = 0.0
        self._host("ensemble", on_load=self._instrument)

    @staticmethod
    def _instrument(model) -> None:
        """Per-member metrics and member threads, after every load or version swap."""
        model.enable_member_parallelism(2)  # members on both cores for batches of 32+ rows
        model.observer = lambda member, seconds: metrics.MEMBER_LATENCY.labels(
            member=member
        ).observe(seconds)
        for member, weight in model.weights.items():
            metrics.MEMBER_WEIGHT.labels(member=member).set(weight)
        metrics.ENSEMBLE_DEGRADED.set(1 if model.degraded else 0)

    @bentoml.api(
        batchable=settings.ensemble_max_batch_size > 1,  # 1 turns adaptive batching off
        max_batch_size=max(settings.ensemble_max_batch_size, 2),
        max_latency_ms=settings.ensemble_max_latency_ms,
    )
    def predict(self, codes: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch of schema-encoded rows; one call per member per batch."""
        codes = self._checked(codes)
        metrics.ENSEMBLE_BATCH_ROWS.observe(len(codes))
        if self.fault_delay_s:
            time.sleep(self.fault_delay_s)
        if self.fault_error_rate and random.random() < self.fault_error_rate:
            raise RuntimeError("injected fault")
        return self.hosted.predict_proba(codes)

    @bentoml.api
    def set_fault(self, delay_ms: float = 0.0, error_rate: float = 0.0) -> dict:
        """Test-only fault injection; refused unless SERVING_FAULTS_ENABLED is set."""
        if not settings.faults_enabled:
            raise InvalidArgument("fault injection is disabled")
        self.fault_delay_s = max(delay_ms, 0.0) / 1000.0
        self.fault_error_rate = min(max(error_rate, 0.0), 1.0)
        return {"delay_ms": delay_ms, "error_rate": self.fault_error_rate}


def _fix_media_types(*services) -> None:
    """BentoML 1.4 derives each response's media type from the output's JSON schema, rebuilt for
    every response (a tenth of the ensemble worker's CPU, profiled with py-spy). It never changes:
    work it out once."""
    for service in services:
        for method in service.apis.values():
            if method.output_spec.media_type is None:
                method.output_spec.media_type = method.output_spec.mime_type()


_fix_media_types(Classic, Ensemble)
api = create_app(settings)


def _async_method(dependency, name: str):
    """An awaitable call to a dependency's API, whether it runs in its own process or in this one."""
    if hasattr(dependency, "to_async"):  # a client; its endpoints are known only once connected
        return lambda *args, **kwargs: dependency.to_async.call(name, *args, **kwargs)
    method = getattr(dependency, name)
    return lambda *args, **kwargs: asyncio.to_thread(method, *args, **kwargs)


@bentoml.service(
    name="router",
    workers=1,
    traffic={"timeout": 30},
    logging=LOGGING,
    tracing=TRACING,
    runner_probe={"enabled": False},
)  # readiness = classic can answer; see __is_ready__
@bentoml.asgi_app(api, path="/")
class Router:
    """Entry service: every public endpoint; routes between classic and ensemble by the flag config."""

    classic_service = bentoml.depends(Classic, url=settings.classic_url)
    ensemble_service = bentoml.depends(Ensemble, url=settings.ensemble_url)
    classic_model = declared_model(settings.classic_model)

    def __init__(self) -> None:
        try:
            flags = load_flag_config(settings.flags_path)
        except FlagConfigError as exc:
            if settings.flags_path.exists():
                raise  # a broken file at start-up is an operator error: refuse to start
            log.warning("no flag file at %s; using defaults (%s)", settings.flags_path, exc)
            flags = FlagConfig()
        predict_classic = _async_method(self.classic_service, "predict")
        describe_classic = _async_method(self.classic_service, "describe")
        predict_ensemble = _async_method(self.ensemble_service, "predict")
        retry_on = (aiohttp.ClientConnectionError,)
        classic_direct = RemoteArm(
            "classic", lambda codes: predict_classic(codes=codes), describe_classic, retry_on
        )
        ensemble_call = lambda codes: predict_ensemble(codes=codes)  # noqa: E731
        if (
            settings.ensemble_coalesce_max_rows > 0
        ):  # concurrent requests share calls (serving/routing/coalesce.py)
            ensemble_call = Coalescer(
                ensemble_call,
                settings.ensemble_coalesce_max_rows,
                settings.ensemble_coalesce_in_flight,
                observe=metrics.ENSEMBLE_CALL_ROWS.observe,
            )
        ensemble = RemoteArm(
            "ensemble", ensemble_call, _async_method(self.ensemble_service, "describe"), retry_on
        )
        classic = classic_direct
        live = None
        if self.classic_model_stored() is not None:
            model, stored = store.load(str(self.classic_model_stored().tag))
            if settings.classic_local:
                description = describe_model(
                    "classic", str(stored.tag), model, stored.info.metadata
                )
                classic = LocalArm("classic", model, info_from_description(description))
            reference = stored.info.metadata.get("reference", {})
            drift = (
                DriftMonitor(model.schema.features, reference, flags.drift) if reference else None
            )
            live = LiveEvaluation(
                StateStore(settings.state_url), flags, drift, model.schema.classes
            )
        preferences = PreferenceCache(
            live.store if live is not None else StateStore(settings.state_url),
            ttl_s=settings.preference_ttl_s,
        )
        set_fault = _async_method(self.ensemble_service, "set_fault")
        loaders = {
            "classic": _async_method(self.classic_service, "load_version"),
            "ensemble": _async_method(self.ensemble_service, "load_version"),
        }
        self.core = RouterCore(
            classic,
            ensemble,
            flags,
            classic_direct=classic_direct,
            flags_path=settings.flags_path,
            ensemble_min_members=settings.ensemble_min_members,
            fault_setter=lambda **kw: set_fault(**kw),
            live=live,
            preferences=preferences,
            model_loaders={
                name: (lambda tag, load=load: load(tag=tag)) for name, load in loaders.items()
            },
        )
        api.state.core = self.core
        self._tasks: list[asyncio.Task] = []
        self._gc_pauses = gcpause.GcPauses(metrics.GC_PAUSE)

    def classic_model_stored(self):
        ref = type(self).classic_model
        return ref.stored if ref is not None else None

    @bentoml.on_startup
    async def start_background_work(self) -> None:
        self._gc_pauses.install()
        if settings.gc_freeze:
            log.info(
                "gc: %d start-up objects frozen out of collections",
                gcpause.freeze_startup_objects(),
            )
        await self.core.refresh_health()
        self._tasks = [
            asyncio.create_task(self._every(settings.health_poll_s, self.core.refresh_health)),
            asyncio.create_task(self._every(settings.flags_poll_s, self._reload_flags)),
            asyncio.create_task(self._every(1.0, self._rollout_tick)),
        ]
        if settings.preference_ttl_s > 0:  # routing by preference without a store read per request
            await asyncio.to_thread(self.core.preferences.sync)
            self._tasks.append(
                asyncio.create_task(
                    self._every(
                        settings.preference_ttl_s,
                        lambda: asyncio.to_thread(self.core.preferences.sync),
                    )
                )
            )

    async def _rollout_tick(self) -> None:
        self._gc_pauses.flush()  # observed here, never from the collector's callback (serving/observability/gcpause.py)
        if self.core.live is not None:
            await asyncio.to_thread(self.core.live.tick)  # store I/O off the event loop
            self.core.sync_rollout()

    async def _reload_flags(self) -> None:
        self.core.reload_flags_if_changed()

    @staticmethod
    async def _every(seconds: float, job) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception:  # a background hiccup must not kill the loop
                log.exception("background job failed")

    @bentoml.on_shutdown
    async def stop_background_work(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._gc_pauses.uninstall()
        await self.core.shadow.drain()

    async def __is_ready__(self) -> bool:
        if self.core.classic.info is None or not self.core.ready:
            await self.core.refresh_health()
        return self.core.ready
