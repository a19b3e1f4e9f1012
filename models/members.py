"""The seven ensemble members as loaded for serving: each saved in its library's own format.

Every member exposes `predict_proba(X) -> (n, n_classes)` on the float32 design matrix, with
classes in schema order, and runs single-threaded: the ensemble service parallelises by batching,
and thread pools spun up per call cost more than they save at serving batch sizes.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

SKLEARN_MEMBERS = ("random_forest", "extra_trees", "hist_gradient_boosting")
MEMBER_NAMES = (*SKLEARN_MEMBERS, "xgboost", "lightgbm", "catboost", "mlp_int8")
"""The seven members, in the order they are stored and reported."""


class Member(Protocol):
    name: str

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...


def _two_columns(p: np.ndarray) -> np.ndarray:
    """Binary models return P(class 1) only; make it (n, 2)."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim == 1:
        return np.column_stack([1.0 - p, p])
    return p


class SklearnMember:
    def __init__(self, name: str, estimator: Any):
        self.name = name
        self.estimator = estimator
        if hasattr(estimator, "n_jobs"):
            estimator.n_jobs = 1

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.estimator.predict_proba(X)


class XGBoostMember:
    name = "xgboost"

    def __init__(self, booster: Any):
        self.booster = booster
        booster.set_param({"nthread": 1})

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return _two_columns(self.booster.inplace_predict(X))


class LightGBMMember:
    name = "lightgbm"

    def __init__(self, booster: Any):
        self.booster = booster

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return _two_columns(self.booster.predict(X, num_threads=1))


class CatBoostMember:
    name = "catboost"

    def __init__(self, model: Any):
        self.model = model

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(X, thread_count=1)


class TFLiteMember:
    """The int8-quantized network on the LiteRT interpreter (no TensorFlow needed at serving)."""

    name = "mlp_int8"

    def __init__(self, model_content: bytes):
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_content=model_content, num_threads=1)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._batch = -1
        self._lock = threading.Lock()  # an interpreter is not safe to share across threads

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        with self._lock:
            if X.shape[0] != self._batch:
                self._interpreter.resize_tensor_input(self._input, list(X.shape))
                self._interpreter.allocate_tensors()
                self._batch = X.shape[0]
            self._interpreter.set_tensor(self._input, X)
            self._interpreter.invoke()
            out = self._interpreter.get_tensor(self._output).astype(np.float64)
        out = np.clip(out, 0.0, None)  # int8 outputs are dequantized: renormalise exactly
        return out / out.sum(axis=1, keepdims=True).clip(1e-12)


# ---------------------------------------------------------------------------- save / load
def member_path(directory: Path, name: str) -> Path:
    suffix = {
        "xgboost": "xgboost.json",
        "lightgbm": "lightgbm.txt",
        "catboost": "catboost.cbm",
        "mlp_int8": "mlp_int8.tflite",
    }.get(name, f"{name}.joblib")
    return Path(directory) / "members" / suffix


def save_member(directory: Path, name: str, model: Any) -> Path:
    """Save a fitted member (estimator, booster, or TFLite bytes) in its library's format."""
    path = member_path(directory, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    if name in SKLEARN_MEMBERS:
        import joblib

        joblib.dump(model, path, compress=3)
    elif name == "xgboost":
        model.save_model(str(path))
    elif name == "lightgbm":
        booster = getattr(model, "booster_", model)
        booster.save_model(str(path))
    elif name == "catboost":
        model.save_model(str(path))
    elif name == "mlp_int8":
        path.write_bytes(model)
    else:
        raise ValueError(f"unknown member {name!r}")
    return path


def load_member(directory: Path, name: str) -> Member:
    """Load one member natively; raises (ImportError, OSError, ...) if it cannot be served."""
    path = member_path(directory, name)
    if name in SKLEARN_MEMBERS:
        import joblib

        return SklearnMember(name, joblib.load(path))
    if name == "xgboost":
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(str(path))
        return XGBoostMember(booster)
    if name == "lightgbm":
        import lightgbm as lgb

        return LightGBMMember(lgb.Booster(model_file=str(path)))
    if name == "catboost":
        from catboost import CatBoostClassifier

        model = CatBoostClassifier()
        model.load_model(str(path))
        return CatBoostMember(model)
    if name == "mlp_int8":
        return TFLiteMember(path.read_bytes())
    raise ValueError(f"unknown member {name!r}")
