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
from models.ensemble import CLASSIC_STAGE, EnsembleModel
from models.preprocessing import TabularPreprocessor
from models.schema import FeatureSchema
from training import data as data_mod
from training.ensemble_fit import Design, EnsembleFit, fit_ensemble, select_cascade
from training.evaluate import (
    classification_metrics,
    permutation_importance,
    reference_statistics,
)
from training.members import MemberParams

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
class EncodedSplits:
    """One run's table after the split: schema codes and class indices of each split."""

    fingerprint: str
    """Of the table as loaded (`data.fingerprint`), recorded with the models."""
    source: str
    schema: FeatureSchema
    n_rows: int
    codes_train: np.ndarray
    codes_val: np.ndarray
    codes_test: np.ndarray
    y_train: np.ndarray
    y_val: np.ndarray
    y_test: np.ndarray


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
    schema: FeatureSchema
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
    data = encode_splits(options, extra)
    preprocessor = TabularPreprocessor.for_schema(data.schema).fit(data.codes_train)
    X_train, X_val, X_test = (
        preprocessor.transform(c) for c in (data.codes_train, data.codes_val, data.codes_test)
    )
    design = Design(X_train, data.y_train, X_val, data.y_val, X_test, data.y_test)
    classic, classic_seconds = _fit_classic(data.schema, preprocessor, design)
    classic_metrics = classification_metrics(data.y_test, classic.predict_proba(data.codes_test))
    params = MemberParams.quick() if options.quick else MemberParams()
    ens = fit_ensemble(design, data.schema, preprocessor, params, options.seed)
    cascade = select_cascade(classic, ens, design, options.cascade_tolerance)
    report = _report(data, classic_metrics, classic_seconds, ens, cascade)
    importance_started = time.perf_counter()
    feature_importance = permutation_importance(
        ens.ensemble, data.codes_test, data.y_test, data.schema, options.seed
    )
    report["feature_importance"] = feature_importance
    report["feature_importance_seconds"] = round(time.perf_counter() - importance_started, 2)
    return Trained(
        classic=classic,
        ensemble=ens.ensemble,
        fitted_models=ens.fitted.models,
        members_dir=ens.members_dir,
        common_meta=_common_meta(options, data),
        ensemble_meta=_ensemble_meta(ens, cascade, feature_importance),
        labels=_labels(options, data),
        report=report,
        schema=data.schema,
        codes_test=data.codes_test,
        y_test=data.y_test,
        classic_metrics=classic_metrics,
        started=started,
    )


def encode_splits(options: TrainingOptions, extra: ExtraRows | None = None) -> EncodedSplits:
    """The table loaded, its schema inferred, split (seeded), `extra` rows added, encoded."""
    frame, source = load_training_table(options)
    X, y, schema = data_mod.prepare(frame, options.target)
    splits = data_mod.split(X, y, options.seed)
    X_train, X_val = splits.X_train, splits.X_val
    y_train, y_val = np.asarray(splits.y_train), np.asarray(splits.y_val)
    if extra is not None:
        repeat = max(int(extra.repeat), 1)
        added = [schema.coerce_frame(extra.X_train)] * repeat
        X_train = pd.concat([X_train, *added], ignore_index=True)
        y_train = np.concatenate([y_train, *[np.asarray(extra.y_train)] * repeat])
        X_val = pd.concat([X_val, schema.coerce_frame(extra.X_val)], ignore_index=True)
        y_val = np.concatenate([y_val, np.asarray(extra.y_val)])
    class_index = {c: i for i, c in enumerate(schema.classes)}

    def indices(labels: Any) -> np.ndarray:
        return np.array([class_index[v] for v in labels])

    return EncodedSplits(
        fingerprint=data_mod.fingerprint(frame),
        source=source,
        schema=schema,
        n_rows=int(len(X)),
        codes_train=schema.encode_frame(X_train),
        codes_val=schema.encode_frame(X_val),
        codes_test=schema.encode_frame(splits.X_test),
        y_train=indices(y_train),
        y_val=indices(y_val),
        y_test=indices(splits.y_test),
    )


def _fit_classic(
    schema: FeatureSchema, preprocessor: TabularPreprocessor, d: Design
) -> tuple[ClassicModel, float]:
    """The logistic regression on the shared design matrix, and its fit time in seconds."""
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    estimator = LogisticRegression(C=1.0, max_iter=2000).fit(d.X_train, d.y_train)
    return ClassicModel(schema, preprocessor, estimator), time.perf_counter() - t0


def _common_meta(options: TrainingOptions, data: EncodedSplits) -> dict[str, Any]:
    """The metadata both models keep: schema, training data and split, reference statistics."""
    return {
        "schema": data.schema.model_dump(exclude_none=True),
        "classes": data.schema.classes,
        "target": options.target,
        "training": {
            "source": data.source,
            "fingerprint": data.fingerprint,
            "rows": data.n_rows,
            "split": {
                "train": len(data.y_train),
                "validation": len(data.y_val),
                "test": len(data.y_test),
            },
            "seed": options.seed,
            "quick": options.quick,
        },
        "reference": reference_statistics(data.codes_train, data.schema),
        "libraries": library_versions(),
    }


def _labels(options: TrainingOptions, data: EncodedSplits) -> dict[str, str]:
    return {
        "data": "default" if options.data is None else "custom",
        "profile": "quick" if options.quick else "full",
        "fingerprint": data.fingerprint[:12],
    }


def _report(
    data: EncodedSplits,
    classic_metrics: dict[str, float],
    classic_seconds: float,
    ens: EnsembleFit,
    cascade: dict[str, Any],
) -> dict[str, Any]:
    best = ens.best_member
    return {
        "data": {
            "source": data.source,
            "rows": data.n_rows,
            "features": len(data.schema.features),
            "classes": data.schema.classes,
        },
        "classic": {**classic_metrics, "fit_seconds": round(classic_seconds, 2)},
        "ensemble": {
            **ens.metrics,
            "combiner": "stacking",
            "soft_vote": ens.soft_vote_metrics,
            "best_member": best,
            "best_member_accuracy": ens.members_report[best]["accuracy"],
        },
        "members": ens.members_report,
        "network": ens.network_report,
        "weights": ens.weights,
        "cascade": cascade,
    }


def _ensemble_meta(
    ens: EnsembleFit, cascade: dict[str, Any], feature_importance: dict[str, float]
) -> dict[str, Any]:
    return {
        "kind": "ensemble",
        "combination": "stacking: logistic regression on member log-probabilities "
        "(validation split); "
        "degraded: weighted soft vote, weights fitted on validation log-loss",
        "metrics": ens.metrics,
        "members": ens.members_report,
        "weights": ens.weights,
        "stacker_importance": ens.importance,
        "network": ens.network_report,
        "cascade": cascade,
        "feature_importance": feature_importance,
    }
