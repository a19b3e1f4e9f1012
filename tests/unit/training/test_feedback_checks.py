"""Retraining's checks and verdict: the signal check (real labels pass, shuffled fail), the
schema check, the holdout split and the refusal rule; the shifted generator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training import data
from training.feedback import (
    class_check,
    count_check,
    holdout_split,
    refusal_reasons,
    signal_check,
    to_frame,
)
from training.simulate import feature_dicts


@pytest.fixture(scope="module")
def labelled():
    frame = data.make_default_dataset(800, seed=7, shift=1.0)
    X, y, schema = data.prepare(frame, data.DEFAULT_TARGET)
    rows = [
        {"features": f, "label": label}
        for f, label in zip(
            feature_dicts(frame.drop(columns=[data.DEFAULT_TARGET])), y, strict=True
        )
    ]
    return rows, schema


def test_real_labels_carry_signal_and_shuffled_ones_do_not(labelled):
    rows, schema = labelled
    X, y, check = to_frame(rows, schema)
    assert check.passed
    codes = schema.encode_frame(X)
    real = signal_check(codes, y, seed=1)
    assert real.passed, real.detail
    assert real.figures["cv_accuracy"] > real.figures["majority_rate"] + 0.15
    for seed in (1, 2, 3):
        shuffled = np.random.default_rng(seed).permutation(y)
        poisoned = signal_check(codes, shuffled, seed=1)
        assert not poisoned.passed, poisoned.detail
        assert "no signal" in poisoned.detail


def test_schema_check_names_missing_and_unknown_features_and_labels(labelled):
    rows, schema = labelled
    bad = [
        {"features": {**rows[0]["features"], "extra": 1}, "label": "low"},
        {"features": {k: v for k, v in rows[1]["features"].items() if k != "age"}, "label": "x"},
    ]
    _, _, check = to_frame(bad, schema)
    assert not check.passed
    assert "age" in check.detail and "extra" in check.detail and "'x'" in check.detail


def test_count_and_class_checks():
    assert not count_check(10, 500).passed and count_check(500, 500).passed
    assert not class_check(np.array(["a"] * 50)).passed
    assert not class_check(np.array(["a"] * 50 + ["b"] * 2)).passed
    assert class_check(np.array(["a"] * 50 + ["b"] * 20)).passed


def test_holdout_is_stratified_and_seeded():
    y = np.array(["a"] * 70 + ["b"] * 30)
    train, holdout = holdout_split(y, 0.3, seed=5)
    assert len(holdout) == 30 and set(train).isdisjoint(holdout)
    assert (y[holdout] == "b").sum() == 9
    again = holdout_split(y, 0.3, seed=5)
    assert np.array_equal(again[1], holdout)


def test_refusal_rule():
    def metrics(h_parent, h_child, o_parent, o_child):
        return {
            "holdout": {"parent": h_parent, "child": h_child},
            "original_test": {"parent": o_parent, "child": o_child},
        }

    assert refusal_reasons(metrics(0.70, 0.80, 0.83, 0.81), 0.01, 0.03) == []
    assert refusal_reasons(metrics(0.70, 0.695, 0.83, 0.80), 0.01, 0.03) == []  # within both
    (reason,) = refusal_reasons(metrics(0.70, 0.68, 0.83, 0.83), 0.01, 0.03)
    assert "recent labelled holdout" in reason
    (reason,) = refusal_reasons(metrics(0.70, 0.90, 0.83, 0.79), 0.01, 0.03)
    assert "original test split" in reason
    assert len(refusal_reasons(metrics(0.7, 0.5, 0.8, 0.5), 0.01, 0.03)) == 2


def test_shift_zero_is_todays_data_and_shift_moves_labels_not_the_rest():
    base = data.make_default_dataset(3000, 42)
    pd.testing.assert_frame_equal(base, data.make_default_dataset(3000, 42, shift=0.0))
    assert data.fingerprint(base) == data.fingerprint(data.make_default_dataset(3000, 42, 0.0))
    shifted = data.make_default_dataset(3000, 42, shift=1.0)
    unchanged = [c for c in base.columns if c not in ("signal_05", data.DEFAULT_TARGET)]
    pd.testing.assert_frame_equal(base[unchanged], shifted[unchanged])
    assert (base[data.DEFAULT_TARGET] != shifted[data.DEFAULT_TARGET]).mean() > 0.1
    assert (shifted["signal_05"] > 2.5).mean() > 0.15 > (base["signal_05"] > 2.5).mean()
