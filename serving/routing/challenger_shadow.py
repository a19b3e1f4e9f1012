"""The challenger's shadow stage on this replica: a sample of the champion's answers also go to the
version on trial, in the background, counting how often the two agree.

The counts are this replica's share; the control plane's challenger loop takes them and adds them
to the shared trial record (serving/delivery/challenger.py), where the leader judges them.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

import numpy as np

from serving.observability import metrics
from serving.routing.versions import VersionArms

if TYPE_CHECKING:
    from serving.delivery.challenger import ChallengerView
    from serving.routing.arms import ArmInfo

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 8
"""Comparisons running at once; beyond that a sampled answer is not compared."""


class ChallengerShadow:
    """Compares sampled champion answers with the version on trial, off the request path."""

    def __init__(self, versions: VersionArms):
        self.versions = versions
        self.counts: dict[str, list[int]] = {}
        """version -> [compared, agreed] of this replica's comparisons not yet shared."""
        self.tasks: set[asyncio.Task] = set()

    def maybe_compare(
        self, trial: ChallengerView | None, codes: np.ndarray, info: ArmInfo, served: np.ndarray
    ) -> None:
        """In a trial's shadow stage, compare a sample of answers (`served`, rows encoded as
        `codes` for the champion described by `info`) in the background."""
        if trial is None or trial.stage != "shadow":
            return
        arm = self.versions.get(trial.version)
        if arm is None or arm.info is None or arm.info.schema_id != info.schema_id:
            return
        if len(self.tasks) >= MAX_IN_FLIGHT or random.random() >= trial.shadow_sample_rate:
            return
        task = asyncio.get_running_loop().create_task(
            self._compare(arm, trial.version, codes, served)
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _compare(self, arm, version: str, codes: np.ndarray, served: np.ndarray) -> None:
        try:
            shadow = np.asarray(await arm.predict(codes))
        except Exception as exc:  # a failing trial never reaches callers
            log.debug("trial shadow call failed: %s", exc)
            return
        agreed = int((shadow.argmax(axis=1) == served.argmax(axis=1)).sum())
        counts = self.counts.setdefault(version, [0, 0])
        counts[0] += len(served)
        counts[1] += agreed
        metrics.CHALLENGER_SHADOW.labels(agree="true").inc(agreed)
        metrics.CHALLENGER_SHADOW.labels(agree="false").inc(len(served) - agreed)

    def take_counts(self) -> dict[str, list[int]]:
        """This replica's comparisons since the last call (to add to the shared counts)."""
        counts, self.counts = self.counts, {}
        return counts
