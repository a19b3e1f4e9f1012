"""Live evaluation in the router: served predictions, feedback joins, windows, drift, rollout.

Glue between the router core, the pure parts (serving/evidence/: evaluation, drift, cost), the
rollout controller (delivery/rollout.py) and the shared store (serving/store/). It keeps the
last predictions in memory (bounded, with a TTL) so that ground-truth feedback can be joined to
what was served; joins are persisted, so the label windows survive a restart. With
`rollout.enabled`, the controller owns the ensemble's rollout percentage and the kill switch (a
rollback disables the ensemble); otherwise it only reports.

Cost: it samples the router process's CPU time (`time.process_time()`) with the number of
predictions served at every tick and report, so the router's own CPU per served prediction and the
observed traffic over the evaluation window feed the deployment's bill (serving/evidence/cost.py),
which the go/no-go's cost term reads.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from serving.config.experiments import Experiment
from serving.config.flags import FlagConfig
from serving.delivery.recent import RecentPredictions, Served
from serving.delivery.request_ids import RequestIds
from serving.delivery.rollout import RolloutController
from serving.errors import InvalidInput, NotFound, StoreUnavailable
from serving.evidence import experiment_report, srm
from serving.evidence.cost import CpuMeter, Usage, arm_cpu_per_served, cost_report
from serving.evidence.drift import DriftMonitor
from serving.evidence.evaluation import COST_KEY, EvaluationWindows, go_no_go
from serving.observability import metrics
from serving.results import RoutedPrediction
from serving.routing.policy import is_randomised
from serving.store import StateStore
from serving.store.outcomes import OutcomeBuffer

log = logging.getLogger(__name__)

SHIPPED_PER_WINDOW = 20
"""A replica ships at most drift.window / 20 of its newest input rows per outcome flush to the
shared drift window, so the window spans many flushes (and every replica) at any traffic."""


class LiveEvaluation:
    """Windows per arm, feedback joins, drift, cost and the rollout controller for one router
    process.

    `in_process_arms`: arms whose model runs in this process (their CPU is part of the process's
    CPU time and is not the router's own work); the composition root (serving/wiring.py) passes
    classic when `SERVING_CLASSIC_LOCAL` is on, the default. `cpu_clock`: the process CPU time.
    """

    def __init__(
        self,
        store: StateStore,
        flags: FlagConfig,
        drift: DriftMonitor | None,
        classes: Sequence[str],
        clock: Callable[[], float] = time.time,
        *,
        in_process_arms: Collection[str] = ("classic",),
        cpu_clock: Callable[[], float] = time.process_time,
        replica: str = "local",
        request_ids: RequestIds | None = None,
    ):
        self.store = store
        self.replica = replica
        self.request_ids = request_ids
        """Verifies signed request ids, so feedback joins on any replica (None: this replica's
        memory only, as in unit tests)."""
        self.outcomes = OutcomeBuffer(store, replica)
        self._shared: tuple[float, EvaluationWindows] | None = None
        self._shared_lock = threading.Lock()
        self.evidence = "shared"
        """Where the last report's windows came from: "shared" (every replica's outcomes in the
        store) or "local" (this replica's only: the store could not be read)."""
        self._last_prune = 0.0
        self._shared_drift: tuple[float, dict[str, Any]] | None = None
        self.drift = drift
        self.classes = list(classes)
        self._clock = clock
        self._cpu_clock = cpu_clock
        self.in_process_arms = frozenset(in_process_arms)
        self._predictions = 0  # predictions answered (written by the event loop only)
        self._in_process_cpu = 0.0  # CPU seconds of models run in this process
        self.configure(flags, initial=True)
        self.sample_usage()
        replayed = self.windows.replay_feedback(
            self.store.feedback_since(clock() - flags.evaluation.window_s)
        )
        if replayed:
            log.info("live evaluation: replayed %d stored feedback labels", replayed)
        self._last_evaluation = 0.0

    def configure(self, flags: FlagConfig, initial: bool = False) -> None:
        """Apply (re)loaded flags: window sizes, rollout and drift policy (cost is read per
        report from `flags.cost`)."""
        ev = flags.evaluation
        if self.request_ids is not None:
            self.request_ids.ttl_s = ev.feedback_ttl_s
        if initial:
            self.windows = EvaluationWindows(
                max_events=ev.max_events, max_age_s=ev.window_s, clock=self._clock
            )
            self.recent = RecentPredictions(ev.max_tracked_requests, ev.feedback_ttl_s, self._clock)
            self.controller = RolloutController(flags.rollout, self.store, clock=self._clock)
            self.meter = CpuMeter(max_age_s=ev.window_s)
        else:
            self.meter.max_age_s = ev.window_s
            self.recent.max_entries, self.recent.ttl_s = ev.max_tracked_requests, ev.feedback_ttl_s
            self.controller.config = flags.rollout
        if flags.experiment is not None:  # its evidence starts now (or when another replica
            try:  # first applied the same variant table)
                experiment_started_at(self.store, flags.experiment, self._clock())
            except Exception as exc:  # the store is down: the report records it later
                log.warning("experiment start not recorded yet: %s", exc)
        if self.drift is not None:
            self.drift.config = flags.drift
            self.outcomes.max_inputs = max(1, flags.drift.window // SHIPPED_PER_WINDOW)
        self.flags = flags

    # ------------------------------------------------------------------ traffic
    def record(
        self,
        predictions: Sequence[RoutedPrediction],
        latency_ms: float | None,
        cpu_seconds: float | None,
        ensemble_error: bool = False,
        meant: str = "ensemble",
    ) -> None:
        """Count one answered request (all rows answered by one arm), remember each prediction.

        `meant`: on a fallback, the arm of the ensemble service that classic stood in for
        ("ensemble" or "cascade"): its window counts the fallback and, with `ensemble_error`, the
        error."""
        first = predictions[0]
        arm, cached, fallback = first.model, first.cached, first.fallback
        now = self._clock()
        if ensemble_error or fallback:
            meant = meant if meant in self.windows.windows else "ensemble"
            self.windows.record_request(meant, None, error=ensemble_error, fallback=True)
            self.outcomes.add_request(meant, None, None, now, error=ensemble_error, fallback=True)
        per_row_cpu = None if cpu_seconds is None else cpu_seconds / len(predictions)
        self._predictions += len(predictions)
        if cpu_seconds is not None and arm in self.in_process_arms:
            self._in_process_cpu += cpu_seconds
        latency = None if cached else latency_ms
        for p in predictions:
            self.windows.record_request(arm, latency, cached=cached, cpu_seconds=per_row_cpu)
            self.outcomes.add_request(arm, latency, per_row_cpu, now, cached=cached)
            randomised = is_randomised(p.reason, p.fallback)
            self.recent.add(p.request_id, Served(arm, p.label, latency_ms, now, None, randomised))

    def record_shadow(
        self, request_ids: Sequence[str], probabilities: np.ndarray, seconds: float
    ) -> None:
        labels = [self.classes[int(i)] for i in np.argmax(probabilities, axis=1)]
        now = self._clock()
        for request_id, label in zip(request_ids, labels, strict=False):
            served = self.recent.get(request_id)
            if served is not None:
                self.recent.add(request_id, served._replace(shadow_label=label))
            self.windows.record_request("shadow", seconds * 1000.0)
            self.outcomes.add_request("shadow", seconds * 1000.0, None, now)
            self.outcomes.add_shadow(request_id, label, now)

    def observe_inputs(self, codes: np.ndarray) -> None:
        if self.drift is not None:
            self.drift.observe(codes)
            self.outcomes.add_inputs(codes)  # a sample of them joins every replica's window

    # ------------------------------------------------------------------ feedback
    def feedback(self, request_id: str, label: str, rating: int | None = None) -> dict[str, Any]:
        """Join a true label (and optional 1..10 rating) to a served prediction; idempotent."""
        if label not in self.classes:
            raise InvalidInput(
                f"unknown label {label!r}; expected one of {self.classes}",
                fields=[{"field": "label", "message": "not a class of the model"}],
            )
        try:
            return self._join(request_id, label, rating)
        except SQLAlchemyError as exc:  # not acknowledged: the caller retries, nothing is lost
            log.warning(
                "feedback for %s not recorded: the store is unreachable (%s)", request_id, exc
            )
            raise StoreUnavailable() from None

    def _join(self, request_id: str, label: str, rating: int | None) -> dict[str, Any]:
        served, version = self._served(request_id)
        if served is None:
            raise NotFound(
                f"unknown or expired request_id {request_id!r} (feedback is accepted for "
                f"{self.flags.evaluation.feedback_ttl_s:.0f} s after the prediction)"
            )
        stored = self.store.record_feedback(
            request_id,
            served.arm,
            served.label,
            label,
            rating,
            served.latency_ms,
            served.shadow_label,
            served.created_at,
            replica=self.replica,
            model_version=version,
            randomised=served.randomised,
        )
        correct = served.label == label
        if stored and served.randomised:  # forced arms are reported, never compared
            self.windows.record_label(served.arm, correct, rating)
            if served.shadow_label is not None:
                self.windows.record_label("shadow", served.shadow_label == label)
            metrics.FEEDBACK.labels(arm=served.arm, correct=str(correct).lower()).inc()
        return {
            "request_id": request_id,
            "status": "recorded" if stored else "duplicate",
            "arm": served.arm,
            "predicted": served.label,
            "correct": correct,
        }

    def _served(self, request_id: str) -> tuple[Served | None, str | None]:
        """What was answered for `request_id`: from this replica's memory, else from the signed
        id itself (any replica's prediction), with the shadow label the store has for it."""
        served = self.recent.get(request_id)
        claim = self.request_ids.verify(request_id) if self.request_ids is not None else None
        if served is not None:
            return served, claim.model_version if claim is not None else None
        if claim is None or not 0 <= claim.class_index < len(self.classes):
            return None, None
        shadow = self.store.shadow_label(request_id) if claim.arm == "classic" else None
        label = self.classes[claim.class_index]
        served = Served(claim.arm, label, None, claim.created_at, shadow, claim.randomised)
        return served, claim.model_version

    # ------------------------------------------------------------------ shared evidence
    def flush_outcomes(self) -> int:
        """Write this replica's pending outcomes to the store (a background job, every second)."""
        try:
            return self.outcomes.flush()
        finally:
            metrics.OUTCOMES_PENDING.set(self.outcomes.pending)

    def shared_windows(self, max_age_s: float = 1.0) -> EvaluationWindows:
        """The evaluation windows over every replica's outcomes in the window, rebuilt from the
        store (at most every `max_age_s`); this replica's own windows when the store is down."""
        with self._shared_lock:
            now = self._clock()
            if self._shared is not None and now - self._shared[0] < max_age_s:
                return self._shared[1]
            ev = self.flags.evaluation
            try:
                self.flush_outcomes()
                since = now - ev.window_s
                windows = EvaluationWindows(
                    max_events=ev.max_events, max_age_s=ev.window_s, clock=self._clock
                )
                windows.replay_requests(self.store.requests_since(since, ev.max_events))
                windows.replay_feedback(self.store.feedback_since(since))
            except Exception as exc:
                log.warning("shared evidence unavailable (%s); reporting this replica's", exc)
                self.evidence = "local"
                return self.windows
            self.evidence = "shared"
            self._shared = (now, windows)
            return windows

    def prune(self, every_s: float = 60.0) -> None:
        """Drop stored outcomes older than the window, and input rows beyond the drift window
        (the leader's job, once a minute)."""
        now = self._clock()
        if now - self._last_prune >= every_s:
            self._last_prune = now
            self.store.prune(now - self.flags.evaluation.window_s - every_s)
            self.store.prune_drift_rows(self.flags.drift.window)

    # ------------------------------------------------------------------ evaluation and rollout
    def drift_report(self) -> dict[str, Any]:
        if self.drift is None:
            return {
                "enough_data": False,
                "drifted": False,
                "features": {},
                "note": "no reference statistics",
            }
        report = self.shared_drift()
        for name, feature in report.get("features", {}).items():
            psi = feature.get("psi")
            metrics.DRIFT_PSI.labels(feature=name).set(
                math.nan if psi is None else psi
            )  # NaN: not enough data
        metrics.DRIFT_DETECTED.set(1 if report.get("drifted") else 0)
        return report

    def experiment_status(self, served: Mapping[str, str]) -> dict[str, Any] | None:
        """Each variant of the flags' experiment on the labelled feedback since the experiment
        began (at most the evaluation window), each challenger against the control
        (Holm-corrected); None without an experiment. `served`: model -> the version its
        service serves (what a follow-the-pin variant means)."""
        experiment = self.flags.experiment
        if experiment is None:
            return None
        now = self._clock()
        started_at = experiment_started_at(self.store, experiment, now)
        since = max(started_at, now - self.flags.evaluation.window_s)
        report = experiment_report.experiment_report(
            self.store.feedback_since(since), experiment, served, self.flags.challenger
        )
        window_s = self.flags.evaluation.window_s
        return {**report, "started_at": started_at, "since": since, "window_s": window_s}

    def shared_drift(self, max_age_s: float = 2.0) -> dict[str, Any]:
        """Drift over the newest window of every replica's inputs (from the store, at most every
        `max_age_s`); this replica's own window when the store cannot be read. Only called with
        reference statistics (drift_report answers without them)."""
        drift = self.drift
        assert drift is not None, "shared_drift needs a DriftMonitor"
        now = self._clock()
        cached = self._shared_drift
        if cached is not None and now - cached[0] < max_age_s:
            return cached[1]
        try:
            rows = self.store.drift_rows(drift.config.window)
        except Exception as exc:
            log.warning("shared drift window unavailable (%s); judging this replica's", exc)
            return {**drift.report(), "inputs": "replica"}
        matrix = np.array(rows, dtype=np.float64).reshape(-1, len(drift.features))
        report = {**drift.report(matrix), "inputs": "shared"}
        self._shared_drift = (now, report)
        return report

    # ------------------------------------------------------------------ cost
    def sample_usage(self) -> None:
        """Take one (time, process CPU, predictions served, in-process model CPU) sample."""
        self.meter.add(self._clock(), self._cpu_clock(), self._predictions, self._in_process_cpu)

    def usage(self, arms: dict[str, dict]) -> tuple[Usage, str]:
        """What the bill is computed from: the meter's window and the arms' CPU, and where the
        traffic figure comes from ("observed", or "assumed" from `cost.requests_per_second`)."""
        reading = self.meter.reading()
        assumed = self.flags.cost.requests_per_second
        rate = assumed if assumed is not None else reading and reading.requests_per_second
        if assumed is None and rate:
            rate *= self._replicas_factor(arms)
        shadow = self.flags.ensemble.shadow
        usage = Usage(
            requests_per_second=rate or None,
            router_cpu_seconds_per_request=reading.router_cpu_seconds_per_request
            if reading
            else None,
            classic_cpu_seconds_per_request=arm_cpu_per_served(arms.get("classic") or {}),
            ensemble_cpu_seconds_per_request=arm_cpu_per_served(arms.get("ensemble") or {}),
            cascade_cpu_seconds_per_request=arm_cpu_per_served(arms.get("cascade") or {}),
            classic_in_router="classic" in self.in_process_arms,
            shadow_rate=shadow.sample_rate if shadow.enabled else 0.0,
        )
        return usage, "observed" if assumed is None else "assumed"

    def _replicas_factor(self, arms: dict[str, dict]) -> float:
        """Every replica's traffic over this replica's: the meter counts what this process served,
        the shared windows what all replicas served in the same window (1 on a single replica)."""
        if self.evidence != "shared":
            return 1.0
        local = self.windows.snapshot()
        served = ("classic", "ensemble")
        mine = sum((local.get(arm) or {}).get("count", 0) for arm in served)
        everyone = sum((arms.get(arm) or {}).get("count", 0) for arm in served)
        return everyone / mine if mine and everyone > mine else 1.0

    def current_percentage(self) -> float:
        """The ensemble's traffic share in force (the controller's when it governs the flags)."""
        if self.flags.rollout.enabled:
            state = self.controller.state
            return 0.0 if state.rolled_back else state.percentage
        ensemble = self.flags.ensemble
        return ensemble.rollout_percentage if ensemble.enabled else 0.0

    def snapshot(self) -> dict[str, dict]:
        """The arms' windows plus, under "cost", the deployment's bill (what go_no_go reads)."""
        self.sample_usage()
        arms = self.shared_windows().snapshot()
        usage, source = self.usage(arms)
        window_s = (reading := self.meter.reading()) and reading.seconds
        score = self.flags.rollout.score
        cost = cost_report(
            usage,
            self.flags.cost,
            self.flags.rollout.schedule,
            self.current_percentage(),
            requests_source=source,
            increases=(score.cost_increase_max, score.cost_increase_target),
            observed_requests_per_second=reading.requests_per_second if reading else None,
        )
        cost["inputs"]["window_s"] = window_s
        return {**arms, COST_KEY: cost}

    # ------------------------------------------------------------------ report
    def report(self) -> dict[str, Any]:
        """Every input of the go/no-go decision, its threshold and margin, and the verdict."""
        snapshot = self.snapshot()
        arms = {arm: snap for arm, snap in snapshot.items() if arm != COST_KEY}
        score = go_no_go(snapshot, self.flags.rollout.score)
        metrics.GO_NO_GO_SCORE.set(math.nan if score.get("score") is None else score["score"])
        for arm, snap in arms.items():
            if snap.get("accuracy") is not None:
                metrics.LIVE_ACCURACY.labels(arm=arm).set(snap["accuracy"])
        return {
            "arms": arms,
            "cost": snapshot[COST_KEY],
            "comparison": self.shared_windows().compare(),
            "cascade_comparison": self.shared_windows().compare(candidate="cascade"),
            "evidence": {
                "source": self.evidence,
                "replica": self.replica,
                "pending_outcomes": self.outcomes.pending,
                "dropped_outcomes": self.outcomes.dropped,
            },
            "go_no_go": score,
            "rollout": {
                "config": self.flags.rollout.model_dump(),
                "state": self.controller.state.to_dict(),
                "automatic": self.flags.rollout.enabled,
            },
            "last_decision": self.controller.last_decision,
        }

    def tick(self, force: bool = False) -> dict[str, Any] | None:
        """One rollout evaluation, at most every `evaluation_interval_s` (only when automatic);
        every call samples the router's CPU for the cost figures."""
        self.sample_usage()
        self.controller.refresh()
        self.prune()
        if not self.flags.rollout.enabled:
            return None
        now = self._clock()
        if not force and now - self._last_evaluation < self.flags.rollout.evaluation_interval_s:
            return None
        self._last_evaluation = now
        drifted = bool(self.drift_report().get("drifted"))
        rows = self.store.feedback_since(self.controller.state.entered_at)
        assignment = srm.rollout_counts(rows)
        decision = self.controller.evaluate(self.snapshot(), drifted, assignment)
        ratio = decision["evidence"].get("sample_ratio") or {}
        metrics.SAMPLE_RATIO_MISMATCH.labels(scope="rollout").set(int(bool(ratio.get("mismatch"))))
        metrics.ROLLOUT_DECISIONS.labels(action=decision["action"]).inc()
        if decision["action"] == "rollback":
            log.warning("rollout: automatic ROLLBACK: %s", "; ".join(decision.get("reasons", [])))
        elif decision["action"] == "promote":
            log.info("rollout: promoted to %s%%", decision["state"]["percentage"])
        return decision

    def governed_flags(self, flags: FlagConfig) -> FlagConfig | None:
        """The flags with the controller's percentage and kill switch; None if nothing changes."""
        if not flags.rollout.enabled:
            return None
        state = self.controller.state
        metrics.ROLLOUT_STAGE.set(state.percentage / 100)  # exported as a 0..1 ratio
        enabled = not state.rolled_back
        if (
            flags.ensemble.rollout_percentage == state.percentage
            and flags.ensemble.enabled == enabled
        ):
            return None
        ensemble = flags.ensemble.model_copy(
            update={"rollout_percentage": state.percentage, "enabled": enabled}
        )
        return flags.model_copy(update={"ensemble": ensemble})


def experiment_started_at(store: Any, experiment: Experiment, now: float) -> float:
    """When this experiment (its name, salt and variant table) first came into force on any
    replica: the first replica to see it records the time in the shared store; a changed table
    starts it again, so its evidence is never mixed with another table's."""
    key = f"experiment.{experiment.name}"
    table = experiment.model_dump(mode="json")
    for _ in range(5):
        current = store.get(key)
        if current and current.get("table") == table:
            return float(current["started_at"])
        if store.compare_and_set(key, current, {"table": table, "started_at": now}):
            return now
    return now
