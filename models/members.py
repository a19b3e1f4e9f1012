"""The seven ensemble members as loaded for serving: each saved in its library's own format.

Every member exposes `predict_proba(X) -> (n, n_classes)` on the float32 design matrix, with
classes in schema order, and runs single-threaded: the ensemble service parallelises by batching,
and thread pools spun up per call cost more than they save at serving batch sizes.

Fast paths (see `models.fastpath`): the five tree members other than CatBoost are also saved as
one ONNX tree-ensemble node when `onnx` is installed (training), checked against the native model
at save time, and served by onnxruntime when the artifact is there; CatBoost's oblivious trees are
evaluated in numpy for small batches (`models.oblivious`, built and checked at load). Every member
reports how it is served in `.path_kind` ("onnx", "numpy" or "native"). The native files are always
written and are the fallback: without the artifact, with onnxruntime missing, or with
SERVING_NATIVE_MEMBERS set.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from models import fastpath

log = logging.getLogger(__name__)

SKLEARN_MEMBERS = ("random_forest", "extra_trees", "hist_gradient_boosting")
MEMBER_NAMES = (*SKLEARN_MEMBERS, "xgboost", "lightgbm", "catboost", "mlp_int8")
"""The seven members, in the order they are stored and reported."""


class Member(Protocol):
    name: str
    path_kind: str  # "onnx" | "native"

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...


def _two_columns(p: np.ndarray) -> np.ndarray:
    """Binary models return P(class 1) only; make it (n, 2)."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim == 1:
        return np.column_stack([1.0 - p, p])
    return p


class SklearnMember:
    """Forests run with n_jobs=1; HistGradientBoosting, which has no n_jobs and predicts on an
    OpenMP team of every core, is held to one OpenMP thread per call: with the cores busy (other
    members, other workers) its team waits on itself, up to seconds per row measured."""

    path_kind = "native"

    def __init__(self, name: str, estimator: Any):
        self.name = name
        self.estimator = estimator
        if hasattr(estimator, "n_jobs"):
            estimator.n_jobs = 1
        self._openmp = None
        if not hasattr(estimator, "n_jobs"):
            from threadpoolctl import ThreadpoolController

            self._openmp = ThreadpoolController().select(user_api="openmp")

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self._openmp is None:
            return self.estimator.predict_proba(X)
        with self._openmp.limit(limits=1):  # OpenMP thread counts are per calling thread
            return self.estimator.predict_proba(X)


class XGBoostMember:
    name = "xgboost"
    path_kind = "native"

    def __init__(self, booster: Any):
        self.booster = booster
        booster.set_param({"nthread": 1})

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return _two_columns(self.booster.inplace_predict(X))


class LightGBMMember:
    name = "lightgbm"
    path_kind = "native"

    def __init__(self, booster: Any):
        self.booster = booster

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return _two_columns(self.booster.predict(X, num_threads=1))


class CatBoostMember:
    name = "catboost"
    path_kind = "native"

    def __init__(self, model: Any):
        self.model = model

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(X, thread_count=1)


class TFLiteMember:
    """The int8-quantized network on the LiteRT interpreter (no TensorFlow needed at serving)."""

    name = "mlp_int8"
    path_kind = "native"

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


class BatchSplitMember:
    """The fast path for small batches, the native library from `native_from_rows` rows up.

    Used for XGBoost, whose own predictor has a fixed cost per call (about 0.6 ms) but walks
    large batches faster than onnxruntime does, and for CatBoost, whose `Pool` set-up costs
    ~0.15 ms per call but whose predictor beats the numpy evaluator from ~8 rows (NATIVE_FROM_ROWS).
    """

    def __init__(self, fast: Member, native: Member, native_from_rows: int):
        self.path_kind = fast.path_kind
        self.name = native.name
        self.fast = fast
        self.native = native
        self.native_from_rows = native_from_rows

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        member = self.native if len(X) >= self.native_from_rows else self.fast
        return member.predict_proba(X)


NATIVE_FROM_ROWS = {"xgboost": 16, "catboost": 8}
"""Batch sizes from which a member's native library beats its fast path (measured on the
2-core machine, 60,000-row models: XGBoost native 1.2 ms vs onnxruntime 1.0 ms at 16 rows,
4.9 vs 6.9 ms at 64; CatBoost native 0.20 / 0.30 / 0.33 ms vs numpy 0.05 / 0.18 / 0.52 ms at
1 / 4 / 16 rows). The other fast paths win at every serving batch size."""


# ---------------------------------------------------------------------------- save / load
def member_path(directory: Path, name: str) -> Path:
    suffix = {
        "xgboost": "xgboost.json",
        "lightgbm": "lightgbm.txt",
        "catboost": "catboost.cbm",
        "mlp_int8": "mlp_int8.tflite",
    }.get(name, f"{name}.joblib")
    return Path(directory) / "members" / suffix


def save_member(directory: Path, name: str, model: Any, fast: bool = True) -> Path:
    """Save a fitted member (estimator, booster, or TFLite bytes) in its library's format.

    With `fast` (the default) and the converter installed, the tree members also get their
    checked fast artifact (`members/<name>.onnx`, see `models.fastpath.export_fast`); a member
    that cannot be converted exactly is saved natively only, with the reason logged.
    """
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
    fastpath.fast_path(directory, name).unlink(missing_ok=True)  # never leave a stale artifact
    if fast and name in fastpath.FAST_MEMBERS:
        # Checked against the member exactly as it will be served natively: loaded from the file.
        fastpath.export_fast(directory, name, _load_native(directory, name))
    return path


def load_member(directory: Path, name: str, fast: bool | None = None) -> Member:
    """Load one member; raises (ImportError, OSError, ...) if it cannot be served at all.

    `fast=None` (the default) serves the member through its fast artifact when there is one and
    it loads, unless the environment variable SERVING_NATIVE_MEMBERS names it (or is `1`/`all`);
    `fast=False` always loads the native library; `fast=True` ignores the variable. Whenever the
    fast path is unavailable the native library is used and the reason logged, so a model store
    written without the converters behaves exactly as before. `.path_kind` tells which was used.
    """
    if fast is None:
        fast = not fastpath.native_forced(name)
    if fast and name == "catboost":
        return _catboost_fast(_load_native(directory, name))
    if fast and name in fastpath.FAST_MEMBERS:
        member = fastpath.load_fast(directory, name)
        if member is not None and name in NATIVE_FROM_ROWS:
            try:
                native = _load_native(directory, name)
            except Exception as exc:  # the fast path alone still serves every batch size
                log.warning(
                    "member %s: native library not loaded for large batches (%s)", name, exc
                )
            else:
                return BatchSplitMember(member, native, NATIVE_FROM_ROWS[name])
        if member is not None:
            return member
    return _load_native(directory, name)


def _catboost_fast(native: Member) -> Member:
    """CatBoost through the numpy evaluator for small batches (models/oblivious.py), checked
    against the native model first; the native model alone when the check fails."""
    from models import oblivious

    try:
        fast, diff = oblivious.checked(native)
    except Exception as exc:
        log.warning("member catboost: numpy fast path not used (%s: %s)", type(exc).__name__, exc)
        return native
    log.info(
        "member catboost: numpy fast path below %d rows (max |diff| %.2g on probe rows)",
        NATIVE_FROM_ROWS["catboost"],
        diff,
    )
    return BatchSplitMember(fast, native, NATIVE_FROM_ROWS["catboost"])


def _load_native(directory: Path, name: str) -> Member:
    """Load one member through its own library."""
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
