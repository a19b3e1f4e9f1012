"""The seven-model ensemble: members sharing one preprocessing step, combined by a stacker.

Combination, chosen by measurement on the default data (full training, test split):
- a **stacked meta-learner** (multinomial logistic regression on the members' log-probabilities,
  fitted on the validation split, which no member saw) is the primary combiner: 0.899 accuracy
  against 0.886 for the best member and 0.853 for an equal-weight vote;
- **weighted soft voting**, weights fitted on the validation split by minimising log-loss on the
  simplex, is the degraded-mode combiner: when a member cannot load at serving time, the stacker
  (which needs every member's output) is set aside and the remaining weights are re-normalised.
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

from models.cascade import CascadeResult, CascadeSpec, run_cascade
from models.members import MEMBER_NAMES, Member, load_member, save_member
from models.preprocessing import TabularPreprocessor
from models.schema import FeatureSchema

log = logging.getLogger(__name__)

MemberObserver = Callable[[str, float], None]
"""Called with (member name, seconds) after each member's prediction, e.g. to feed a histogram."""

CLASSIC_STAGE = "classic"
"""The cascade first stage that is the classic model (its linear head over the shared features)."""
CLASSIC_HEAD_FILE = "cascade_classic.joblib"


def linear_head(estimator) -> tuple[np.ndarray, np.ndarray]:
    """(coef.T, intercept) of a fitted linear classifier, two rows for a binary one."""
    coef = np.asarray(estimator.coef_, dtype=np.float64)
    intercept = np.asarray(estimator.intercept_, dtype=np.float64)
    if coef.shape[0] == 1:
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    return coef.T.copy(), intercept


def soft_vote(probas: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Weighted average of class-probability matrices (weights need not be normalised)."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    out = np.zeros_like(probas[0], dtype=np.float64)
    for wi, p in zip(w, probas, strict=False):
        out += wi * p
    return out


def fit_weights(probas: Sequence[np.ndarray], y: np.ndarray) -> np.ndarray:
    """Simplex weights minimising the log-loss of `soft_vote(probas, w)` against labels y."""
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


def stack_features(probas: Sequence[np.ndarray]) -> np.ndarray:
    """Members' log-probabilities side by side: the stacker's input."""
    return np.hstack([np.log(np.clip(p, 1e-6, 1.0)) for p in probas])


def fit_stacker(probas: Sequence[np.ndarray], y: np.ndarray, C: float = 0.1):
    """A multinomial logistic regression over `stack_features`, fit on data the members did not
    see."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=2000).fit(stack_features(probas), y)


def stacker_importance(stacker, member_names: Sequence[str], n_classes: int) -> dict[str, float]:
    """Each member's share of the stacker's absolute coefficients (a readable 'weight')."""
    coef = np.abs(np.atleast_2d(stacker.coef_))
    per_member = [
        coef[:, i * n_classes : (i + 1) * n_classes].sum() for i in range(len(member_names))
    ]
    total = sum(per_member) or 1.0
    return {n: round(float(v / total), 4) for n, v in zip(member_names, per_member, strict=False)}


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
        stacker=None,
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
        self.stacker = stacker
        self.observer: MemberObserver | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.cascade: CascadeSpec | None = None
        """The dynamic-selection cascade in force (`attach_cascade`), None without one."""
        self.cascade_unavailable: str | None = None
        self._classic_head: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def classes(self) -> list[str]:
        return self.schema.classes

    @property
    def degraded(self) -> bool:
        """True when a trained member could not be loaded (its weight is spread over the rest)."""
        return bool(self.unavailable)

    def enable_member_parallelism(self, threads: int) -> None:
        """Run members concurrently on large batches (the native libraries release the GIL)."""
        self._pool = (
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="member")
            if threads > 1
            else None
        )

    def member_probas(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        return self._member_probas(self.preprocessor.transform(codes))

    def _member_probas(self, X: np.ndarray, skip: str | None = None) -> dict[str, np.ndarray]:
        members = {n: m for n, m in self.members.items() if n != skip}
        if self._pool is not None and len(X) >= 32:
            futures = {n: self._pool.submit(self._timed, n, m, X) for n, m in members.items()}
            return {n: f.result() for n, f in futures.items()}
        return {n: self._timed(n, m, X) for n, m in members.items()}

    def _timed(self, name: str, member: Member, X: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        p = member.predict_proba(X)
        if self.observer is not None:
            self.observer(name, time.perf_counter() - start)
        return p

    @property
    def combiner(self) -> str:
        return "stacking" if self.stacker is not None and not self.degraded else "soft_vote"

    def combine(self, probas: Mapping[str, np.ndarray]) -> np.ndarray:
        """Stack when every member answered; otherwise the re-normalised weighted vote."""
        ordered = [probas[n] for n in self.members]
        if self.combiner == "stacking":
            # The stacker's arithmetic in numpy: scikit-learn's predict_proba costs ~0.3 ms per
            # call.
            from models.links import softmax

            coef = np.atleast_2d(self.stacker.coef_)
            logits = stack_features(ordered) @ coef.T + self.stacker.intercept_
            if coef.shape[0] == 1:  # binary stacker
                logits = np.column_stack([np.zeros(len(logits)), logits[:, 0]])
            return softmax(logits)
        return soft_vote(ordered, [self.weights[n] for n in self.members])

    def predict_proba(self, codes: np.ndarray) -> np.ndarray:
        """Ensemble class probabilities for a code matrix."""
        return self.combine(self.member_probas(codes))

    # ------------------------------------------------------------------ dynamic selection
    def attach_cascade(self, spec: CascadeSpec | None, directory: Path | None = None) -> None:
        """Serve `spec` (from the model's metadata) through `predict_cascade`; a first stage that
        is not loaded here (a degraded ensemble) leaves the cascade off, with the reason."""
        self.cascade, self.cascade_unavailable, self._classic_head = None, None, None
        if spec is None:
            return
        if spec.first_stage == CLASSIC_STAGE:
            path = Path(directory or ".") / CLASSIC_HEAD_FILE
            if not path.exists():
                self.cascade_unavailable = f"first stage classic: {CLASSIC_HEAD_FILE} missing"
                return
            self._classic_head = linear_head(joblib.load(path))
        elif spec.first_stage not in self.members:
            self.cascade_unavailable = f"first stage {spec.first_stage} is not loaded"
            return
        self.cascade = spec

    def first_stage_probas(self, X: np.ndarray) -> np.ndarray:
        """The cascade's first stage on a design matrix."""
        if self.cascade is None:
            raise RuntimeError("this ensemble has no cascade in force")
        if self._classic_head is not None:
            from models.links import softmax

            coef_t, intercept = self._classic_head
            return softmax(X.astype(np.float64) @ coef_t + intercept)
        name = self.cascade.first_stage
        return self._timed(name, self.members[name], X)

    def predict_cascade(self, codes: np.ndarray) -> CascadeResult:
        """The cascade's answer for a code matrix: the first stage on every row, the full ensemble
        (reusing the first stage's output when it is a member) on the rows it is unsure of.
        Without a cascade in force every row is the ensemble's, flagged escalated."""
        if self.cascade is None:
            return CascadeResult(self.predict_proba(codes), np.ones(len(codes), dtype=bool))
        X = self.preprocessor.transform(codes)
        first = self.cascade.first_stage

        def escalate(rows: np.ndarray, first_probas: np.ndarray) -> np.ndarray:
            if first not in self.members:  # classic first: every member is still to run
                return self.combine(self._member_probas(rows))
            return self.combine({**self._member_probas(rows, skip=first), first: first_probas})

        spec = self.cascade
        return run_cascade(X, self.first_stage_probas, escalate, spec.threshold, spec.score)

    # ------------------------------------------------------------------ persistence
    def save(
        self,
        directory: Path,
        fitted: Mapping[str, object],
        classic_head: object | None = None,
        members_from: Path | None = None,
    ) -> None:
        """Save preprocessing, weights and each fitted member (estimators, boosters, TFLite bytes).

        `classic_head`: the classic model's estimator, when the cascade's first stage is classic;
        `members_from`: a directory whose `members/` were already written by `save_member` (with
        their checked fast paths), copied instead of converting every member a second time.
        """
        directory = Path(directory)
        if classic_head is not None:
            joblib.dump(classic_head, directory / CLASSIC_HEAD_FILE)
        (directory / "schema.json").write_text(self.schema.model_dump_json(indent=1))
        joblib.dump(self.preprocessor, directory / "preprocessor.joblib")
        (directory / "weights.json").write_text(json.dumps(self.trained_weights, indent=1))
        if self.stacker is not None:
            joblib.dump(self.stacker, directory / "stacker.joblib")
        if members_from is not None:
            import shutil

            shutil.copytree(Path(members_from) / "members", directory / "members")
            return
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
        stacker_path = directory / "stacker.joblib"
        stacker = joblib.load(stacker_path) if stacker_path.exists() else None
        return cls(
            schema,
            joblib.load(directory / "preprocessor.joblib"),
            members,
            weights,
            unavailable,
            stacker,
        )
