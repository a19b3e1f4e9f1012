"""The members' fast paths (ONNX trees on onnxruntime) against their native libraries.

Tiny versions of the tree members are fitted on synthetic data shaped like the design matrix
(standardised numerics, 0/1 one-hot columns, repeated values, missing values), saved with
`save_member` and loaded both ways: the probabilities must agree within 1e-5 and the fast path
must really be the one in use. The int8 TFLite member needs TensorFlow to build and is native
anyway, so it is not fitted here.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from models import fastpath, tree_compiler  # noqa: E402
from models.members import BatchSplitMember, load_member, save_member  # noqa: E402

TOLERANCE = 1e-5
FAST = ("random_forest", "extra_trees", "hist_gradient_boosting", "xgboost", "lightgbm")


def _data(n_classes: int, missing: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 900
    X = rng.standard_normal((n, 9)).astype(np.float32)
    X[:, 5] = rng.random(n) < 0.3  # one-hot columns: LightGBM splits them at +-1e-35
    X[:, 6] = rng.random(n) < 0.5
    X[:, 7] = np.round(X[:, 7], 1)  # repeated values: thresholds fall between neighbours
    logits = X[:, :4] @ rng.standard_normal((4, n_classes)) + 0.8 * X[:, 5:6] - 0.5 * X[:, 6:7]
    y = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
    if missing:
        X[rng.random(n) < 0.08, 0] = np.nan
        X[rng.random(n) < 0.08, 3] = np.nan
    return X, y


def _fit(name: str, X: np.ndarray, y: np.ndarray):
    seed = 0
    if name == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=12, min_samples_leaf=2, random_state=seed).fit(
            X, y
        )
    if name == "extra_trees":
        from sklearn.ensemble import ExtraTreesClassifier

        return ExtraTreesClassifier(n_estimators=12, min_samples_leaf=2, random_state=seed).fit(
            X, y
        )
    if name == "hist_gradient_boosting":
        from sklearn.ensemble import HistGradientBoostingClassifier

        model = HistGradientBoostingClassifier(max_iter=25, max_leaf_nodes=15, random_state=seed)
        return model.fit(X, y)
    if name == "xgboost":
        from xgboost import XGBClassifier

        model = XGBClassifier(
            n_estimators=25, max_depth=4, tree_method="hist", n_jobs=1, random_state=seed
        )
        return model.fit(X, y).get_booster()  # training saves the Booster
    if name == "lightgbm":
        from lightgbm import LGBMClassifier

        model = LGBMClassifier(
            n_estimators=25, num_leaves=15, n_jobs=1, random_state=seed, verbose=-1
        )
        return model.fit(X, y)
    if name == "catboost":
        from catboost import CatBoostClassifier

        model = CatBoostClassifier(
            iterations=20,
            depth=4,
            thread_count=1,
            random_seed=seed,
            verbose=0,
            allow_writing_files=False,
        )
        return model.fit(X, y)
    raise ValueError(name)


def _check_rows(X: np.ndarray) -> np.ndarray:
    """The training rows, fresh rows, and values at LightGBM's zero threshold."""
    rng = np.random.default_rng(99)
    fresh = rng.standard_normal((200, X.shape[1])).astype(np.float32)
    z = np.float32(1e-35)
    edge = np.array(
        [0.0, z, -z, np.nextafter(z, np.float32(1)), np.nextafter(-z, np.float32(-1)), 1e-36],
        dtype=np.float32,
    )
    tiny = X[:48].copy()
    tiny[:, 5] = np.resize(edge, 48)
    tiny[:, 6] = np.resize(edge[::-1], 48)
    return np.concatenate([X, fresh, tiny])


@pytest.fixture(scope="module", params=[(3, True), (2, False)], ids=["3-class-with-nan", "binary"])
def saved(request, tmp_path_factory):
    """Every member fitted and saved with `save_member` into one directory."""
    n_classes, missing = request.param
    X, y = _data(n_classes, missing, seed=n_classes)
    directory = tmp_path_factory.mktemp(f"members{n_classes}")
    for name in (*FAST, "catboost"):
        save_member(directory, name, _fit(name, X, y))
    return directory, _check_rows(X), n_classes


@pytest.mark.parametrize("name", FAST)
def test_fast_path_matches_native(saved, name):
    directory, X, n_classes = saved
    assert fastpath.fast_path(directory, name).exists(), "save_member wrote no fast artifact"
    fast = load_member(directory, name, fast=True)
    native = load_member(directory, name, fast=False)
    assert fast.path_kind == "onnx"
    assert native.path_kind == "native"
    for rows in (X, X[:1], X[7:8], X[:64]):
        got, want = fast.predict_proba(rows), native.predict_proba(rows)
        assert got.shape == want.shape == (len(rows), n_classes)
        assert got.dtype == np.float64
        assert np.abs(got - want).max() <= TOLERANCE
    assert np.allclose(fast.predict_proba(X).sum(axis=1), 1.0)


def test_xgboost_uses_native_library_for_large_batches(saved):
    directory, X, _ = saved
    member = load_member(directory, "xgboost")
    assert isinstance(member, BatchSplitMember)
    small, large = X[: member.native_from_rows - 1], X[: member.native_from_rows]
    diff = np.abs(member.predict_proba(small) - member.native.predict_proba(small)).max()
    assert diff <= TOLERANCE
    assert np.array_equal(member.predict_proba(large), member.native.predict_proba(large))


def test_catboost_small_batches_run_on_the_numpy_evaluator_and_match_catboost(saved, monkeypatch):
    directory, X, n_classes = saved
    member = load_member(directory, "catboost")
    assert isinstance(member, BatchSplitMember) and member.path_kind == "numpy"
    assert not fastpath.fast_path(directory, "catboost").exists()  # built at load: nothing stored
    native = member.native
    for rows in (
        X[:1],
        X[7:8],
        X[: member.native_from_rows - 1],
        X,
    ):  # X has NaN in the 3-class case
        got = member.fast.predict_proba(rows)
        assert got.shape == (len(rows), n_classes)
        assert np.abs(got - native.predict_proba(rows)).max() <= TOLERANCE
    large = X[: member.native_from_rows]
    assert np.array_equal(member.predict_proba(large), native.predict_proba(large))
    monkeypatch.setenv(fastpath.NATIVE_ENV, "catboost")
    assert load_member(directory, "catboost").path_kind == "native"


def test_catboost_models_the_evaluator_cannot_reproduce_stay_native():
    from catboost import CatBoostClassifier

    from models import oblivious
    from models.members import CatBoostMember

    rng = np.random.default_rng(0)
    frame = [
        [float(v), str(c)]
        for v, c in zip(rng.standard_normal(200), rng.choice(list("abc"), 200), strict=True)
    ]
    y = rng.integers(0, 2, 200)
    model = CatBoostClassifier(
        iterations=5, depth=3, verbose=0, allow_writing_files=False, thread_count=1
    )
    model.fit(frame, y, cat_features=[1])
    with pytest.raises(oblivious.NotConvertible):
        oblivious.checked(CatBoostMember(model))


def test_environment_forces_native_paths(saved, monkeypatch):
    directory, _, _ = saved
    monkeypatch.setenv(fastpath.NATIVE_ENV, "1")
    assert {load_member(directory, n).path_kind for n in FAST} == {"native"}
    monkeypatch.setenv(fastpath.NATIVE_ENV, "lightgbm, extra_trees")
    kinds = {n: load_member(directory, n).path_kind for n in FAST}
    assert kinds == {n: "native" if n in ("lightgbm", "extra_trees") else "onnx" for n in FAST}
    assert load_member(directory, "lightgbm", fast=True).path_kind == "onnx"


def test_unloadable_artifact_falls_back_to_native(saved, tmp_path, caplog):
    directory, X, _ = saved
    import shutil

    copy = tmp_path / "store"
    shutil.copytree(directory, copy)
    fastpath.fast_path(copy, "random_forest").write_bytes(b"not an onnx model")
    with caplog.at_level(logging.WARNING):
        member = load_member(copy, "random_forest")
    assert member.path_kind == "native"
    assert "fast artifact not loadable" in caplog.text
    fastpath.fast_path(copy, "random_forest").unlink()
    assert load_member(copy, "random_forest").path_kind == "native"
    assert member.predict_proba(X[:2]).shape[0] == 2


def test_save_without_converter_keeps_native_only(tmp_path, monkeypatch):
    X, y = _data(3, False, seed=5)
    model = _fit("hist_gradient_boosting", X, y)
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    save_member(tmp_path, "hist_gradient_boosting", model)
    assert not fastpath.fast_path(tmp_path, "hist_gradient_boosting").exists()
    member = load_member(tmp_path, "hist_gradient_boosting")
    assert member.path_kind == "native"
    assert np.abs(member.predict_proba(X) - model.predict_proba(X)).max() == 0.0


def test_inexact_conversion_is_not_exported(tmp_path, monkeypatch, caplog):
    X, y = _data(3, False, seed=6)
    model = _fit("random_forest", X, y)
    real = tree_compiler._sklearn_forest

    def shifted(est):  # a converter bug: every threshold moved
        compiled = real(est)
        for tree in compiled.trees:
            tree.threshold = tree.threshold + 0.3
        return compiled

    monkeypatch.setattr(tree_compiler, "_sklearn_forest", shifted)
    with caplog.at_level(logging.WARNING):
        save_member(tmp_path, "random_forest", model)
    assert not fastpath.fast_path(tmp_path, "random_forest").exists()
    assert [p.name for p in (tmp_path / "members").iterdir()] == ["random_forest.joblib"]
    assert "differs from native" in caplog.text
    assert load_member(tmp_path, "random_forest").path_kind == "native"
