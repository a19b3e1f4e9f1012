"""The rollout's stage as the shared store keeps it (one JSON document, compare-and-set)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class RolloutState:
    """Where the rollout is; persisted as JSON under the store key "rollout"."""

    stage_index: int
    """Index into `RolloutConfig.schedule` of the current (or last, when rolled back) stage."""
    percentage: float
    """Ensemble traffic share in force (0 after a rollback)."""
    paused: bool
    """Automatic promotion is paused by an operator (rollback triggers still act)."""
    rolled_back: bool
    """The ensemble was rolled back: callers map this to `ensemble.enabled = false`."""
    reason: str | None
    """Why the last transition happened."""
    entered_at: float
    """Clock time the current stage (or the rollback) began."""
    version: int
    """Counter bumped by every transition (each write goes through compare_and_set)."""

    def to_dict(self) -> dict:
        """The state as a JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutState:
        """Read a stored state (unknown keys ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
