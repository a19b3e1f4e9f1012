"""The seven-model ensemble: weighted soft voting over members sharing one preprocessing step.

Weights are fitted on the validation split by minimising the log-loss of the weighted vote
(weights on the simplex, via a softmax parameterisation). Log-loss rather than accuracy because
it is smooth, uses the members' confidence, and a vote fitted this way is never worse in
log-loss than its best member on the data it was fitted on (the best member alone is a feasible
point). A member that cannot load at serving time is dropped and the remaining weights are
re-normalised; the model then reports itself degraded.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import joblib
import numpy as np

from models.members import MEMBER_NAMES, Member, load_member, save_member
from models.preprocessing import TabularPreprocessor
from models.schema import FeatureSchema

log = logging.getLogger(__name__)

MemberObserver = Callable[[str, float], None]
"""Called with (member name, seconds) after each member's prediction, e.g. to feed a histogram."""


def soft_vote(probas: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Weighted average of class-probability matrices (weights need not be normalised)."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    out = np.zeros_like(probas[0], dtype=np.float64)
    for wi, p in zip(w, probas):
        out += wi * p
    return out


def fit_weights(probas: Sequence[np.ndarray], y: np.ndarray) -> np.ndarray:
    """Simplex weights minimising the log-loss of `soft_vote(probas, w)` against integer labels y."""
    from scipy.optimize import minimize

    stacked = np.stack([np.clip(p, 1e-9, 1.0) for p in probas])  # (m, n, k)
    picked = stacked[:, np.arange(len(y)), y]  # (m, n): each member's P(true class)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = np.exp(theta - theta.max())
        w /= w.sum()
        mix = w @ picked  # (n,)
        value = -np.mean(np.log(mix))
        grad_w = -np.mean(picked / mix, axis=1)  # d loss / d w
        grad_theta = w * (grad_w - w @ grad_w)  # through the softmax
        return value, grad_theta

    start = np.zeros(len(probas))
    result = minimize(loss, start, jac=True, method="L-BFGS-B")
    w = np.exp(result.x - result.x.max())
    return w / w.sum()


class EnsembleModel:
    """Preprocessing + the seven members + their voting weights."""

    kind = "ensemble"

    def __init__(
        self,
        schema: FeatureSchema,
        preprocessor: TabularPreprocessor,
        members: Mapping[str, Member],
        weights: Mapping[str, float],
        unavailable: Mapping[str, str] | None = None,
    ):
        self.schema = schema
        self.preprocessor = preprocessor
        self.members = dict(members)
        self.trained_weights = dict(weights)
        self.unavailable = dict(unavailable or {})
        total = sum(weights[name] for name in self.members)
        if not self.members or total <= 0:
            raise ValueError("an ensemble needs at least one loaded member with positive weight")
        self.weights = {name: weights[name] / total for name in self.members}
        self.observer: MemberObserver | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def classes(self) -> list[str]:
        return self.schema.classes

    @property
    def degraded(self) -> bool:
        """True when a trained member could not be loaded (its weight is spread over the rest)."""
        return bool(self.unavailable)

    def enable_member_parallelism(self, threads: int) -> None:
        """Run members concurrently on large batches (the native libraries release the GIL)."""
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="member") if threads > 1 else None

    def member_probas(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        X = self.preprocessor.transform(codes)
        if self._pool is not None and len(X) >= 32:
            futures = {n: self._pool.submit(self._timed, n, m, X) for n, m in self.members.items()}
            return {n: f.result() for n, f in futures.items()}
        return {n: self._timed(n, m, X) for n, m in self.members.items()}

    def _timed(self, name: str, member: Member, X: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        p = member.predict_proba(X)
        if self.observer is not None:
            self.observer(name, time.perf_counter() - start)
        return p

    def predict_proba(self, codes: np.ndarray) -> np.ndarray:
        """Weighted soft vote of the loaded members for a code matrix."""
        probas = self.member_probas(codes)
        return soft_vote([probas[n] for n in self.members], [self.weights[n] for n in self.members])

    # ------------------------------------------------------------------ persistence
    def save(self, directory: Path, fitted: Mapping[str, object]) -> None:
        """Save preprocessing, weights and each fitted member (estimators, boosters, TFLite bytes)."""
        directory = Path(directory)
        (directory / "schema.json").write_text(self.schema.model_dump_json(indent=1))
        joblib.dump(self.preprocessor, directory / "preprocessor.joblib")
        (directory / "weights.json").write_text(json.dumps(self.trained_weights, indent=1))
        for name, model in fitted.items():
            save_member(directory, name, model)

    @classmethod
    def load(cls, directory: Path, exclude: Sequence[str] = ()) -> EnsembleModel:
        """Load every member that can be loaded; the others are listed in `unavailable`."""
        directory = Path(directory)
        schema = FeatureSchema.model_validate(json.loads((directory / "schema.json").read_text()))
        weights = json.loads((directory / "weights.json").read_text())
        members: dict[str, Member] = {}
        unavailable: dict[str, str] = {}
        for name in MEMBER_NAMES:
            if name not in weights:
                continue
            if name in exclude:
                unavailable[name] = "disabled by configuration"
                continue
            try:
                members[name] = load_member(directory, name)
            except Exception as exc:  # any loader failure degrades, never kills, the ensemble
                log.warning("ensemble member %s not loaded: %s", name, exc)
                unavailable[name] = f"{type(exc).__name__}: {exc}"
        return cls(schema, joblib.load(directory / "preprocessor.joblib"), members, weights, unavailable)
