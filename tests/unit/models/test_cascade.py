"""The cascade (models/cascade.py) and its selection (training/cascade.py) on synthetic
probabilities with known answers; the ensemble's cascade with stub members (no store, no server)."""

from __future__ import annotations

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from models.cascade import (
    CascadeResult,
    CascadeSpec,
    confidence,
    escalation_table,
    evaluate,
    fit_threshold,
    run_cascade,
)
from models.ensemble import CLASSIC_HEAD_FILE, EnsembleModel, fit_stacker
from models.preprocessing import TabularPreprocessor
from models.schema import FeatureSchema
from training.cascade import choose_cascade


def rows_with_confidence(conf: list[float], predicted: list[int], k: int = 3) -> np.ndarray:
    """Probabilities whose largest entry is `conf[i]` at class `predicted[i]`, the rest equal."""
    out = np.empty((len(conf), k))
    for i, (c, p) in enumerate(zip(conf, predicted, strict=True)):
        out[i] = (1.0 - c) / (k - 1)
        out[i, p] = c
    return out


# Ten rows, least confident first: the first stage is wrong on the four least confident rows,
# the full ensemble is right everywhere.
CONF = [0.40, 0.45, 0.50, 0.55, 0.60, 0.70, 0.80, 0.90, 0.95, 0.99]
Y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
FIRST = rows_with_confidence(CONF, [(y + 1) % 3 if i < 4 else y for i, y in enumerate(Y)])
FULL = rows_with_confidence([0.9] * 10, list(Y))


def test_confidence_scores():
    p = np.array([[0.6, 0.3, 0.1], [0.4, 0.4, 0.2]])
    np.testing.assert_allclose(confidence(p, "max_probability"), [0.6, 0.4])
    np.testing.assert_allclose(confidence(p, "margin"), [0.3, 0.0])
    with pytest.raises(ValueError, match="unknown confidence score"):
        confidence(p, "entropy")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tolerance", "escalated", "accuracy"),
    [(0.0, 4, 1.0), (0.1, 3, 0.9), (0.25, 2, 0.8), (0.4, 0, 0.6), (1.0, 0, 0.6)],
)
def test_threshold_fit_escalates_the_fewest_rows_that_reach_the_goal(
    tolerance, escalated, accuracy
):
    fit = fit_threshold(FIRST, FULL, Y, "max_probability", tolerance)
    assert fit.escalation_rate == pytest.approx(escalated / 10)
    assert fit.accuracy == pytest.approx(accuracy)
    assert (fit.full_accuracy, fit.first_stage_accuracy, fit.goal_met) == (1.0, 0.6, True)
    # the threshold escalates exactly those rows, on these rows and as `evaluate` applies it
    assert (confidence(FIRST) < fit.threshold).sum() == escalated
    assert evaluate(FIRST, FULL, Y, fit.threshold) == {
        "escalation_rate": pytest.approx(escalated / 10),
        "accuracy": pytest.approx(accuracy),
    }
    if escalated:  # halfway between the last escalated row and the first kept one
        assert fit.threshold == pytest.approx((CONF[escalated - 1] + CONF[escalated]) / 2)


def test_threshold_fit_never_splits_tied_confidences():
    first = rows_with_confidence([0.5, 0.5, 0.9, 0.9], [1, 0, 0, 0])  # row 0 wrong, row 1 right
    full = rows_with_confidence([0.9] * 4, [0, 0, 0, 0])
    fit = fit_threshold(first, full, np.zeros(4, dtype=int), tolerance=0.0)
    assert fit.escalation_rate == 0.5  # both tied rows, not just the wrong one
    assert fit.threshold == pytest.approx(0.7)


def test_threshold_fit_can_escalate_everything_and_nothing():
    first = rows_with_confidence([1.0, 1.0], [1, 1])  # sure and always wrong
    full = rows_with_confidence([0.9, 0.9], [0, 0])
    fit = fit_threshold(first, full, np.array([0, 0]), tolerance=0.0)
    assert fit.escalation_rate == 1.0 and fit.accuracy == 1.0 and fit.threshold > 1.0
    better_first = fit_threshold(full, first, np.array([0, 0]), tolerance=0.0)
    assert better_first.escalation_rate == 0.0 and better_first.threshold == 0.0
    with pytest.raises(ValueError):
        fit_threshold(first, full, np.array([0, 0]), tolerance=-0.1)


def test_escalation_table_runs_from_first_stage_to_full_ensemble():
    table = escalation_table(FIRST, FULL, Y, rates=(0.0, 0.2, 0.4, 1.0))
    assert [row["escalation"] for row in table] == [0.0, 0.2, 0.4, 1.0]
    assert [row["accuracy"] for row in table] == [0.6, 0.8, 1.0, 1.0]
    assert table[1]["threshold"] == CONF[2]  # rows below the third-lowest confidence escalate


def test_run_cascade_sends_only_unsure_rows_with_the_first_stage_answer():
    X = np.arange(10, dtype=float)[:, None]
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def escalate(rows, first_probas):
        seen.append((rows, first_probas))
        return FULL[rows[:, 0].astype(int)]

    result = run_cascade(X, lambda X: FIRST[X[:, 0].astype(int)], escalate, threshold=0.575)
    np.testing.assert_array_equal(result.escalated, [True] * 4 + [False] * 6)
    np.testing.assert_array_equal(seen[0][0][:, 0], [0, 1, 2, 3])
    np.testing.assert_allclose(seen[0][1], FIRST[:4])
    np.testing.assert_allclose(result.probabilities[:4], FULL[:4])
    np.testing.assert_allclose(result.probabilities[4:], FIRST[4:])
    packed = result.packed()
    assert packed.shape == (10, 4) and list(packed[:, -1]) == [1.0] * 4 + [0.0] * 6
    back = CascadeResult.unpack(packed)
    np.testing.assert_array_equal(back.escalated, result.escalated)
    np.testing.assert_allclose(back.probabilities, result.probabilities)
    nothing = run_cascade(X, lambda X: FIRST, escalate, threshold=0.0)
    assert not nothing.escalated.any() and len(seen) == 1  # no call for no rows
    with pytest.raises(ValueError):
        CascadeResult.unpack(np.zeros(3))


def test_spec_from_metadata():
    assert CascadeSpec.from_metadata(None) is None
    assert CascadeSpec.from_metadata({"metrics": {}}) is None
    spec = CascadeSpec.from_metadata(
        {"cascade": {"first_stage": "lightgbm", "score": "margin", "threshold": 0.4, "table": []}}
    )
    assert spec == CascadeSpec("lightgbm", "margin", 0.4)
    with pytest.raises(ValueError, match="score"):
        CascadeSpec.from_metadata({"cascade": {"first_stage": "x", "score": "?", "threshold": 1}})


def test_choose_cascade_takes_the_lowest_expected_cost_not_the_lowest_escalation():
    # "slow" needs no escalation but costs 1 ms; "fast" escalates 40 % at 0.1 ms: 0.1 + 0.4 x (1.1
    # - 0.1) = 0.5 ms < 1 ms. Classic, not a member, pays the whole ensemble on escalation, and
    # still wins at 0.01 + 0.4 x 1.1 = 0.45 ms.
    val = {"fast": FIRST, "slow": FULL, "classic": FIRST}
    costs = {
        "fast": {"1": 0.0001, "64": 0.001},
        "slow": {"1": 0.001, "64": 0.01},
        "classic": {"1": 0.00001, "64": 0.0001},
    }
    out = choose_cascade(
        val, val, FULL, FULL, Y, Y, costs, {"1": 0.0011, "64": 0.02}, ("fast", "slow"), 0.0
    )
    assert out["first_stage"] == "classic"
    assert out["candidates"]["fast"]["expected_seconds_per_row"] == pytest.approx(0.0005)
    assert out["candidates"]["slow"]["expected_seconds_per_row"] == pytest.approx(0.001)
    assert out["candidates"]["classic"]["expected_seconds_per_row"] == pytest.approx(0.00045)
    out = choose_cascade(
        {"fast": FIRST, "slow": FULL},
        {"fast": FIRST, "slow": FULL},
        FULL,
        FULL,
        Y,
        Y,
        costs,
        {"1": 0.0011, "64": 0.02},
        ("fast", "slow"),
        0.0,
    )
    assert out["first_stage"] == "fast"
    assert out["test"] == {
        "escalation_rate": 0.4,
        "accuracy": 1.0,
        "ensemble_accuracy": 1.0,
        "first_stage_accuracy": 0.6,
    }
    assert [row["escalation"] for row in out["table"]] == [i / 10 for i in range(11)]
    assert out["validation"]["escalation_rate"] == 0.4 and out["goal"]["tolerance"] == 0.0


# ---------------------------------------------------------------------------- the model's cascade
class StubMember:
    """Fixed probabilities per row (by the row's first feature); counts rows it was asked for."""

    path_kind = "native"

    def __init__(self, name: str, table: np.ndarray):
        self.name, self.table, self.rows = name, table, 0

    def predict_proba(self, X):
        self.rows += len(X)
        return self.table[X[:, 0].astype(int)]


@pytest.fixture
def ensemble() -> EnsembleModel:
    frame = pd.DataFrame({"i": np.arange(10, dtype=float)})
    schema = FeatureSchema.infer(frame, classes=["a", "b", "c"])
    pre = TabularPreprocessor.for_schema(schema).fit(schema.encode_frame(frame))
    pre.transform = lambda codes: np.asarray(codes, dtype=np.float32)  # rows keep their index
    members = {"first": StubMember("first", FIRST), "other": StubMember("other", FULL)}
    stacker = fit_stacker([FIRST, FULL], Y)
    model = EnsembleModel(schema, pre, members, {"first": 0.5, "other": 0.5}, stacker=stacker)
    return model


def test_ensemble_cascade_answers_confident_rows_with_the_first_stage(ensemble):
    codes = np.arange(10, dtype=float)[:, None]
    full = ensemble.predict_proba(codes)
    first, other = ensemble.members["first"], ensemble.members["other"]
    first.rows = other.rows = 0
    ensemble.attach_cascade(CascadeSpec("first", "max_probability", 0.575))
    result = ensemble.predict_cascade(codes)
    np.testing.assert_array_equal(result.escalated, [True] * 4 + [False] * 6)
    np.testing.assert_allclose(result.probabilities[:4], full[:4])  # exactly the ensemble's
    np.testing.assert_allclose(result.probabilities[4:], FIRST[4:])
    assert (first.rows, other.rows) == (10, 4)  # the first stage is not run again on escalation


def test_ensemble_cascade_off_without_its_first_stage(ensemble, tmp_path):
    codes = np.arange(3, dtype=float)[:, None]
    ensemble.attach_cascade(CascadeSpec("catboost", "max_probability", 0.5))
    assert ensemble.cascade is None and "catboost is not loaded" in ensemble.cascade_unavailable
    result = ensemble.predict_cascade(codes)  # every row the ensemble's, flagged escalated
    assert result.escalated.all()
    np.testing.assert_allclose(result.probabilities, ensemble.predict_proba(codes))
    ensemble.attach_cascade(CascadeSpec("classic", "max_probability", 0.5), tmp_path)
    assert ensemble.cascade is None and CLASSIC_HEAD_FILE in ensemble.cascade_unavailable
    ensemble.attach_cascade(None)
    assert ensemble.cascade is None and ensemble.cascade_unavailable is None


def test_ensemble_cascade_with_classic_first(ensemble, tmp_path):
    X = np.arange(10, dtype=float)[:, None]
    head = LogisticRegression().fit(X, (X[:, 0] > 4).astype(int) + (X[:, 0] > 7))
    joblib.dump(head, tmp_path / CLASSIC_HEAD_FILE)
    ensemble.attach_cascade(CascadeSpec("classic", "max_probability", 0.6), tmp_path)
    result = ensemble.predict_cascade(X)
    kept = ~result.escalated
    np.testing.assert_allclose(result.probabilities[kept], head.predict_proba(X)[kept], atol=1e-9)
    full = ensemble.predict_proba(X)
    np.testing.assert_allclose(result.probabilities[~kept], full[~kept])
