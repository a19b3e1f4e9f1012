"""Progressive delivery of the ensemble: 10% -> 25% -> 50% -> 75% -> 100% while live metrics allow.

`RolloutController` is a pure state machine over an `EvaluationWindows.snapshot()`: no server, no
threads, an injected clock. Its state lives in the `StateStore` under the key "rollout", written
only with `compare_and_set`, so router replicas sharing one database agree on one stage and two
replicas evaluating at once promote once.

One evaluation (`evaluate`) decides, in this order:

1. rolled back already -> "none" (a manual `promote` restarts at the first stage);
2. rollback when ANY trigger fires, each only once it has enough samples:
   ensemble accuracy more than `max_accuracy_drop` below classic (both arms with
   `min_labelled_samples` labels; anytime-valid: the one-sided mixture test of
   H0: classic - ensemble <= max_accuracy_drop rejects at `score.alpha`, so re-judging every
   tick does not roll back a healthy ensemble on noise), ensemble p95 latency more than
   `max_p95_increase_ms` above classic (both with `min_request_samples` latency samples),
   ensemble error rate above `max_error_rate` (`min_request_samples` requests). Triggers fire
   even while paused, frozen by drift, or with automatic promotion disabled: rollback is the
   safety net;
3. at the last stage with nothing wrong -> "none" (rollout complete);
4. hold when: paused, drift_frozen, a sample-ratio mismatch (`sample_ratio`: the randomised
   labelled traffic's split since the stage began is not the configured one), automatic
   promotion disabled (`enabled: false`), stage younger
   than `min_stage_seconds`, too few samples for any gate, or the go/no-go score says "hold";
5. otherwise promote to the next stage.

Every applied decision goes to the store's decision log with its evidence. Holds are logged when
their reasons change (not every `evaluation_interval_s`), so the log stays readable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from serving.config.delivery import RolloutConfig
from serving.delivery.rollout_state import RolloutState
from serving.evidence import sequential, srm
from serving.evidence.evaluation import candidate_accuracy, compare_accuracy, go_no_go
from serving.store import StateStore

STATE_KEY = "rollout"
"""The store key holding the rollout state."""


class RolloutController:
    """Drives the ensemble's traffic share through the schedule; see the module docstring.

    `state` and `percentage()` answer from memory (cheap enough for every request); `refresh()`,
    `evaluate()` and the manual operations re-read the store first, so a replica follows what
    another replica decided.
    """

    def __init__(
        self, config: RolloutConfig, store: StateStore, clock: Callable[[], float] = time.time
    ):
        """Load the state from `store` (key "rollout"), or start at the first stage."""
        self.config = config
        self.store = store
        self._clock = clock
        self._last_hold: tuple[str, ...] | None = None
        self.last_decision: dict | None = None
        """The most recent decision this controller returned (logged or not)."""
        stored = store.get(STATE_KEY)
        if stored is None:
            initial = self._initial_state("rollout started")
            if store.compare_and_set(STATE_KEY, None, initial.to_dict()):
                stored = initial.to_dict()
            else:
                stored = store.get(STATE_KEY)  # another replica created it first
        self._raw: dict | None = stored
        self._state = self._clamp(RolloutState.from_dict(stored))

    # ------------------------------------------------------------------ reading
    @property
    def state(self) -> RolloutState:
        """The state as last read or written by this controller."""
        return self._state

    def percentage(self) -> float:
        """The ensemble traffic percentage in force (0 after a rollback)."""
        return self._state.percentage

    def refresh(self) -> RolloutState:
        """Re-read the state from the store (another replica may have changed it)."""
        stored = self.store.get(STATE_KEY)
        self._raw = stored  # None (deleted): the next write re-creates the key
        if stored is not None:
            self._state = self._clamp(RolloutState.from_dict(stored))
        return self._state

    # ------------------------------------------------------------------ evaluation
    def _holds(
        self,
        state: RolloutState,
        evidence: dict,
        gates: Mapping[str, Mapping[str, Any]],
        now: float,
        drift_frozen: bool,
    ) -> list[str]:
        """Why this stage may not be promoted yet (empty: every gate and the score allow it)."""
        cfg = self.config
        holds: list[str] = []
        if state.paused:
            holds.append("paused")
        if drift_frozen:
            holds.append("frozen: input drift detected")
        ratio = evidence["sample_ratio"]
        if ratio is not None and ratio["mismatch"]:
            holds.append(
                f"sample_ratio: the split is not the split (observed {ratio['observed_share']}, "
                f"configured {ratio['expected_share']}, always-valid p {ratio['p_value']:.3g})"
            )
        age = now - state.entered_at
        if age < cfg.min_stage_seconds:
            holds.append(f"stage is {age:.0f} s old, needs {cfg.min_stage_seconds:.0f} s")
        for name, gate in gates.items():
            if not gate["enough_data"]:
                holds.append(
                    f"not enough data for {name}: {gate['samples']} of {gate['min_samples']}"
                )
        verdict = evidence["go_no_go"]["verdict"]
        if verdict == "hold":
            failed = ", ".join(
                f"{g['gate']} {_fmt(g['value'])} vs {_fmt(g['threshold'])}"
                for g in evidence["go_no_go"]["failed_gates"]
            )
            holds.append(f"go/no-go says hold ({failed})")
        elif verdict == "not enough data" and all(g["enough_data"] for g in gates.values()):
            holds.extend(f"go/no-go: {r}" for r in evidence["go_no_go"]["reasons"])
        return holds

    def evaluate(
        self,
        snapshot: Mapping[str, Mapping[str, Any]],
        drift_frozen: bool = False,
        assignment: Mapping[str, int] | None = None,
    ) -> dict:
        """Run one evaluation on `snapshot` (an `EvaluationWindows.snapshot()`) and apply it.

        Returns the decision: `action` ("promote" | "hold" | "rollback" | "none"), `reasons`,
        `from` and `to` (stage index and percentage), the resulting `state`, `applied` (False when
        another replica changed the state first: the action is then "none"), and `evidence`:
        every gate (value, threshold, enough data, triggered/passed), the accuracy comparison and
        the go/no-go result. `assignment`: randomised labelled requests per side ("classic",
        "ensemble") since the stage began, for the sample-ratio check (a mismatch holds).
        """
        now = self._clock()
        state = self.refresh()
        expected = self._raw
        cfg = self.config
        evidence = self._evidence(snapshot, state, now, drift_frozen)
        evidence["sample_ratio"] = (
            None
            if assignment is None
            else srm.check(
                assignment, {"classic": 100.0 - state.percentage, "ensemble": state.percentage}
            )
        )
        gates = evidence["gates"]
        triggered = [name for name, gate in gates.items() if gate["triggered"]]
        last_stage = state.stage_index >= len(cfg.schedule) - 1

        if state.rolled_back:
            return self._finish(
                "none",
                ["rolled back; a manual promote restarts the rollout"],
                state,
                state,
                evidence,
                now,
                log=False,
            )
        if triggered:
            reasons = [gates[name]["description"] for name in triggered]
            new = replace(
                state,
                percentage=0.0,
                rolled_back=True,
                paused=False,
                reason="rollback: " + "; ".join(reasons),
                entered_at=now,
                version=state.version + 1,
            )
            return self._apply("rollback", reasons, expected, state, new, evidence, now)
        if last_stage:
            return self._finish(
                "none", ["rollout complete"], state, state, evidence, now, log=False
            )

        holds = self._holds(state, evidence, gates, now, drift_frozen)
        evidence["would_promote"] = not holds
        if not cfg.enabled:
            holds.append("automatic promotion is disabled (rollout.enabled is false)")
        if holds:
            return self._hold(holds, state, evidence, now)
        new = self._next_stage(state, state.stage_index + 1, "promoted: all gates pass", now)
        return self._apply(
            "promote",
            ["all gates pass and the score clears the bar"],
            expected,
            state,
            new,
            evidence,
            now,
        )

    # ------------------------------------------------------------------ manual operations
    def pause(self, reason: str = "manual") -> dict:
        """Stop automatic promotion (rollback triggers keep acting); logged."""
        return self._manual(
            "pause", lambda s: replace(s, paused=True, reason=f"paused: {reason}"), reason
        )

    def resume(self, reason: str = "manual") -> dict:
        """Let automatic promotion continue; logged."""
        return self._manual(
            "resume", lambda s: replace(s, paused=False, reason=f"resumed: {reason}"), reason
        )

    def promote(self, reason: str = "manual") -> dict:
        """Move to the next stage now, whatever the metrics say; after a rollback, restart at
        the first stage. At the last stage nothing changes (action "none"). Logged."""

        def change(state: RolloutState) -> RolloutState | None:
            now = self._clock()
            if state.rolled_back:
                return self._next_stage(state, 0, f"restarted: {reason}", now)
            if state.stage_index >= len(self.config.schedule) - 1:
                return None
            return self._next_stage(state, state.stage_index + 1, f"promoted: {reason}", now)

        return self._manual("promote", change, reason)

    def rollback(self, reason: str = "manual") -> dict:
        """Send all traffic back to classic now (percentage 0, rolled_back true); logged."""

        def change(state: RolloutState) -> RolloutState | None:
            if state.rolled_back:
                return None
            return replace(
                state,
                percentage=0.0,
                rolled_back=True,
                paused=False,
                reason=f"rollback: {reason}",
                entered_at=self._clock(),
            )

        return self._manual("rollback", change, reason)

    # ------------------------------------------------------------------ internals
    def _initial_state(self, reason: str) -> RolloutState:
        return RolloutState(
            stage_index=0,
            percentage=float(self.config.schedule[0]),
            paused=False,
            rolled_back=False,
            reason=reason,
            entered_at=self._clock(),
            version=0,
        )

    def _next_stage(self, state: RolloutState, index: int, reason: str, now: float) -> RolloutState:
        return replace(
            state,
            stage_index=index,
            percentage=float(self.config.schedule[index]),
            rolled_back=False,
            reason=reason,
            entered_at=now,
            version=state.version + 1,
        )

    def _clamp(self, state: RolloutState) -> RolloutState:
        """Fit a stored state to the configured schedule (which may have changed since)."""
        last = len(self.config.schedule) - 1
        index = min(max(int(state.stage_index), 0), last)
        percentage = 0.0 if state.rolled_back else float(self.config.schedule[index])
        if index != state.stage_index or percentage != state.percentage:
            return replace(state, stage_index=index, percentage=percentage)
        return state

    def _evidence(self, snapshot, state: RolloutState, now: float, drift_frozen: bool) -> dict:
        cfg = self.config
        classic = snapshot.get("classic") or {}
        ensemble = snapshot.get("ensemble") or {}
        correct_c, n_c = int(classic.get("correct") or 0), int(classic.get("labelled") or 0)
        correct_e, n_e = candidate_accuracy(snapshot, cfg.score.include_shadow_labels)
        acc_c = correct_c / n_c if n_c else None
        acc_e = correct_e / n_e if n_e else None
        drop = acc_c - acc_e if acc_c is not None and acc_e is not None else None
        enough_acc = min(n_c, n_e) >= cfg.min_labelled_samples
        # evidence the drop exceeds the limit: "challenger" classic vs "control" ensemble,
        # H0: classic <= ensemble + max_accuracy_drop (margin -max_accuracy_drop)
        drop_test = sequential.difference(
            correct_e, n_e, correct_c, n_c, cfg.score.alpha, margin=-cfg.max_accuracy_drop
        )
        drop_p = drop_test["noninferiority_p_value"]

        lat_c, lat_e = classic.get("p95_latency_ms"), ensemble.get("p95_latency_ms")
        n_lat = min(
            int(classic.get("latency_samples") or 0), int(ensemble.get("latency_samples") or 0)
        )
        increase = lat_e - lat_c if lat_c is not None and lat_e is not None else None
        enough_lat = n_lat >= cfg.min_request_samples

        n_req = int(ensemble.get("count") or 0)
        error_rate = ensemble.get("error_rate")
        enough_err = n_req >= cfg.min_request_samples

        gates = {
            "accuracy": {
                "value": drop,
                "threshold": cfg.max_accuracy_drop,
                "rule": "classic - ensemble accuracy <= threshold",
                "classic": acc_c,
                "ensemble": acc_e,
                "samples": min(n_c, n_e),
                "min_samples": cfg.min_labelled_samples,
                "enough_data": enough_acc,
                "p_value": drop_p,
                "alpha": cfg.score.alpha,
                "drop_low": drop_test["noninferiority_low"],
                "test": "anytime-valid one-sided mixture, H0: drop <= threshold",
                "triggered": bool(enough_acc and drop_p is not None and drop_p < cfg.score.alpha),
                "description": (
                    f"ensemble accuracy {_fmt(acc_e)} is {_fmt(drop)} below classic "
                    f"{_fmt(acc_c)} (limit {cfg.max_accuracy_drop})"
                ),
            },
            "latency": {
                "value": increase,
                "threshold": cfg.max_p95_increase_ms,
                "rule": "ensemble - classic p95 ms <= threshold",
                "classic": lat_c,
                "ensemble": lat_e,
                "samples": n_lat,
                "min_samples": cfg.min_request_samples,
                "enough_data": enough_lat,
                "triggered": bool(
                    enough_lat and increase is not None and increase > cfg.max_p95_increase_ms
                ),
                "description": (
                    f"ensemble p95 {_fmt(lat_e)} ms is {_fmt(increase)} ms above classic "
                    f"{_fmt(lat_c)} ms (limit {cfg.max_p95_increase_ms})"
                ),
            },
            "errors": {
                "value": error_rate,
                "threshold": cfg.max_error_rate,
                "rule": "ensemble error rate <= threshold",
                "samples": n_req,
                "min_samples": cfg.min_request_samples,
                "enough_data": enough_err,
                "triggered": bool(
                    enough_err and error_rate is not None and error_rate > cfg.max_error_rate
                ),
                "description": f"ensemble error rate {_fmt(error_rate)} above {cfg.max_error_rate}",
            },
        }
        for gate in gates.values():
            gate["passed"] = gate["enough_data"] and not gate["triggered"]
        return {
            "gates": gates,
            "accuracy_test": compare_accuracy(
                correct_c, n_c, correct_e, n_e, min_samples=cfg.min_labelled_samples
            ),
            "go_no_go": go_no_go(snapshot, cfg.score, min_samples=cfg.min_labelled_samples),
            "drift_frozen": bool(drift_frozen),
            "paused": state.paused,
            "enabled": cfg.enabled,
            "stage_age_s": now - state.entered_at,
            "min_stage_seconds": cfg.min_stage_seconds,
        }

    def _apply(
        self,
        action: str,
        reasons: list[str],
        expected: dict | None,
        old: RolloutState,
        new: RolloutState,
        evidence: dict,
        now: float,
    ) -> dict:
        """Write `new` if the stored state is still `expected`; log and return the decision."""
        if not self.store.compare_and_set(STATE_KEY, expected, new.to_dict()):
            current = self.refresh()
            return self._finish(
                "none",
                [f"{action} not applied: another replica changed the state first"],
                old,
                current,
                evidence,
                now,
                log=False,
                applied=False,
            )
        self._state = new
        self._raw = new.to_dict()
        self._last_hold = None
        return self._finish(action, reasons, old, new, evidence, now, log=True)

    def _hold(self, reasons: list[str], state: RolloutState, evidence: dict, now: float) -> dict:
        # Log a hold only when its reasons change (ignoring the ever-changing stage age).
        key = tuple(r for r in reasons if not r.startswith("stage is ")) + (
            ("too early",) if any(r.startswith("stage is ") for r in reasons) else ()
        )
        log = key != self._last_hold
        self._last_hold = key
        return self._finish("hold", reasons, state, state, evidence, now, log=log)

    def _finish(
        self,
        action: str,
        reasons: list[str],
        old: RolloutState,
        new: RolloutState,
        evidence: dict | None,
        now: float,
        *,
        log: bool,
        applied: bool = True,
        manual: bool = False,
    ) -> dict:
        decision = {
            "at": now,
            "action": action,
            "manual": manual,
            "applied": applied,
            "reasons": reasons,
            "from": {"stage_index": old.stage_index, "percentage": old.percentage},
            "to": {"stage_index": new.stage_index, "percentage": new.percentage},
            "state": new.to_dict(),
            "evidence": evidence,
            "logged": log,
        }
        if log:
            self.store.append_decision(decision)
        self.last_decision = decision
        return decision

    def _manual(
        self, action: str, change: Callable[[RolloutState], RolloutState | None], reason: str
    ) -> dict:
        for _ in range(20):  # retry the compare-and-set when another replica wrote in between
            now = self._clock()
            old = self.refresh()
            expected = self._raw
            new = change(old)
            if new is None or new == old:
                return self._finish(
                    "none",
                    [f"manual {action} changes nothing: {reason}"],
                    old,
                    old,
                    None,
                    now,
                    log=True,
                    manual=True,
                )
            new = replace(new, version=old.version + 1)
            if self.store.compare_and_set(STATE_KEY, expected, new.to_dict()):
                self._state = new
                self._raw = new.to_dict()
                self._last_hold = None
                return self._finish(
                    action, [f"manual: {reason}"], old, new, None, now, log=True, manual=True
                )
        raise RuntimeError(f"manual {action} lost the compare-and-set 20 times in a row")


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
