"""The ensemble's half of a training run: seven members fitted, written and read back as they
are served, combined (weights and stacker, on the validation split), evaluated on the test split,
and the cascade's first stage chosen by measurement."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
from models.links import softmax
from models.members import MEMBER_NAMES, Member, load_member, save_member
from models.preprocessing import TabularPreprocessor
from models.schema import FeatureSchema
from training import cascade as cascade_mod
from training.evaluate import classification_metrics
from training.members import FittedMembers, MemberParams, fit_members


@dataclass
class Design:
    """The three splits as the models see them: design matrices and class indices."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


@dataclass
class EnsembleFit:
    """A fitted ensemble with the members it serves and the figures the report keeps."""

    ensemble: EnsembleModel
    served: dict[str, Member]
    fitted: FittedMembers
    members_dir: tempfile.TemporaryDirectory
    """The members as written (and fast paths converted) once, copied to the store on save."""
    val_probas: dict[str, np.ndarray]
    test_probas: dict[str, np.ndarray]
    weights: dict[str, float]
    importance: dict[str, float]
    metrics: dict[str, float]
    soft_vote_metrics: dict[str, float]
    members_report: dict[str, dict[str, float]]
    network_report: dict[str, Any]

    @property
    def best_member(self) -> str:
        return max(self.members_report, key=lambda n: self.members_report[n]["accuracy"])


def fit_ensemble(
    d: Design,
    schema: FeatureSchema,
    preprocessor: TabularPreprocessor,
    params: MemberParams,
    seed: int,
) -> EnsembleFit:
    """Fit the members, then the combiners on the validation split; evaluate on the test split.

    Members are evaluated through the serving loaders, so the figures describe what is served
    (the int8 network as TFLite, the tree members on their checked fast paths).
    """
    n_classes = len(schema.classes)
    fitted = fit_members(d.X_train, d.y_train, d.X_val, d.y_val, n_classes, params, seed)
    members_dir = tempfile.TemporaryDirectory(prefix="ensemble-members-")  # removed at the end,
    served = _write_and_load(Path(members_dir.name), fitted)  # or by its finaliser on failure
    val_probas = {n: m.predict_proba(d.X_val) for n, m in served.items()}
    test_probas = {n: m.predict_proba(d.X_test) for n, m in served.items()}
    weights_arr = fit_weights([val_probas[n] for n in MEMBER_NAMES], d.y_val)
    weights = {n: round(float(w), 6) for n, w in zip(MEMBER_NAMES, weights_arr, strict=False)}
    stacker = fit_stacker([val_probas[n] for n in MEMBER_NAMES], d.y_val)
    importance = stacker_importance(stacker, MEMBER_NAMES, n_classes)
    ensemble = EnsembleModel(schema, preprocessor, served, weights, stacker=stacker)
    members_report = {
        n: {
            **classification_metrics(d.y_test, test_probas[n]),
            "weight": weights[n],
            "stacker_importance": importance[n],
            "fit_seconds": round(fitted.seconds[n], 2),
        }
        for n in MEMBER_NAMES
    }
    return EnsembleFit(
        ensemble=ensemble,
        served=served,
        fitted=fitted,
        members_dir=members_dir,
        val_probas=val_probas,
        test_probas=test_probas,
        weights=weights,
        importance=importance,
        metrics=classification_metrics(d.y_test, ensemble.combine(test_probas)),
        soft_vote_metrics=classification_metrics(
            d.y_test, soft_vote([test_probas[n] for n in MEMBER_NAMES], list(weights.values()))
        ),
        members_report=members_report,
        network_report=_network_report(fitted, members_report, d),
    )


def _write_and_load(directory: Path, fitted: FittedMembers) -> dict[str, Member]:
    """Each member written (its fast path converted and checked) and loaded as serving does."""
    served = {}
    for name in MEMBER_NAMES:
        save_member(directory, name, fitted.models[name])
        served[name] = load_member(directory, name)
    return served


def _network_report(
    fitted: FittedMembers, members_report: dict[str, dict[str, float]], d: Design
) -> dict[str, Any]:
    """The network before and after int8 quantization (the served member is the int8 one)."""
    float_net = classification_metrics(d.y_test, fitted.network.predict_float(d.X_test))
    return {
        "float_accuracy": float_net["accuracy"],
        "int8_accuracy": members_report["mlp_int8"]["accuracy"],
        "tflite_bytes": len(fitted.network.tflite_int8),  # the stored `mlp_int8` member
        "epochs": fitted.network.epochs_run,
    }


def select_cascade(
    classic: ClassicModel, fit: EnsembleFit, d: Design, tolerance: float
) -> dict[str, Any]:
    """The cascade's first stage and threshold, chosen by measurement (training/cascade.py):
    every candidate's accuracy on validation and test, and its served cost per call."""
    coef_t, intercept = linear_head(classic.estimator)

    def classic_first(X: np.ndarray) -> np.ndarray:  # classic's head on the shared features
        return softmax(X.astype(np.float64) @ coef_t + intercept)

    served = fit.served
    stages = {CLASSIC_STAGE: classic_first, **{n: served[n].predict_proba for n in MEMBER_NAMES}}
    costs = cascade_mod.measure_costs(stages, d.X_test)

    def whole_ensemble(X: np.ndarray) -> np.ndarray:
        return fit.ensemble.combine({n: m.predict_proba(X) for n, m in served.items()})

    ensemble_costs = cascade_mod.measure_costs({"ensemble": whole_ensemble}, d.X_test)["ensemble"]
    return cascade_mod.choose_cascade(
        {CLASSIC_STAGE: classic_first(d.X_val), **fit.val_probas},
        {CLASSIC_STAGE: classic_first(d.X_test), **fit.test_probas},
        fit.ensemble.combine(fit.val_probas),
        fit.ensemble.combine(fit.test_probas),
        d.y_val,
        d.y_test,
        costs,
        ensemble_costs,
        MEMBER_NAMES,
        tolerance,
    )
