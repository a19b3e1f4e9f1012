"""BentoML wiring only: the classic service, the ensemble service and the router in front.

`bentoml serve service:Router` starts all three as separate processes. Logic lives in models/
(prediction) and serving/ (serving/wiring.py builds the router core and its control plane;
serving/http the public API);
each API here is validate -> call one function -> map errors to HTTP.
"""

from __future__ import annotations

import asyncio
import logging

import bentoml
from bentoml.exceptions import InvalidArgument, ServiceUnavailable

with bentoml.importing():
    import numpy as np

    from serving.config.settings import get_settings
    from serving.host import (
        FaultInjector,
        FaultsDisabled,
        HostedModel,
        InvalidCodes,
        ModelUnavailable,
        VersionRefused,
        follow_pins,
        instrument_ensemble,
    )
    from serving.http.app import create_app
    from serving.observability import metrics
    from serving.transport.adapters import (
        declared_model,
        fix_media_types,
        service_calls,
        stored_tag,
    )
    from serving.transport.rows import MOUNT as ROWS_MOUNT
    from serving.transport.rows import (
        RowsEndpoint,
        RowsPredictor,
        RowsSocketServer,
        own_socket_path,
    )
    from serving.wiring import (
        CASCADE_SOCKET_SUFFIX,
        BackgroundWork,
        Services,
        build_router,
        cascade_call,
    )

log = logging.getLogger("bentoml.service")
settings = get_settings()
LOGGING = {"access": {"enabled": settings.access_log}}
# Tracing off: every URL excluded, so no span work per request (SERVING_TRACING turns it on).
TRACING = {} if settings.tracing else {"excluded_urls": ".*"}


class ModelHost:
    """The APIs both model services share, over a `serving.host.HostedModel` (the logic)."""

    model_tag: str
    model_ref: bentoml.models.BentoModel | None

    def _host(self, name: str, on_load=None) -> None:
        self.hosted = HostedModel(name, self.model_tag, stored_tag(type(self).model_ref), on_load)

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

    @bentoml.on_startup
    async def follow_version_pins(self) -> None:
        """Serve the version pinned for every replica (serving/store/pins.py)."""
        period = settings.flags_poll_s
        self.pin_task = asyncio.create_task(follow_pins(self.hosted, settings.state_url, period))

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


# The router's lean transport of encoded rows (serving/transport/rows.py): HTTP and a socket.
rows = RowsPredictor(settings.ensemble_max_batch_size, observe=metrics.ENSEMBLE_BATCH_ROWS.observe)
cascade_rows = RowsPredictor(settings.ensemble_max_batch_size)  # the cascade's, on its own socket


@bentoml.service(
    name="ensemble",
    workers=1,
    threads=2,
    resources={"cpu": "0.5", "memory": "1Gi"},
    traffic={"timeout": 30},
    logging=LOGGING,
    tracing=TRACING,
)
@bentoml.asgi_app(RowsEndpoint(rows), path=ROWS_MOUNT)
class Ensemble(ModelHost):
    """The seven-member ensemble with adaptive batching; degraded (still serving) without TFLite."""

    # In a router-only image (SERVING_ENSEMBLE_URL set) this class is just the typed client of a
    # remote service: declaring no model keeps the ensemble model out of that Bento.
    model_tag = settings.ensemble_model
    model_ref = None if settings.arm_url("ensemble") else declared_model(settings.ensemble_model)

    def __init__(self) -> None:
        self.faults = FaultInjector(settings.faults_enabled)
        self._host("ensemble", on_load=instrument_ensemble)
        rows.predict = self.predict_rows
        rows.inline_ok = lambda: not self.faults.delay_s  # a test's delay must not block the loop
        self.rows_socket: RowsSocketServer | None = None
        cascade_rows.predict = self.predict_cascade_rows
        cascade_rows.inline_ok = rows.inline_ok
        self.cascade_socket: RowsSocketServer | None = None

    @bentoml.on_startup
    async def serve_cascade_socket(self) -> None:
        """The cascade's rows socket (its path: the rows socket's + CASCADE_SOCKET_SUFFIX)."""
        if (path := own_socket_path("ensemble")) is not None:
            self.cascade_socket = RowsSocketServer(cascade_rows, path + CASCADE_SOCKET_SUFFIX)
            await self.cascade_socket.start()

    @bentoml.on_shutdown
    async def stop_cascade_socket(self) -> None:
        if self.cascade_socket is not None:
            await self.cascade_socket.stop()

    @bentoml.on_startup
    async def serve_rows_socket(self) -> None:
        """The rows socket beside BentoML's own (serving/transport/rows.py)."""
        if (path := own_socket_path("ensemble")) is not None:
            self.rows_socket = RowsSocketServer(rows, path)
            await self.rows_socket.start()

    @bentoml.on_shutdown
    async def stop_rows_socket(self) -> None:
        if self.rows_socket is not None:
            await self.rows_socket.stop()

    @bentoml.api(
        batchable=settings.ensemble_max_batch_size > 1,  # 1 turns adaptive batching off
        max_batch_size=max(settings.ensemble_max_batch_size, 2),
        max_latency_ms=settings.ensemble_max_latency_ms,
    )
    def predict(self, codes: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch of schema-encoded rows; one call per member per batch."""
        metrics.ENSEMBLE_BATCH_ROWS.observe(len(codes))
        return self.predict_rows(codes)

    def predict_rows(self, codes: np.ndarray) -> np.ndarray:
        """What both transports run (the API above, the rows endpoint): checks, faults, predict."""
        codes = self._checked(codes)
        self.faults.apply()
        return self.hosted.predict_proba(codes)

    @bentoml.api(
        batchable=settings.ensemble_max_batch_size > 1,
        max_batch_size=max(settings.ensemble_max_batch_size, 2),
        max_latency_ms=settings.ensemble_max_latency_ms,
    )
    def predict_cascade(self, codes: np.ndarray) -> np.ndarray:
        """The cascade (dynamic selection, models/cascade.py) for a batch of encoded rows: an
        (n, k + 1) array, the class probabilities then 1.0 where the row escalated from the first
        stage to the full ensemble, else 0.0 (one array, so adaptive batching can split it)."""
        return self.predict_cascade_rows(codes)

    def predict_cascade_rows(self, codes: np.ndarray) -> np.ndarray:
        """What both of the cascade's transports run (the API above, its rows socket)."""
        codes = self._checked(codes)
        self.faults.apply()
        return self.hosted.predict_cascade(codes)

    @bentoml.api
    def set_fault(self, delay_ms: float = 0.0, error_rate: float = 0.0) -> dict:
        """Test-only fault injection; refused unless SERVING_FAULTS_ENABLED is set."""
        try:
            return self.faults.configure(delay_ms, error_rate)
        except FaultsDisabled as exc:
            raise InvalidArgument(str(exc)) from None


fix_media_types(Classic, Ensemble)
api = create_app(settings)


@bentoml.service(
    name="router",
    workers=settings.router_workers,  # each worker is a replica: state is shared, not per process
    traffic={"timeout": 30},
    logging=LOGGING,
    tracing=TRACING,
    runner_probe={"enabled": False},
)  # readiness = classic can answer; see __is_ready__
@bentoml.asgi_app(api, path="/")
class Router:
    """Entry service: every public endpoint; routes between classic and ensemble by the flags."""

    classic_service = bentoml.depends(Classic, url=settings.arm_url("classic"))
    ensemble_service = bentoml.depends(Ensemble, url=settings.arm_url("ensemble"))
    classic_model = declared_model(settings.classic_model)

    def __init__(self) -> None:
        services = Services(
            classic=service_calls(self.classic_service),
            ensemble=service_calls(
                self.ensemble_service, with_fault=True, transport=settings.ensemble_transport
            ),
            classic_tag=stored_tag(type(self).classic_model),
            cascade=cascade_call(self.ensemble_service, settings.ensemble_transport),
        )
        router = build_router(settings, services)
        self.core = router.core
        api.state.core, api.state.control = router.core, router.control  # what the routes use
        self.background = BackgroundWork(router, settings)
        self.unready_reason = settings.unready_reason()  # a router image without arm URLs
        if self.unready_reason:
            log.error("router not ready: %s", self.unready_reason)

    @bentoml.on_startup
    async def start_background_work(self) -> None:
        await self.background.start()

    @bentoml.on_shutdown
    async def stop_background_work(self) -> None:
        await self.background.stop()

    async def __is_ready__(self) -> bool:
        if self.unready_reason:
            return False
        if self.core.classic.info is None or not self.core.ready:
            await self.core.refresh_health()
        return self.core.ready
