"""Feature schema, preprocessing and combination logic, on small synthetic data (no store, no
server).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from models.classic import ClassicModel
from models.ensemble import fit_stacker, fit_weights, soft_vote, stack_features
from models.preprocessing import TabularPreprocessor
from models.schema import FeatureSchema, SchemaValidationError


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 400
    return pd.DataFrame(
        {
            "amount": np.where(rng.random(n) < 0.1, np.nan, rng.normal(100, 20, n)),
            "count": rng.integers(0, 5, n),
            "city": rng.choice(["ams", "ber", "par"], n),
            "flag": rng.choice(["1", "2", "x"], n),
        }
    )


def test_infer_kinds_ranges_and_categories(frame):
    schema = FeatureSchema.infer(frame, classes=["a", "b"])
    kinds = {f.name: f.kind for f in schema.features}
    assert kinds == {
        "amount": "numeric",
        "count": "numeric",
        "city": "categorical",
        "flag": "categorical",
    }
    city = schema.features[2]
    assert city.categories == ["ams", "ber", "par"]
    assert schema.features[0].missing_rate == pytest.approx(frame.amount.isna().mean())


def test_infer_rejects_identifier_and_mostly_numeric_columns():
    with pytest.raises(ValueError, match="identifier"):
        FeatureSchema.infer(pd.DataFrame({"id": [f"u{i}" for i in range(500)]}), classes=["a"])
    with pytest.raises(ValueError, match="unparseable"):
        FeatureSchema.infer(
            pd.DataFrame({"v": [str(i) for i in range(100)] + ["n/a"]}), classes=["a"]
        )


def test_encode_rows_matches_encode_frame(frame):
    schema = FeatureSchema.infer(frame, classes=["a"])
    rows = [
        {
            k: (
                None
                if isinstance(v, float) and math.isnan(v)
                else (v.item() if hasattr(v, "item") else v)
            )
            for k, v in r.items()
        }
        for r in frame.head(20).to_dict("records")
    ]
    np.testing.assert_array_equal(schema.encode_rows(rows), schema.encode_frame(frame.head(20)))


@pytest.mark.parametrize(
    "change, field, message",
    [
        ({"amount": "12"}, "amount", "must be a number"),
        ({"amount": True}, "amount", "must be a number"),
        ({"amount": float("inf")}, "amount", "finite"),
        ({"city": "rome"}, "city", "unknown category"),
        ({"city": 3}, "city", "must be a string"),
        ({"colour": "red"}, "colour", "unknown feature"),
    ],
)
def test_encode_rows_names_each_bad_field(frame, change, field, message):
    schema = FeatureSchema.infer(frame, classes=["a"])
    row = {**schema.example(), **change}
    with pytest.raises(SchemaValidationError) as err:
        schema.encode_rows([row], prefix="features")
    assert [(e.field, message in e.message) for e in err.value.errors] == [
        (f"features.{field}", True)
    ]


def test_missing_features_are_errors_and_null_is_missing(frame):
    schema = FeatureSchema.infer(frame, classes=["a"])
    row = schema.example()
    del row["count"]
    with pytest.raises(SchemaValidationError, match="count: missing feature"):
        schema.encode_rows([row], prefix="features")
    codes = schema.encode_rows([{**schema.example(), "amount": None, "city": None}])
    assert np.isnan(codes[0, 0]) and np.isnan(codes[0, 2])


def test_example_row_is_valid_without_recorded_means():
    schema = FeatureSchema.model_validate(
        {
            "features": [
                {"name": "amount", "kind": "numeric"},  # a hand-written schema: no statistics
                {"name": "city", "kind": "categorical", "categories": ["x", "y"]},
            ],
            "classes": ["a", "b"],
        }
    )
    row = schema.example()
    assert row == {"amount": 0.0, "city": "x"}
    assert schema.encode_rows([row]).tolist() == [[0.0, 0.0]]


def test_preprocessor_imputes_scales_and_one_hot_encodes(frame):
    schema = FeatureSchema.infer(frame, classes=["a"])
    codes = schema.encode_frame(frame)
    pre = TabularPreprocessor.for_schema(schema).fit(codes)
    X = pre.transform(codes)
    # 2 numeric + 1 missing indicator (amount) + 3 + 3 one-hot columns
    assert X.shape == (len(frame), 9) and X.dtype == np.float32
    np.testing.assert_allclose(X[:, :2].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_array_equal(X[:, 2], frame.amount.isna().to_numpy())
    np.testing.assert_array_equal(X[:, 3:6].sum(axis=1), 1)
    unseen = pre.transform(np.array([[np.nan, np.nan, np.nan, np.nan]]))
    assert unseen[0, 2] == 1 and unseen[0, 3:].sum() == 0


def test_classic_fast_path_equals_scikit_learn(frame):
    schema = FeatureSchema.infer(frame, classes=["a", "b", "c"])
    codes = schema.encode_frame(frame)
    pre = TabularPreprocessor.for_schema(schema).fit(codes)
    X = pre.transform(codes)
    y = np.arange(len(frame)) % 3
    lr = LogisticRegression(max_iter=500).fit(X, y)
    np.testing.assert_allclose(
        ClassicModel(schema, pre, lr).predict_proba(codes), lr.predict_proba(X), atol=1e-6
    )
    binary = LogisticRegression(max_iter=500).fit(X, y % 2)
    np.testing.assert_allclose(
        ClassicModel(schema, pre, binary).predict_proba(codes), binary.predict_proba(X), atol=1e-6
    )


def test_fit_weights_prefers_the_informative_member():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 2000)
    good = np.full((2000, 3), 0.1)
    good[np.arange(2000), y] = 0.8
    noise = rng.dirichlet([1, 1, 1], 2000)
    w = fit_weights([noise, good], y)
    assert w.sum() == pytest.approx(1.0) and w[1] > 0.9
    vote = soft_vote([noise, good], w)
    np.testing.assert_allclose(vote.sum(axis=1), 1.0)


def test_stacker_learns_from_members_log_probabilities():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 1000)
    informative = np.column_stack([1 - y * 0.7 - 0.1, y * 0.7 + 0.1])
    probas = [informative, rng.dirichlet([1, 1], 1000)]
    assert stack_features(probas).shape == (1000, 4)
    stacker = fit_stacker(probas, y)
    assert (stacker.predict(stack_features(probas)) == y).mean() == 1.0
