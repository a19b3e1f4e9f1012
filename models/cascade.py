"""Dynamic selection: a cheap first stage answers the rows it is sure of, the ensemble the rest.

The users' plan calls it "Prod – Dynamic Selection". The first stage (one ensemble member on its
fast path, or the classic model's linear head) runs on every row; a row whose confidence (the
largest class probability, or the margin between the two largest) is below a threshold is
*escalated* to the full ensemble. The first stage and the threshold are chosen at training time by
measurement (training/ensemble_fit.py: every candidate on the validation split, and its served
cost); the result is the cascade spec kept in the ensemble model's metadata (`CascadeSpec`).

Everything here is pure numpy over callables, so it is tested without models:
- `confidence` scores rows; `run_cascade` answers a batch and says which rows escalated;
- `fit_threshold` picks, on labelled validation probabilities, the lowest escalation rate whose
  accuracy is within `tolerance` of the full ensemble's; `escalation_table` is the
  accuracy-vs-escalation table the training report prints.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

Score = Literal["max_probability", "margin"]
SCORES: tuple[Score, ...] = ("max_probability", "margin")
ESCALATION_RATES: tuple[float, ...] = tuple(i / 10 for i in range(11))
"""The rows of the accuracy-vs-escalation table: 0 %, 10 %, ..., 100 % of rows escalated."""
DEFAULT_TOLERANCE = 0.01
"""The default goal: at most 1 accuracy point below the full ensemble (on validation)."""

FirstStage = Callable[[np.ndarray], np.ndarray]
"""Design matrix -> the first stage's class probabilities."""
Escalate = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(escalated rows of the design matrix, the first stage's probabilities for them) -> the full
ensemble's probabilities (the first stage's answer lets a member-first cascade skip recomputing
that member)."""


def confidence(probabilities: np.ndarray, score: Score = "max_probability") -> np.ndarray:
    """Per row, how sure a probability matrix is: its largest probability, or the margin between
    its two largest (both in 0..1; low means unsure)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if score == "max_probability":
        return p.max(axis=1)
    if score == "margin":
        if p.shape[1] < 2:
            return np.ones(len(p))
        top2 = np.partition(p, -2, axis=1)[:, -2:]
        return top2[:, 1] - top2[:, 0]
    raise ValueError(f"unknown confidence score {score!r}; expected one of {SCORES}")


@dataclass(frozen=True)
class CascadeResult:
    """A cascade's answer for a batch: (n, k) probabilities and which rows escalated."""

    probabilities: np.ndarray
    escalated: np.ndarray
    """(n,) bool: True where the full ensemble answered."""

    def packed(self) -> np.ndarray:
        """One (n, k + 1) float array, the last column 1.0 for an escalated row, else 0.0: the
        shape the ensemble service's `predict_cascade` API returns (BentoML 1.4's adaptive
        batching splits and joins outputs along the first axis, so one array it must be)."""
        return np.column_stack([self.probabilities, self.escalated.astype(np.float64)])

    @classmethod
    def unpack(cls, packed: np.ndarray) -> CascadeResult:
        """The inverse of `packed`."""
        packed = np.asarray(packed, dtype=np.float64)
        if packed.ndim != 2 or packed.shape[1] < 2:
            raise ValueError(f"expected an (n, k + 1) array, got shape {packed.shape}")
        return cls(packed[:, :-1], packed[:, -1] > 0.5)


def run_cascade(
    X: np.ndarray,
    first_stage: FirstStage,
    escalate: Escalate,
    threshold: float,
    score: Score = "max_probability",
) -> CascadeResult:
    """The first stage on every row; rows with confidence < `threshold` answered by `escalate`."""
    first = np.asarray(first_stage(X), dtype=np.float64)
    escalated = confidence(first, score) < threshold
    out = first.copy()
    if escalated.any():
        rows = np.flatnonzero(escalated)
        out[rows] = escalate(X[rows], first[rows])
    return CascadeResult(out, escalated)


# ---------------------------------------------------------------------------- fitting
@dataclass(frozen=True)
class ThresholdFit:
    """The threshold chosen for one first stage and score on labelled data, and its figures."""

    score: Score
    threshold: float
    """Escalate rows whose confidence is below this (0: none; above every confidence: all)."""
    escalation_rate: float
    accuracy: float
    """The cascade's accuracy on the data it was fitted on."""
    full_accuracy: float
    """The full ensemble's accuracy on the same rows."""
    first_stage_accuracy: float
    tolerance: float
    goal_met: bool
    """False only when no threshold reaches the goal (cannot happen: escalating every row gives
    the full ensemble's accuracy; kept for a goal that is not relative)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, figures rounded (the threshold exact: rounding could move it past a row)."""
        return {k: v if k == "threshold" else _rounded(v) for k, v in asdict(self).items()}


def _curve(
    first: np.ndarray, full: np.ndarray, y: np.ndarray, score: Score
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every distinct split of the rows by confidence, least confident escalated first:
    (escalated row counts k, thresholds that escalate exactly those k rows, accuracies)."""
    y = np.asarray(y)
    conf = confidence(first, score)
    order = np.argsort(conf, kind="stable")
    conf = conf[order]
    first_right = (np.argmax(first, axis=1) == y)[order]
    full_right = (np.argmax(full, axis=1) == y)[order]
    n = len(conf)
    # accuracy after escalating the k least confident rows, k = 0..n
    escalated_right = np.concatenate([[0], np.cumsum(full_right)])
    kept_right = first_right.sum() - np.concatenate([[0], np.cumsum(first_right)])
    accuracy = (escalated_right + kept_right) / max(n, 1)
    # a threshold can only split between distinct confidences
    k = np.arange(n + 1)
    valid = np.ones(n + 1, dtype=bool)
    if n:
        valid[1:n] = conf[1:] > conf[:-1]
    thresholds = np.empty(n + 1)
    thresholds[0] = 0.0
    if n:
        thresholds[1:n] = (conf[:-1] + conf[1:]) / 2.0
        thresholds[n] = float(np.nextafter(conf[-1], np.inf))
    return k[valid], thresholds[valid], accuracy[valid]


def fit_threshold(
    first: np.ndarray,
    full: np.ndarray,
    y: np.ndarray,
    score: Score = "max_probability",
    tolerance: float = DEFAULT_TOLERANCE,
) -> ThresholdFit:
    """The lowest escalation rate whose accuracy is at least the full ensemble's minus `tolerance`.

    `first`, `full`: (n, k) probabilities of the first stage and the full ensemble on the same
    labelled rows (integer labels `y`), e.g. the validation split. Rows escalate least confident
    first; every distinct split is tried, so the answer is exact on these rows.
    """
    if tolerance < 0:
        raise ValueError("tolerance must not be negative")
    y = np.asarray(y)
    full_accuracy = float(np.mean(np.argmax(full, axis=1) == y))
    first_accuracy = float(np.mean(np.argmax(first, axis=1) == y))
    counts, thresholds, accuracies = _curve(first, full, y, score)
    goal = full_accuracy - tolerance - 1e-12  # tolerate float rounding of equal accuracies
    reaching = np.flatnonzero(accuracies >= goal)
    best = int(reaching[0]) if reaching.size else len(counts) - 1
    return ThresholdFit(
        score=score,
        threshold=float(thresholds[best]),
        escalation_rate=float(counts[best] / max(len(y), 1)),
        accuracy=float(accuracies[best]),
        full_accuracy=full_accuracy,
        first_stage_accuracy=first_accuracy,
        tolerance=float(tolerance),
        goal_met=bool(reaching.size),
    )


def evaluate(
    first: np.ndarray,
    full: np.ndarray,
    y: np.ndarray,
    threshold: float,
    score: Score = "max_probability",
) -> dict[str, float]:
    """A fixed threshold on labelled rows (e.g. the test split): escalation rate and accuracy."""
    escalated = confidence(first, score) < threshold
    answer = np.where(escalated[:, None], full, first)
    return {
        "escalation_rate": _rounded(float(escalated.mean()) if len(escalated) else 0.0),
        "accuracy": _rounded(float(np.mean(np.argmax(answer, axis=1) == np.asarray(y)))),
    }


def escalation_table(
    first: np.ndarray,
    full: np.ndarray,
    y: np.ndarray,
    score: Score = "max_probability",
    rates: Sequence[float] = ESCALATION_RATES,
) -> list[dict[str, float]]:
    """Accuracy when the least confident `rate` of the rows escalate, for each rate, with the
    confidence below which rows escalate at that rate (ties broken by row order)."""
    y = np.asarray(y)
    conf = confidence(first, score)
    order = np.argsort(conf, kind="stable")
    first_right = np.argmax(first, axis=1) == y
    full_right = np.argmax(full, axis=1) == y
    n, table = len(y), []
    for rate in rates:
        k = int(round(rate * n))
        escalated = np.zeros(n, dtype=bool)
        escalated[order[:k]] = True
        right = np.where(escalated, full_right, first_right)
        table.append(
            {
                "escalation": _rounded(rate),
                "threshold": _rounded(float(conf[order[k]]) if k < n else 1.0),
                "accuracy": _rounded(float(right.mean()) if n else 0.0),
            }
        )
    return table


# ---------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class CascadeSpec:
    """What the ensemble model's metadata says about its cascade (key `cascade`)."""

    first_stage: str
    """"classic" or an ensemble member's name."""
    score: Score
    threshold: float

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any] | None) -> CascadeSpec | None:
        """The spec in a model's metadata, or None for a model trained without one."""
        entry = (metadata or {}).get("cascade")
        if not isinstance(entry, Mapping) or "first_stage" not in entry:
            return None
        score = entry.get("score", "max_probability")
        if score not in SCORES:
            raise ValueError(f"cascade score {score!r} is not one of {SCORES}")
        return cls(str(entry["first_stage"]), score, float(entry["threshold"]))


def _rounded(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        return round(value, 6)
    return value
