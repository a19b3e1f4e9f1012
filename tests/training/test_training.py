"""End-to-end training with --quick into the isolated model store, and the CLI's data errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.support import run_training

pytestmark = pytest.mark.slow


def test_both_models_saved_with_metadata(trained_store):
    import bentoml

    for name in ("classic", "ensemble"):
        stored = bentoml.models.get(
            trained_store[name]["tag"]
        )  # not :latest: other tests add versions
        meta = stored.info.metadata
        for key in ("schema", "classes", "metrics", "training", "libraries", "reference"):
            assert key in meta, f"{name} metadata lacks {key}"
        assert set(meta["metrics"]) == {"accuracy", "macro_f1", "log_loss"}
        assert len(meta["training"]["fingerprint"]) == 64
        assert stored.info.labels["profile"] == "quick"
    ensemble_meta = bentoml.models.get(trained_store["ensemble"]["tag"]).info.metadata
    assert len(ensemble_meta["members"]) == 7
    assert abs(sum(ensemble_meta["weights"].values()) - 1.0) < 1e-3
    assert {"float_accuracy", "int8_accuracy"} <= set(ensemble_meta["network"])


def test_loaded_models_reproduce_the_metrics_measured_before_saving(trained_store):
    """Probabilities after a store round-trip match those measured in training (log-loss to
    1e-5)."""
    import bentoml

    from models import store
    from training import data
    from training.evaluate import classification_metrics

    rows = bentoml.models.get(trained_store["classic"]["tag"]).info.metadata["training"]["rows"]
    X, y, schema = data.prepare(
        data.make_default_dataset(rows, data.DEFAULT_SEED), data.DEFAULT_TARGET
    )
    split = data.split(X, y, data.DEFAULT_SEED)
    y_test = np.array([schema.classes.index(v) for v in split.y_test])
    codes = schema.encode_frame(split.X_test)
    for name in ("classic", "ensemble"):
        model, stored = store.load(trained_store[name]["tag"])
        measured = classification_metrics(y_test, model.predict_proba(codes))
        for metric, value in stored.info.metadata["metrics"].items():
            assert measured[metric] == pytest.approx(value, abs=1e-5), (name, metric)


def test_ensemble_beats_classic_and_its_best_member(trained_store):
    classic, ensemble = trained_store["classic"]["accuracy"], trained_store["ensemble"]["accuracy"]
    assert ensemble >= classic + 0.10, (classic, ensemble)
    assert ensemble >= trained_store["ensemble"]["best_member_accuracy"]


def test_training_chooses_a_cascade_and_saves_its_spec_and_table(trained_store):
    import bentoml

    from models import store
    from models.members import MEMBER_NAMES
    from training.__main__ import summary_table

    cascade = trained_store["cascade"]
    tag = trained_store["ensemble"]["tag"]
    assert bentoml.models.get(tag).info.metadata["cascade"] == cascade  # a property of the version
    assert set(cascade["candidates"]) == {"classic", *MEMBER_NAMES}
    assert cascade["first_stage"] == min(
        cascade["candidates"], key=lambda n: cascade["candidates"][n]["expected_seconds_per_row"]
    )
    for figures in cascade["candidates"].values():
        assert set(figures["seconds_per_call"]) == {"1", "64"}
    goal, validation = cascade["goal"], cascade["validation"]
    assert goal["tolerance"] == 0.01 and validation["goal_met"]
    assert validation["accuracy"] >= validation["full_accuracy"] - goal["tolerance"] - 1e-9
    table = cascade["table"]
    assert [row["escalation"] for row in table] == [i / 10 for i in range(11)]
    assert table[0]["accuracy"] == pytest.approx(cascade["test"]["first_stage_accuracy"], abs=1e-6)
    assert table[-1]["accuracy"] == pytest.approx(trained_store["ensemble"]["accuracy"], abs=1e-5)
    assert 0.0 <= cascade["test"]["escalation_rate"] <= 1.0
    model, _ = store.load(tag)  # the loaded ensemble serves the cascade it was saved with
    assert model.cascade is not None and model.cascade.first_stage == cascade["first_stage"]
    assert model.cascade.threshold == cascade["threshold"]
    summary = summary_table(trained_store)
    assert "cascade accuracy vs escalation" in summary and f"* {cascade['first_stage']}" in summary


def test_quantized_network_close_to_float(trained_store):
    network = trained_store["network"]
    assert abs(network["int8_accuracy"] - network["float_accuracy"]) <= 0.02


def test_ensemble_without_tflite_member_is_degraded_but_predicts(trained_store, tmp_path):
    import bentoml

    from models.ensemble import EnsembleModel
    from models.members import member_path

    copy = tmp_path / "ensemble"
    shutil.copytree(bentoml.models.get(trained_store["ensemble"]["tag"]).path, copy)
    member_path(copy, "mlp_int8").write_bytes(b"not a flatbuffer")
    model = EnsembleModel.load(copy)
    assert model.degraded and "mlp_int8" in model.unavailable
    assert "mlp_int8" not in model.members and len(model.members) == 6
    assert model.combiner == "soft_vote"
    assert sum(model.weights.values()) == pytest.approx(1.0)
    codes = model.schema.encode_rows([model.schema.example()] * 3)
    proba = model.predict_proba(codes)
    assert proba.shape == (3, len(model.classes))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)


def _write(tmp_path: Path, name: str, frame: pd.DataFrame) -> Path:
    path = tmp_path / name
    frame.to_parquet(path) if name.endswith(".parquet") else frame.to_csv(path, index=False)
    return path


def _frame(n: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.normal(size=n)
    return pd.DataFrame(
        {"x": x, "colour": rng.choice(["red", "blue"], n), "label": np.where(x > 0, "pos", "neg")}
    )


@pytest.mark.parametrize(
    "name, frame, target, message",
    [
        ("no_target.csv", _frame(), "missing", "target column 'missing' not found"),
        ("one_class.csv", _frame().assign(label="same"), "label", "single class"),
        (
            "bad_values.csv",
            _frame().assign(x=lambda f: f.x.astype(object).where(f.index != 5, "oops")),
            "label",
            "unparseable values",
        ),
        ("empty.csv", None, "label", "empty"),
        ("missing.csv", "absent", "label", "not found"),
    ],
)
def test_bad_data_gives_a_clear_error(tmp_path, name, frame, target, message):
    if frame is None:
        path = tmp_path / name
        path.write_text("")
    elif isinstance(frame, str):
        path = tmp_path / name
    else:
        path = _write(tmp_path, name, frame)
    result = run_training("--data", str(path), "--target", target, "--no-save", timeout=120)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_users_own_parquet_data_trains(tmp_path):
    rng = np.random.default_rng(1)
    n = 1500
    frame = pd.DataFrame(
        {"a": rng.normal(size=n), "b": rng.uniform(size=n), "city": rng.choice(["x", "y", "z"], n)}
    )
    frame["y"] = np.where(frame.a + (frame.city == "x") > 0.5, "yes", "no")
    frame.loc[::37, "b"] = None
    path = _write(tmp_path, "own.parquet", frame)
    report = tmp_path / "report.json"
    result = run_training(
        "--data", str(path), "--target", "y", "--quick", "--no-save", "--report", str(report)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    out = json.loads(report.read_text())
    assert out["data"]["classes"] == ["no", "yes"] and out["data"]["features"] == 3
    assert out["ensemble"]["accuracy"] > 0.8
