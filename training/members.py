"""Fit the seven ensemble members on the shared design matrix (integer labels 0..k-1)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from training.quantize import NetworkResult, train_quantized_network

log = logging.getLogger(__name__)


class MemberParams(BaseModel):
    """Sizes of the members; `quick()` shrinks them for tests and CI."""

    forest_trees: int = 100
    forest_min_samples_leaf: int = 3
    forest_max_leaf_nodes: int = 1024
    """Caps each forest tree: unbounded trees reach millions of nodes, which makes every
    prediction a cache miss (and the model files hundreds of MB) for little accuracy."""
    boosting_rounds: int = 400
    learning_rate: float = 0.08
    network_epochs: int = 40
    threads: int = Field(default_factory=lambda: _env_threads(2))
    """Threads of the forests, XGBoost, LightGBM and CatBoost: $TRAINING_THREADS when set
    (the retraining job sets it to keep serving's cores free), else 2."""

    @classmethod
    def quick(cls) -> MemberParams:
        return cls(forest_trees=30, boosting_rounds=60, learning_rate=0.2, network_epochs=8)


def _env_threads(default: int) -> int:
    try:
        return max(int(os.environ.get("TRAINING_THREADS", default)), 1)
    except ValueError:
        return default


@dataclass
class FittedMembers:
    models: dict[str, object]  # what `models.members.save_member` stores
    seconds: dict[str, float]
    network: NetworkResult


def fit_members(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    params: MemberParams,
    seed: int,
) -> FittedMembers:
    """Fit the six library members one after the other (timed), then the int8 network."""
    makers = _makers(X_train, y_train, X_val, y_val, n_classes, params, seed)
    models: dict[str, object] = {}
    seconds: dict[str, float] = {}
    for name, make in makers.items():
        start = time.perf_counter()
        models[name] = make()
        seconds[name] = time.perf_counter() - start
        log.info("fitted %s in %.1fs", name, seconds[name])

    start = time.perf_counter()
    network = train_quantized_network(
        X_train, y_train, X_val, y_val, n_classes, epochs=params.network_epochs, seed=seed
    )
    seconds["mlp_int8"] = time.perf_counter() - start
    models["mlp_int8"] = network.tflite_int8
    return FittedMembers(models=models, seconds=seconds, network=network)


def _makers(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    p: MemberParams,
    seed: int,
) -> dict[str, Callable[[], object]]:
    """Each library member's fit, as `save_member` stores it (XGBoost: the booster)."""
    from catboost import CatBoostClassifier
    from lightgbm import LGBMClassifier
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )
    from xgboost import XGBClassifier

    def forest(cls: Any, max_features: str | float) -> Callable[[], object]:
        return lambda: cls(
            n_estimators=p.forest_trees,
            min_samples_leaf=p.forest_min_samples_leaf,
            max_leaf_nodes=p.forest_max_leaf_nodes,
            max_features=max_features,
            n_jobs=p.threads,
            random_state=seed,
        ).fit(X_train, y_train)

    return {
        "random_forest": forest(RandomForestClassifier, "sqrt"),
        "extra_trees": forest(ExtraTreesClassifier, 0.5),
        "hist_gradient_boosting": lambda: HistGradientBoostingClassifier(
            max_iter=p.boosting_rounds,
            learning_rate=p.learning_rate,
            max_leaf_nodes=31,
            early_stopping=True,
            validation_fraction=0.1,
            n_iter_no_change=20,
            random_state=seed,
        ).fit(X_train, y_train),
        "xgboost": lambda: (
            XGBClassifier(
                n_estimators=p.boosting_rounds,
                learning_rate=p.learning_rate,
                max_depth=6,
                tree_method="hist",
                n_jobs=p.threads,
                random_state=seed,
                early_stopping_rounds=30,
                eval_metric="mlogloss" if n_classes > 2 else "logloss",
            )
            .fit(X_train, y_train, eval_set=[(X_val, y_val)], verbose=False)
            .get_booster()
        ),
        "lightgbm": lambda: _fit_lightgbm(LGBMClassifier, X_train, y_train, X_val, y_val, p, seed),
        "catboost": lambda: CatBoostClassifier(
            iterations=p.boosting_rounds,
            learning_rate=p.learning_rate * 1.5,
            depth=6,
            thread_count=p.threads,
            random_seed=seed,
            verbose=0,
            allow_writing_files=False,
            early_stopping_rounds=30,
        ).fit(X_train, y_train, eval_set=(X_val, y_val)),
    }


def _fit_lightgbm(
    cls: Any,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    p: MemberParams,
    seed: int,
) -> Any:
    import lightgbm as lgb

    return cls(
        n_estimators=p.boosting_rounds,
        learning_rate=p.learning_rate,
        num_leaves=31,
        n_jobs=p.threads,
        random_state=seed,
        verbose=-1,
    ).fit(
        X_train,
        y_train,
        eval_set=[(X_val, y_val)],
        callbacks=[lgb.early_stopping(30, verbose=False)],
    )
