"""The one composition root: settings + the model services' calls -> a router core (answers) and
its control plane (acts: rollout, challenger, retraining, pins), and their background loops.

service.py hands over what only BentoML can give (awaitable calls to the classic and ensemble
services, and the classic model's store tag); everything else is built here, so the wiring is
readable in one place and testable without BentoML. Background work (health polls, flag reloads,
the rollout tick, preference syncs) lives here too: the service only starts and stops it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from models import store
from serving.config.flags import FlagConfig, FlagConfigError, load_flag_config
from serving.config.settings import ServingSettings
from serving.control import ControlPlane
from serving.delivery.challenger import STAGES, ChallengerView
from serving.delivery.live import LiveEvaluation
from serving.delivery.notify import Notifier
from serving.delivery.request_ids import RequestIds
from serving.delivery.retraining import RetrainingJob
from serving.evidence.drift import DriftMonitor
from serving.observability import gcpause, metrics, model_metrics
from serving.routing.arms import (
    CascadeArm,
    LocalArm,
    RemoteArm,
    describe_model,
    info_from_description,
)
from serving.routing.coalesce import Coalescer
from serving.routing.core import Arms, RouterCore
from serving.routing.flag_source import FlagSource
from serving.routing.preferences import PreferenceCache
from serving.store import StateStore
from serving.store.lease import CONTROLLER_LEASE, Lease, replica_id
from serving.store.pins import VersionPins
from serving.transport.retry import call_remote

log = logging.getLogger(__name__)

Call = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class ServiceCalls:
    """Awaitable calls to one model service's APIs (in this process or over HTTP)."""

    predict: Callable[[np.ndarray], Awaitable[Any]]
    describe: Callable[[], Awaitable[dict[str, Any]]]
    load_version: Callable[[str], Awaitable[dict[str, Any]]]
    set_fault: Call | None = None


def api_call(dependency: Any, name: str) -> Callable[[np.ndarray], Awaitable[Any]]:
    """An awaitable `codes -> answer` call of one API of a model service (e.g. the ensemble's
    `predict_cascade`): through its client when it runs in another process, in a thread here."""
    if hasattr(dependency, "to_async"):  # a client; its endpoints are known once connected
        return lambda codes: call_remote(dependency.to_async, name, codes=codes)
    method = getattr(dependency, name)
    return lambda codes: asyncio.to_thread(method, codes=codes)


CASCADE_SOCKET_SUFFIX = ".cascade"
"""The cascade's rows socket: the ensemble's rows socket path (serving/transport/rows.py) + this."""


def cascade_call(dependency: Any, transport: str) -> Callable[[np.ndarray], Awaitable[Any]]:
    """The ensemble service's cascade: over its own rows socket when the service runs in the same
    `bentoml serve` and `transport` (SERVING_ENSEMBLE_TRANSPORT) is "socket" (raw float64 rows,
    as the ensemble's predict), else (and whenever the socket is not there) its `predict_cascade`
    API. Both answer the (n, k + 1) matrix: probabilities, then the escalated flag."""
    from serving.transport.rows import SocketClient, Transports, socket_path

    api = api_call(dependency, "predict_cascade")
    url = getattr(getattr(dependency, "to_async", None), "url", None)
    if transport != "socket" or (path := socket_path(url)) is None:
        return api
    return Transports([("socket", SocketClient(path + CASCADE_SOCKET_SUFFIX)), ("api", api)])


@dataclass(frozen=True)
class Services:
    """What the BentoML layer provides: both model services (their calls already carry the one
    retry policy, serving/transport/retry.py)."""

    classic: ServiceCalls
    ensemble: ServiceCalls
    classic_tag: str | None = None
    """The stored classic model's tag, when this process has a model store holding it."""
    cascade: Callable[[np.ndarray], Awaitable[Any]] | None = None
    """The ensemble service's `predict_cascade` API (dynamic selection), None: no cascade arm."""


def load_flags(settings: ServingSettings) -> FlagConfig:
    """The flag file, validated; defaults when there is none. A broken file refuses to start."""
    try:
        return load_flag_config(settings.flags_path)
    except FlagConfigError as exc:
        if settings.flags_path.exists():
            raise  # a broken file at start-up is an operator error: refuse to start
        log.warning("no flag file at %s; using defaults (%s)", settings.flags_path, exc)
        return FlagConfig()


@dataclass(frozen=True)
class Router:
    """What the composition root builds: the core that answers and the plane that controls it."""

    core: RouterCore
    control: ControlPlane


def build_router(settings: ServingSettings, services: Services) -> Router:
    """Arms (remote, coalesced, or the classic model in this process), live evaluation with drift,
    preferences, the router core over them and the control plane over the core."""
    flags = load_flags(settings)
    classic_direct = RemoteArm("classic", services.classic.predict, services.classic.describe)
    ensemble_call = services.ensemble.predict
    if settings.ensemble_coalesce_max_rows > 0:  # concurrent requests share calls
        ensemble_call = Coalescer(
            ensemble_call,
            settings.ensemble_coalesce_max_rows,
            settings.ensemble_coalesce_in_flight,
            observe=metrics.ENSEMBLE_CALL_ROWS.observe,
        )
    ensemble = RemoteArm("ensemble", ensemble_call, services.ensemble.describe)
    cascade = None
    if services.cascade is not None:  # the same service's cascade API, coalesced the same way
        cascade_call = services.cascade
        if settings.ensemble_coalesce_max_rows > 0:
            cascade_call = Coalescer(
                cascade_call,
                settings.ensemble_coalesce_max_rows,
                settings.ensemble_coalesce_in_flight,
                observe=metrics.ENSEMBLE_CALL_ROWS.observe,
            )
        cascade = CascadeArm(ensemble, cascade_call)
    classic: RemoteArm | LocalArm = classic_direct
    state = StateStore(settings.state_url)
    replica = settings.replica_id or replica_id()
    request_ids = RequestIds(request_id_secret(settings, state), flags.evaluation.feedback_ttl_s)
    live: LiveEvaluation | None = None
    if services.classic_tag is not None:
        model, stored = store.load(services.classic_tag)
        if settings.classic_local:
            description = describe_model("classic", str(stored.tag), model, stored.info.metadata)
            classic = LocalArm("classic", model, info_from_description(description))
        reference = cast(dict[str, Any], stored.info.metadata.get("reference", {}))
        drift = DriftMonitor(model.schema.features, reference, flags.drift) if reference else None
        live = LiveEvaluation(
            state,
            flags,
            drift,
            model.schema.classes,
            replica=replica,
            request_ids=request_ids,
            in_process_arms=("classic",) if settings.classic_local else (),
        )
    core = RouterCore(
        Arms(classic, ensemble, classic_direct=classic_direct, cascade=cascade),
        flags,
        flag_source=FlagSource(state, settings.flags_path),
        ensemble_min_members=settings.ensemble_min_members,
        live=live,
        preferences=PreferenceCache(state, ttl_s=settings.preference_ttl_s),
        request_ids=request_ids if live is not None else None,
    )
    control = ControlPlane(
        core,
        live=live,
        trials_store=state if live is not None else None,
        retraining=RetrainingJob(state, settings.state_url, replica) if live is not None else None,
        model_loaders={
            "classic": services.classic.load_version,
            "ensemble": services.ensemble.load_version,
        },
        fault_setter=services.ensemble.set_fault,
        notifier=Notifier(settings.webhook_url),
        pins=VersionPins(state),
    )
    return Router(core, control)


REQUEST_ID_SECRET_KEY = "request_id_secret"
RETRAINING_TICK_S = 10.0
"""How often the leader asks whether the scheduled retraining run is due."""
JUDGE_EVERY_S = 5.0
"""How often the leader judges the trial and the experiment on the shared feedback."""


def request_id_secret(settings: ServingSettings, state: StateStore) -> str:
    """The secret that signs request ids: the configured one, else one generated once and kept in
    the state store, so every replica sharing the store verifies every other's ids."""
    if settings.request_id_secret is not None:
        return settings.request_id_secret.get_secret_value()
    state.set_if_version(REQUEST_ID_SECRET_KEY, 0, secrets.token_urlsafe(32))  # first one wins
    return str(state.get(REQUEST_ID_SECRET_KEY))


@dataclass
class BackgroundWork:
    """The router's periodic jobs, each in its own loop that survives a failing round."""

    router: Router
    settings: ServingSettings
    tasks: list[asyncio.Task] = field(default_factory=list)
    gc_pauses: gcpause.GcPauses = field(default_factory=lambda: gcpause.GcPauses(metrics.GC_PAUSE))
    lease: Lease | None = None
    exported: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Ensemble versions whose weights and importance stability are exported (version -> what)."""
    _judged_at: float = float("-inf")
    core: RouterCore = field(init=False)
    control: ControlPlane = field(init=False)

    def __post_init__(self) -> None:
        self.core, self.control = self.router.core, self.router.control
        if self.control.live is not None and self.lease is None:
            holder = self.settings.replica_id or replica_id()
            self.lease = Lease(
                self.control.live.store, CONTROLLER_LEASE, holder, self.settings.lease_ttl_s
            )

    async def start(self) -> None:
        self.gc_pauses.install()
        if self.settings.gc_freeze:
            frozen = gcpause.freeze_startup_objects()
            log.info("gc: %d start-up objects frozen out of collections", frozen)
        await self.core.refresh_health()
        jobs: list[tuple[float, Callable[[], Awaitable[Any]]]] = [
            (self.settings.health_poll_s, self.core.refresh_health),
            (self.settings.flags_poll_s, self._reload_flags),
            (1.0, self._rollout_tick),
        ]
        if self.control.live is not None:  # this replica's outcomes to the shared evidence
            jobs.append((self.settings.outcome_flush_s, self._flush_outcomes))
        if self.control.challenger is not None:  # the challenger: load it, share, move it
            jobs.append((self.settings.flags_poll_s, self._challenger_tick))
        if self.control.retraining is not None:  # the off-peak job and retention, on the leader
            jobs.append((RETRAINING_TICK_S, self._retraining_tick))
        if self.settings.preference_ttl_s > 0:  # preferences routed without a read per request
            sync = self.core.preferences.sync
            await asyncio.to_thread(sync)
            jobs.append((self.settings.preference_ttl_s, lambda: asyncio.to_thread(sync)))
        self.tasks = [asyncio.create_task(_every(seconds, job)) for seconds, job in jobs]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.gc_pauses.uninstall()
        await self.core.shadow.drain()
        if self.control.live is not None:  # what this replica answered reaches the evidence
            try:
                await asyncio.to_thread(self.control.live.flush_outcomes)
            except Exception as exc:  # counted, not only logged: the evidence is short by these
                lost = self.control.live.outcomes.pending
                metrics.OUTCOMES_DROPPED.inc(lost)
                log.error("%d outcomes lost at shutdown (store unreachable): %s", lost, exc)
        if self.lease is not None:  # hand the controller over at once, not after the TTL
            await asyncio.to_thread(self.lease.release)

    async def _reload_flags(self) -> None:
        await asyncio.to_thread(self.core.reload_flags_if_changed)  # a store read: off the loop
        await self.control.follow_pins()

    async def _flush_outcomes(self) -> None:
        live = self.control.live
        if live is None:  # only scheduled with live evaluation
            return
        try:
            await asyncio.to_thread(live.flush_outcomes)
        except Exception as exc:  # the store is down: rows wait in memory and are retried
            log.warning("outcomes not written yet (%s): %d pending", exc, live.outcomes.pending)

    async def _rollout_tick(self) -> None:
        """The lease holder evaluates (and announces what it decides); the others follow."""
        self.gc_pauses.flush()  # observed here, never from the collector's callback (gcpause.py)
        if self.control.live is None or self.lease is None:
            return
        leading = await asyncio.to_thread(self.lease.hold)  # store I/O off the event loop
        metrics.LEADER.set(1 if leading else 0)
        await self.control.follow_rollout(leading)

    async def _challenger_tick(self) -> None:
        """Follow the shared trial record (every replica), add this replica's shadow counts,
        and, on the lease holder, move the trial when its evidence says so."""
        controller, cfg = self.control.challenger, self.core.flags.challenger
        if controller is None:  # only scheduled with one
            return
        record = await asyncio.to_thread(controller.record)
        self.core.challenger = ChallengerView.of(record, cfg)
        await self.core.versions.sync(self.control.wanted_versions())
        replica = self.settings.replica_id or replica_id()
        for version, (compared, agreed) in self.core.challenger_shadow.take_counts().items():
            await asyncio.to_thread(controller.add_shadow, replica, version, compared, agreed)
        if record:
            for stage in STAGES:
                metrics.CHALLENGER_STAGE.labels(version=record["version"], stage=stage).set(
                    1 if record["stage"] == stage else 0
                )
        await self._export_versions()
        now = time.monotonic()
        if self.lease is not None and self.lease.leading and now - self._judged_at >= JUDGE_EVERY_S:
            self._judged_at = now  # the evidence is every replica's feedback: read it sparingly
            await asyncio.to_thread(self._enter_accepted_version, record)
            moved = await controller.tick(cfg)
            if moved is not None:
                self.control.notifier.announce({"action": f"challenger_{moved['stage']}", **moved})
            await self._export_experiment()

    def _enter_accepted_version(self, record: dict[str, Any] | None) -> None:
        """A version the retraining job accepted since the last trial began goes on trial."""
        controller, retraining = self.control.challenger, self.control.retraining
        if not self.core.flags.challenger.enabled or retraining is None:
            return
        if controller is None:
            return
        if record and record.get("stage") in ("shadow", "ab"):
            return
        since = float(record["entered_at"]) if record else 0.0
        for run in retraining.runs(5):  # newest first
            if float(run.get("finished_at") or 0) <= since:
                return
            if run.get("outcome") == "accepted" and run.get("tag"):
                version = str(run["tag"]).split(":", 1)[-1]
                lineage = {k: run.get(k) for k in ("parent", "metrics", "rows", "data_window")}
                try:
                    controller.enter(version, "retraining", lineage)
                except ValueError as exc:
                    log.warning("accepted version %s not put on trial: %s", version, exc)
                return

    async def _retraining_tick(self) -> None:
        """On the leader: the retraining job's tick (retention, then the scheduled run when due)."""
        retraining = self.control.retraining
        if retraining is None or self.lease is None or not self.lease.leading:
            return
        parent = self.core.ensemble.info.version if self.core.ensemble.info else None
        await retraining.tick(self.core.flags.retraining, parent)

    async def _export_versions(self) -> None:
        """Member weights of the champion and every version on trial, and their feature
        importances' rank correlation with their lineage parent's (once per version)."""
        infos = [self.core.ensemble.info, *(a.info for a in self.core.versions.arms.values())]
        for info in infos:
            if info is None or info.version in self.exported:
                continue
            parent = model_metrics.parent_of(info.details)
            importance = await asyncio.to_thread(_stored_importance, parent) if parent else None
            self.exported[info.version] = model_metrics.export_version(
                info.version, info.details, importance
            )

    async def _export_experiment(self) -> None:
        """The leader's per-variant accuracy of the flags' experiment, as gauges."""
        live = self.control.live
        if live is None:
            return
        report = await asyncio.to_thread(live.experiment_status, self.control.served_versions())
        if report is None:
            return
        for name, variant in report["variants"].items():
            labels = {"experiment": report["experiment"], "variant": name}
            metrics.VARIANT_LABELLED.labels(**labels).set(variant["labelled"])
            if variant["accuracy"] is not None:
                metrics.VARIANT_ACCURACY.labels(**labels).set(variant["accuracy"])


def _stored_importance(version: str) -> dict[str, float] | None:
    """Feature importances stored with `ensemble:<version>` (None when the store lacks it)."""
    import bentoml

    try:
        found = bentoml.models.get(f"ensemble:{version}").info.metadata.get("feature_importance")
        return cast(dict[str, float], found) if isinstance(found, dict) else None
    except Exception:  # a split deployment's router may have no model store
        return None


async def _every(seconds: float, job: Callable[[], Awaitable[Any]]) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await job()
        except Exception:  # a background hiccup must not kill the loop
            log.exception("background job failed")
