"""The training pipeline: data -> split -> preprocessing -> classic + seven members -> weights ->
held-out evaluation -> both models saved, with their metrics, to the BentoML model store."""

from __future__ import annotations

import logging
import platform
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from models.cascade import DEFAULT_TOLERANCE
from models.classic import ClassicModel
from models.ensemble import (
    CLASSIC_STAGE,
    EnsembleModel,
    fit_stacker,
    fit_weights,
    linear_head,
    soft_vote,
    stacker_importance,
)
from models.members import MEMBER_NAMES, load_member
from models.preprocessing import TabularPreprocessor
from training import cascade as cascade_mod
from training import data as data_mod
from training.evaluate import classification_metrics, reference_statistics
from training.members import MemberParams, fit_members

log = logging.getLogger(__name__)

LIBRARIES = (
    "bentoml",
    "scikit-learn",
    "xgboost",
    "lightgbm",
    "catboost",
    "tensorflow-cpu",
    "ai-edge-litert",
    "numpy",
    "pandas",
)


class TrainingOptions(BaseModel):
    """What `python -m training` was asked to do."""

    data: Path | None = None
    target: str = data_mod.DEFAULT_TARGET
    rows: int | None = None
    seed: int = data_mod.DEFAULT_SEED
    quick: bool = False
    save: bool = True
    cascade_tolerance: float = Field(DEFAULT_TOLERANCE, ge=0.0, le=1.0)
    """The cascade's goal: validation accuracy at most this far below the ensemble's (0.01 = one
    point), at the lowest escalation rate (training/cascade.py)."""


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            pass
    return versions


def load_training_table(options: TrainingOptions) -> tuple[pd.DataFrame, str]:
    if options.data is None:
        rows = options.rows or (8_000 if options.quick else data_mod.DEFAULT_ROWS)
        return data_mod.make_default_dataset(
            rows, options.seed
        ), f"default(rows={rows}, seed={options.seed})"
    frame = data_mod.load_table(options.data)
    if options.rows:
        frame = frame.head(options.rows)
    return frame, str(options.data)


@dataclass
class ExtraRows:
    """Rows added to the original training data (retraining from feedback): raw features in the
    schema's columns and their labels, split between the training and validation splits (the
    original test split stays untouched, so parent and child are judged on the same rows)."""

    X_train: pd.DataFrame
    y_train: np.ndarray
    X_val: pd.DataFrame
    y_val: np.ndarray
    repeat: int = 1
    """Each extra training row counts this many times (recent rows are few next to the
    original set; repetition lets them weigh in without dropping original data)."""


@dataclass
class Trained:
    """A finished fit, not yet saved: what `save_models` writes and the retraining judges."""

    classic: ClassicModel
    ensemble: EnsembleModel
    fitted_models: dict[str, object]
    members_dir: tempfile.TemporaryDirectory
    common_meta: dict[str, Any]
    ensemble_meta: dict[str, Any]
    labels: dict[str, str]
    report: dict[str, Any]
    schema: Any
    codes_test: np.ndarray
    y_test: np.ndarray
    classic_metrics: dict[str, float]
    started: float


def train(options: TrainingOptions) -> dict[str, Any]:
    """Train, evaluate and (optionally) save both models; returns the report."""
    trained = fit(options)
    try:
        if options.save:
            save_models(trained)
    finally:
        trained.members_dir.cleanup()
    trained.report["training_seconds"] = round(time.perf_counter() - trained.started, 1)
    return trained.report


def save_models(trained: Trained, ensemble_only: bool = False) -> None:
    """Write the ensemble (and classic unless `ensemble_only`) to the model store; the tags go
    into the report."""
    from models import store

    if not ensemble_only:
        trained.report["classic"]["tag"] = store.save_classic(
            trained.classic,
            {
                **trained.common_meta,
                "kind": "classic",
                "estimator": "LogisticRegression",
                "metrics": trained.classic_metrics,
            },
            trained.labels,
        )
    cascade = trained.ensemble_meta["cascade"]
    trained.report["ensemble"]["tag"] = store.save_ensemble(
        trained.ensemble,
        trained.fitted_models,
        {**trained.common_meta, **trained.ensemble_meta},
        trained.labels,
        classic_head=trained.classic.estimator if cascade["first_stage"] == CLASSIC_STAGE else None,
        members_from=Path(trained.members_dir.name),
    )


def fit(options: TrainingOptions, extra: ExtraRows | None = None) -> Trained:
    """Train and evaluate both models (nothing saved); `extra` rows join the training and
    validation splits. The caller cleans up `members_dir` (after saving)."""
    started = time.perf_counter()
    frame, source = load_training_table(options)
    X, y, schema = data_mod.prepare(frame, options.target)
    splits = data_mod.split(X, y, options.seed)
    X_train_raw, X_val_raw = splits.X_train, splits.X_val
    y_train_raw, y_val_raw = np.asarray(splits.y_train), np.asarray(splits.y_val)
    if extra is not None:
        repeated = [schema.coerce_frame(extra.X_train)] * max(int(extra.repeat), 1)
        X_train_raw = pd.concat([X_train_raw, *repeated], ignore_index=True)
        y_train_raw = np.concatenate(
            [y_train_raw, *[np.asarray(extra.y_train)] * max(int(extra.repeat), 1)]
        )
        X_val_raw = pd.concat([X_val_raw, schema.coerce_frame(extra.X_val)], ignore_index=True)
        y_val_raw = np.concatenate([y_val_raw, np.asarray(extra.y_val)])
    class_index = {c: i for i, c in enumerate(schema.classes)}
    y_train = np.array([class_index[v] for v in y_train_raw])
    y_val = np.array([class_index[v] for v in y_val_raw])
    y_test = np.array([class_index[v] for v in splits.y_test])

    codes_train = schema.encode_frame(X_train_raw)
    codes_val = schema.encode_frame(X_val_raw)
    codes_test = schema.encode_frame(splits.X_test)
    preprocessor = TabularPreprocessor.for_schema(schema).fit(codes_train)
    X_train, X_val, X_test = (
        preprocessor.transform(c) for c in (codes_train, codes_val, codes_test)
    )

    # Classic -----------------------------------------------------------------------------
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    classic = ClassicModel(
        schema, preprocessor, LogisticRegression(C=1.0, max_iter=2000).fit(X_train, y_train)
    )
    classic_seconds = time.perf_counter() - t0
    classic_metrics = classification_metrics(y_test, classic.predict_proba(codes_test))

    # Ensemble ----------------------------------------------------------------------------
    params = MemberParams.quick() if options.quick else MemberParams()
    fitted = fit_members(X_train, y_train, X_val, y_val, len(schema.classes), params, options.seed)
    # Evaluate members through the serving loaders, so the figures describe what is served
    # (the int8 network as TFLite, the tree members on their checked fast paths); the members
    # are written (and their fast paths converted) once, here, and copied to the store.
    from models.members import save_member

    members_dir = tempfile.TemporaryDirectory(prefix="ensemble-members-")  # removed at the end,
    tmp = Path(members_dir.name)  # or by its finaliser when training fails
    served = {}
    for name in MEMBER_NAMES:
        save_member(tmp, name, fitted.models[name])
        served[name] = load_member(tmp, name)
    val_probas = {n: m.predict_proba(X_val) for n, m in served.items()}
    test_probas = {n: m.predict_proba(X_test) for n, m in served.items()}
    weights_arr = fit_weights([val_probas[n] for n in MEMBER_NAMES], y_val)
    weights = {n: round(float(w), 6) for n, w in zip(MEMBER_NAMES, weights_arr, strict=False)}
    stacker = fit_stacker([val_probas[n] for n in MEMBER_NAMES], y_val)
    importance = stacker_importance(stacker, MEMBER_NAMES, len(schema.classes))
    ensemble = EnsembleModel(schema, preprocessor, served, weights, stacker=stacker)
    ensemble_metrics = classification_metrics(y_test, ensemble.combine(test_probas))
    soft_vote_metrics = classification_metrics(
        y_test, soft_vote([test_probas[n] for n in MEMBER_NAMES], list(weights.values()))
    )
    members_report = {
        n: {
            **classification_metrics(y_test, test_probas[n]),
            "weight": weights[n],
            "stacker_importance": importance[n],
            "fit_seconds": round(fitted.seconds[n], 2),
        }
        for n in MEMBER_NAMES
    }
    float_net = classification_metrics(y_test, fitted.network.predict_float(X_test))
    network_report = {
        "float_accuracy": float_net["accuracy"],
        "int8_accuracy": members_report["mlp_int8"]["accuracy"],
        "tflite_bytes": len(fitted.models["mlp_int8"]),
        "epochs": fitted.network.epochs_run,
    }
    best_member = max(members_report, key=lambda n: members_report[n]["accuracy"])

    # Dynamic selection: the cascade's first stage and threshold, chosen by measurement --------
    from models.links import softmax

    coef_t, intercept = linear_head(classic.estimator)

    def classic_first(X: np.ndarray) -> np.ndarray:  # classic's head on the shared features
        return softmax(X.astype(np.float64) @ coef_t + intercept)

    stages = {CLASSIC_STAGE: classic_first, **{n: served[n].predict_proba for n in MEMBER_NAMES}}
    costs = cascade_mod.measure_costs(stages, X_test)
    ensemble_costs = cascade_mod.measure_costs(
        {
            "ensemble": lambda X: ensemble.combine(
                {n: m.predict_proba(X) for n, m in served.items()}
            )
        },
        X_test,
    )["ensemble"]
    cascade = cascade_mod.choose_cascade(
        {CLASSIC_STAGE: classic_first(X_val), **val_probas},
        {CLASSIC_STAGE: classic_first(X_test), **test_probas},
        ensemble.combine(val_probas),
        ensemble.combine(test_probas),
        y_val,
        y_test,
        costs,
        ensemble_costs,
        MEMBER_NAMES,
        options.cascade_tolerance,
    )

    fingerprint = data_mod.fingerprint(frame)
    common_meta = {
        "schema": schema.model_dump(exclude_none=True),
        "classes": schema.classes,
        "target": options.target,
        "training": {
            "source": source,
            "fingerprint": fingerprint,
            "rows": int(len(X)),
            "split": {"train": len(y_train), "validation": len(y_val), "test": len(y_test)},
            "seed": options.seed,
            "quick": options.quick,
        },
        "reference": reference_statistics(codes_train, schema),
        "libraries": library_versions(),
    }
    labels = {
        "data": "default" if options.data is None else "custom",
        "profile": "quick" if options.quick else "full",
        "fingerprint": fingerprint[:12],
    }
    report: dict[str, Any] = {
        "data": {
            "source": source,
            "rows": int(len(X)),
            "features": len(schema.features),
            "classes": schema.classes,
        },
        "classic": {**classic_metrics, "fit_seconds": round(classic_seconds, 2)},
        "ensemble": {
            **ensemble_metrics,
            "combiner": "stacking",
            "soft_vote": soft_vote_metrics,
            "best_member": best_member,
            "best_member_accuracy": members_report[best_member]["accuracy"],
        },
        "members": members_report,
        "network": network_report,
        "weights": weights,
        "cascade": cascade,
    }
    importance_started = time.perf_counter()
    feature_importance = permutation_importance(ensemble, codes_test, y_test, schema, options.seed)
    importance_seconds = time.perf_counter() - importance_started
    report["feature_importance"] = feature_importance
    report["feature_importance_seconds"] = round(importance_seconds, 2)
    ensemble_meta = {
        "kind": "ensemble",
        "combination": "stacking: logistic regression on member log-probabilities "
        "(validation split); "
        "degraded: weighted soft vote, weights fitted on validation log-loss",
        "metrics": ensemble_metrics,
        "members": members_report,
        "weights": weights,
        "stacker_importance": importance,
        "network": network_report,
        "cascade": cascade,
        "feature_importance": feature_importance,
    }
    return Trained(
        classic=classic,
        ensemble=ensemble,
        fitted_models=fitted.models,
        members_dir=members_dir,
        common_meta=common_meta,
        ensemble_meta=ensemble_meta,
        labels=labels,
        report=report,
        schema=schema,
        codes_test=codes_test,
        y_test=y_test,
        classic_metrics=classic_metrics,
        started=started,
    )


def permutation_importance(
    model: Any,
    codes: np.ndarray,
    y: np.ndarray,
    schema: Any,
    seed: int,
    max_rows: int = 1000,
) -> dict[str, float]:
    """Permutation importance of `model` over the schema's input features, normalised to sum 1.

    On at most `max_rows` rows: each feature's column is shuffled (seeded) and the increase of
    the log-loss measured; all shuffled copies go through the model in one call. Negative
    increases count as 0. Monitoring compares versions by the rank correlation of these.
    """
    rng = np.random.default_rng(seed)
    if len(codes) > max_rows:
        rows = rng.choice(len(codes), max_rows, replace=False)
        codes, y = codes[rows], y[rows]
    n, k = codes.shape
    stacked = np.repeat(codes[np.newaxis], k + 1, axis=0)  # copy 0 is the unshuffled baseline
    for j in range(k):
        stacked[j + 1, :, j] = codes[rng.permutation(n), j]
    proba = np.asarray(model.predict_proba(stacked.reshape(-1, k)), dtype=np.float64)
    proba = np.clip(proba.reshape(k + 1, n, -1), 1e-15, 1.0)
    losses = -np.log(proba[:, np.arange(n), y]).mean(axis=1)
    increase = np.clip(losses[1:] - losses[0], 0.0, None)
    total = float(increase.sum())
    return {
        f.name: round(float(v) / total, 6) if total > 0 else 0.0
        for f, v in zip(schema.features, increase, strict=True)
    }
