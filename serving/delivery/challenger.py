"""A retrained version's path to traffic: shadow, then an A/B variant, then promotion.

One record in the shared store says which version is on trial and in which stage, so every
replica serves the same trial; only the leader (the rollout controller's lease holder) moves it:

    shadow    the challenger answers a sample of the champion's requests in the background; the
              replicas add up how often it agrees with the champion (agreement, not accuracy:
              no label is needed yet). Judged on an anytime-valid confidence sequence (the
              leader looks every tick): shown above `min_agreement` -> A/B, shown below ->
              rejected.
    ab        the challenger answers its weight of the champion's users (sticky), every answer
              carries its version, and the labelled feedback of randomly assigned requests
              compares the two with the same statistics as any experiment
              (serving/evidence/experiment_report.py: always-valid p-values, so promoting at
              the first `go` of a look every 5 s keeps the error at alpha; a sample-ratio
              mismatch holds the verdict): go -> promoted, no-go -> rejected.
    promoted  the challenger's version is pinned for every replica's ensemble service (the
              champion is swapped, as an operator's version swap would); `rollback` restores
              the previous champion.

Every stage change is written to the decision log with its evidence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from serving.config.experiments import ChallengerConfig, Experiment, Variant
from serving.evidence import experiment_report

log = logging.getLogger(__name__)

RECORD_KEY = "challenger"
"""The shared record of the version on trial."""
SHADOW_KEY = "challenger.shadow"
"""Shadow comparisons of the trial, per replica: {version, replicas: {id: [n, agreed]}}."""
ACTIVE = ("shadow", "ab")
FINAL = ("promoted", "rejected", "rolled_back")
STAGES = (*ACTIVE, *FINAL)


@dataclass(frozen=True)
class ChallengerView:
    """What a replica's router needs of the trial: which version, in which stage, how much."""

    version: str
    stage: str
    weight: float
    shadow_sample_rate: float

    @property
    def salt(self) -> str:
        return f"challenger:{self.version}"

    @classmethod
    def of(cls, record: Mapping[str, Any] | None, cfg: ChallengerConfig) -> ChallengerView | None:
        if not record or record.get("stage") not in ACTIVE or not cfg.enabled:
            return None
        return cls(record["version"], record["stage"], cfg.ab_weight, cfg.shadow_sample_rate)


def ab_experiment(version: str, cfg: ChallengerConfig) -> Experiment:
    """The A/B as an experiment: the champion (whatever the service serves) is the control."""
    return Experiment(
        name=f"challenger-{version}"[:64].lower(),
        variants=[
            Variant(name="champion", model="ensemble", weight=100 - cfg.ab_weight, control=True),
            Variant(name="challenger", model="ensemble", version=version, weight=cfg.ab_weight),
        ],
    )


class ChallengerController:
    """Moves the version on trial through its stages (leader only) and records each move."""

    def __init__(
        self,
        store: Any,
        promote: Callable[[str], Awaitable[Any]],
        champion: Callable[[], str | None],
        clock: Callable[[], float] = time.time,
    ):
        self.store = store
        self.promote = promote
        """Serve a version on every replica's ensemble service (ControlPlane.swap_model)."""
        self.champion = champion
        """The version the ensemble service serves now."""
        self.clock = clock

    # ------------------------------------------------------------------ reads
    def record(self) -> dict[str, Any] | None:
        return self.store.get(RECORD_KEY)

    def shadow_counts(self, version: str) -> tuple[int, int]:
        """(compared, agreed) of `version` summed over every replica."""
        doc = self.store.get(SHADOW_KEY) or {}
        if doc.get("version") != version:
            return 0, 0
        counts = list(doc.get("replicas", {}).values())
        return sum(int(c[0]) for c in counts), sum(int(c[1]) for c in counts)

    def add_shadow(self, replica: str, version: str, compared: int, agreed: int) -> None:
        """Add this replica's new shadow comparisons to the shared counts (compare-and-set)."""
        if compared <= 0:
            return
        for _ in range(20):
            doc = self.store.get(SHADOW_KEY)
            new: dict[str, Any] = (
                dict(doc)
                if doc and doc.get("version") == version
                else {"version": version, "replicas": {}}
            )
            replicas = dict(new.get("replicas", {}))
            n, a = replicas.get(replica, [0, 0])
            replicas[replica] = [int(n) + compared, int(a) + agreed]
            new["replicas"] = replicas
            if self.store.compare_and_set(SHADOW_KEY, doc, new):
                return
        log.warning("shadow counts of %s not added after 20 races", version)

    def report(self, cfg: ChallengerConfig) -> dict[str, Any] | None:
        """The trial's evidence as it stands: shadow agreement, or the A/B report."""
        record = self.record()
        if not record:
            return None
        out: dict[str, Any] = {**record, "shadow": self._shadow(record["version"], cfg)}
        evidence = record.get("evidence")
        if record.get("stage") == "ab":
            out["ab"] = self._ab_report(record, cfg)  # live: the evidence as it stands
        elif isinstance(evidence, dict) and "challengers" in evidence:
            out["ab"] = evidence  # what the verdict was taken on (later traffic changes nothing)
        return out

    def _shadow(self, version: str, cfg: ChallengerConfig) -> dict[str, Any]:
        return experiment_report.agreement_verdict(*self.shadow_counts(version), cfg)

    def _ab_report(self, record: Mapping[str, Any], cfg: ChallengerConfig) -> dict[str, Any]:
        rows = self.store.feedback_since(float(record["ab_started_at"]))
        champion = record.get("champion") or self.champion()
        served = {"ensemble": champion} if champion else {}
        return experiment_report.experiment_report(
            rows, ab_experiment(record["version"], cfg), served, cfg
        )

    # ------------------------------------------------------------------ moves
    def enter(self, version: str, trigger: str, lineage: Mapping[str, Any] | None = None) -> dict:
        """Put `version` on trial in shadow (refused while another trial runs)."""
        current = self.record()
        if current and current.get("stage") in ACTIVE:
            raise ValueError(
                f"ensemble {current['version']} is on trial ({current['stage']}): "
                "reject it first, or wait for its verdict"
            )
        champion = self.champion()
        if version == champion:
            raise ValueError(f"ensemble {version} already serves (it is the champion)")
        now = self.clock()
        record = {
            "version": version,
            "champion": champion,
            "stage": "shadow",
            "trigger": trigger,
            "entered_at": now,
            "stage_at": now,
            "lineage": dict(lineage or {}),
            "history": [{"stage": "shadow", "at": now, "reason": f"entered ({trigger})"}],
        }
        if not self.store.compare_and_set(RECORD_KEY, current, record):
            raise ValueError("another replica changed the trial at the same time: try again")
        self.store.set(SHADOW_KEY, {"version": version, "replicas": {}})
        self._log(record, "challenger_shadow", f"ensemble {version} on trial in shadow")
        return record

    async def tick(self, cfg: ChallengerConfig) -> dict[str, Any] | None:
        """One look at the trial (leader only): move it when its evidence says so."""
        record = self.record()
        if not cfg.enabled or not record or record.get("stage") not in ACTIVE:
            return None
        now = self.clock()
        if now - float(record["stage_at"]) > cfg.max_stage_s:
            return self._move(record, "rejected", f"no verdict in {cfg.max_stage_s:.0f} s")
        if record["stage"] == "shadow":
            shadow = self._shadow(record["version"], cfg)
            if shadow["verdict"] == "pass":
                return self._move(record, "ab", shadow["reason"], ab_started_at=now)
            if shadow["verdict"] == "fail":
                return self._move(record, "rejected", shadow["reason"], evidence=shadow)
            return None
        report = self._ab_report(record, cfg)
        verdict = report["challengers"]["challenger"]
        if verdict["verdict"] == "go":
            previous = self.champion()
            try:
                await self.promote(record["version"])
            except Exception as exc:  # e.g. the ensemble service's store lacks the version
                reason = f"passed the A/B but the ensemble service refused it: {exc}"
                return self._move(record, "rejected", reason, evidence=report)
            return self._move(
                record, "promoted", verdict["reason"], evidence=report, previous=previous
            )
        if verdict["verdict"] == "no_go":
            return self._move(record, "rejected", verdict["reason"], evidence=report)
        return None

    def reject(self, reason: str) -> dict[str, Any]:
        record = self.record()
        if not record or record.get("stage") not in ACTIVE:
            raise ValueError("no version is on trial")
        return self._move(record, "rejected", reason)

    async def rollback(self, reason: str) -> dict[str, Any]:
        """Serve the champion the last promotion replaced, on every replica."""
        record = self.record()
        if not record or record.get("stage") != "promoted" or not record.get("previous"):
            raise ValueError("the last trial was not promoted: nothing to roll back")
        await self.promote(record["previous"])
        return self._move(record, "rolled_back", reason)

    def _move(self, record: Mapping[str, Any], stage: str, reason: str, **extra: Any) -> dict:
        now = self.clock()
        new = {
            **record,
            **extra,
            "stage": stage,
            "stage_at": now,
            "history": [*record.get("history", []), {"stage": stage, "at": now, "reason": reason}],
        }
        if not self.store.compare_and_set(RECORD_KEY, dict(record), new):
            raise ValueError("another replica moved the trial at the same time")
        self._log(new, f"challenger_{stage}", reason, extra.get("evidence"))
        log.warning("ensemble %s: %s -> %s: %s", record["version"], record["stage"], stage, reason)
        return new

    def _log(self, record: Mapping[str, Any], action: str, reason: str, evidence=None) -> None:
        self.store.append_decision(
            {
                "at": self.clock(),
                "action": action,
                "version": record["version"],
                "champion": record.get("champion"),
                "stage": record["stage"],
                "reasons": [reason],
                "evidence": evidence,
            }
        )
