"""Fast in-process paths for the tree members: each model compiled to one ONNX tree-ensemble node.

Why: scikit-learn's forests and HistGradientBoosting cost a fixed 9-20 ms per `predict_proba`
call whatever the batch (validation, thread-pool set-up), XGBoost about 0.6 ms, and LightGBM
walks batches slowly on one thread. The same trees as one `ai.onnx.ml` tree-ensemble node, run by
onnxruntime on one thread, cost 0.1-0.4 ms for a row (`python -m loadtests.benchmark.members`).

Exactness: thresholds, leaf values and sums are float64 and the inputs are the float32 design
matrix widened exactly, so every split decision is the native library's (`x <= t` for
scikit-learn and LightGBM, `x < t` for XGBoost, NaN routed as each library routes it, LightGBM's
|x| <= 1e-35 read as zero) and only the order of the sums differs:
- boosted models (HistGradientBoosting, XGBoost, LightGBM): `TreeEnsemble` (ai.onnx.ml opset 5),
  float64 out; the base score and the softmax / logistic link are applied here in numpy;
- forests: `TreeEnsembleRegressor` (opset 3), whose leaves may feed all classes at once (one walk
  per tree instead of one per tree and class) but whose output is float32: probabilities in
  [0, 1] rounded to float32 are within 6e-8.
Models using anything not reproduced exactly (categorical splits, LightGBM zero-as-missing or
linear trees, DART, vector leaves, ...) are not converted and stay on their native path.
The compiler is `models.tree_compiler` (library -> exact intermediate form) and
`models.tree_onnx` (that form -> one ONNX node); this module is the members' side of it.

Export (`export_fast`) runs at training time and needs `onnx`; it writes `members/<name>.onnx`
next to the native file only after checking it against the native model on probe rows placed on,
just below and just above every split threshold (and with NaNs). Serving needs only onnxruntime.
Cost: an onnxruntime session holds about 2.5x the memory of the native forest (60,000-row models:
random forest ~300 MB, extra trees ~550 MB resident, with a transient peak twice that at load).

Alternatives measured and not taken (issue 25; `python -m loadtests.benchmark.members --clock cpu
--candidates merged,tl2cgen`, quick-trained store, CPU ms per call at 1 / 6 / 64 rows):
- treelite 4.8.1 + tl2cgen 1.0.0 (gcc, served by tl2cgen's Predictor) is exact (max |dp| 2.4e-7,
  XGBoost's float32) but slower than onnxruntime for every tree member at every batch size
  (0.5-1.0x; random forest 0.045 / 0.111 / 0.415 vs 0.021 / 0.059 / 0.273), the whole ensemble
  0.8-1.1x; gcc took 2-3 minutes per quick forest; tl2cgen 1.0.0's DMatrix breaks on numpy 2
  unless handed a contiguous array of the threshold type, and it embeds treelite 4.1.2;
- the five ONNX members merged into one graph per opset (two `run` calls instead of five) saves
  ~0.02 ms per call (raw trees 0.127 / 0.440 / 2.85 -> 0.107 / 0.415 / 2.81): ~3 % of the
  ensemble at 6 rows, below the 1.3x that would justify a second artifact format.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from models.links import probabilities, softmax
from models.tree_compiler import Tree, compile_trees
from models.tree_onnx import FORMAT, to_onnx

log = logging.getLogger(__name__)

NATIVE_ENV = "SERVING_NATIVE_MEMBERS"
"""`1`/`true`/`all`: serve every member through its native library (benchmarks, debugging);
a comma-separated list of member names: only those (e.g. to trade speed for memory)."""

FAST_MEMBERS = ("random_forest", "extra_trees", "hist_gradient_boosting", "xgboost", "lightgbm")
"""The members that may have an ONNX fast artifact (CatBoost and the TFLite net are native-fast)."""

TOLERANCE = 1e-5
"""Largest absolute probability difference from the native library accepted at export time."""


def native_forced(name: str) -> bool:
    """Whether SERVING_NATIVE_MEMBERS asks for `name` to be served natively."""
    value = os.environ.get(NATIVE_ENV, "").strip().lower()
    if value in {"", "0", "false", "no", "off"}:
        return False
    if value in {"1", "true", "yes", "on", "all"}:
        return True
    return name in {part.strip() for part in value.split(",")}


def fast_path(directory: Path, name: str) -> Path:
    return Path(directory) / "members" / f"{name}.onnx"


# ------------------------------------------------------------------------------ serving
def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxTreeMember:
    """A tree member compiled to ONNX (see the module docstring); thread-safe."""

    path_kind = "onnx"

    def __init__(self, name: str, path: Path):
        self.name = name
        self._session = _session(path)
        meta = self._session.get_modelmeta().custom_metadata_map
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path.name}: unknown fast-artifact format {meta.get('format')!r}")
        self._transform = meta["transform"]
        if self._transform not in ("none", "softmax", "logistic"):
            raise ValueError(f"{path.name}: unknown transform {self._transform!r}")
        self._base = np.asarray(json.loads(meta["base"]), dtype=np.float64)
        self._scale = float(meta["scale"])
        self.n_features = int(meta["n_features"])
        self._input = self._session.get_inputs()[0].name
        self._outputs = [self._session.get_outputs()[0].name]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float64)
        raw = self._session.run(self._outputs, {self._input: X})[0].astype(np.float64, copy=False)
        if self._transform == "none":
            return raw
        raw = raw + self._base
        if self._transform == "logistic":
            return probabilities(raw[:, :1], logistic_scale=self._scale)
        return softmax(raw)


def load_fast(directory: Path, name: str) -> OnnxTreeMember | None:
    """The member's fast path if its artifact exists and loads; None (logged) otherwise."""
    path = fast_path(directory, name)
    if not path.exists():
        log.info("member %s: no fast artifact, using the native library", name)
        return None
    try:
        member = OnnxTreeMember(name, path)
    except Exception as exc:  # e.g. onnxruntime missing or too old for opset 5
        log.warning(
            "member %s: fast artifact not loadable (%s: %s); using the native library",
            name,
            type(exc).__name__,
            exc,
        )
        return None
    _release_freed_memory()
    return member


def _release_freed_memory() -> None:
    """Building a session parses the whole model: for the forests the peak is 2-3x what stays.
    Hand the freed heap back to the OS (glibc only; a no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


# ------------------------------------------------------------------------ export + checks
def probe_rows(trees: list[Tree], n_features: int, rows: int = 512, seed: int = 0) -> np.ndarray:
    """float32 rows whose values sit on, just below and just above the models' thresholds."""
    rng = np.random.default_rng(seed)
    by_feature: list[list[np.ndarray]] = [[] for _ in range(n_features)]
    for tree in trees:
        internal = tree.left >= 0
        for f in np.unique(tree.feature[internal]):
            by_feature[f].append(tree.threshold[internal][tree.feature[internal] == f])
    X = rng.standard_normal((rows, n_features)).astype(np.float32)
    for f, parts in enumerate(by_feature):
        if not parts:
            continue
        t = np.unique(np.concatenate(parts))
        t32 = t.astype(np.float32)
        candidates = np.concatenate(
            [t32, np.nextafter(t32, np.float32(np.inf)), np.nextafter(t32, np.float32(-np.inf))]
        )
        candidates = candidates[np.isfinite(candidates)]  # e.g. scikit-learn's NaN-only splits
        if not len(candidates):
            continue
        pick = rng.random(rows) < 0.8
        X[pick, f] = rng.choice(candidates, size=int(pick.sum()))
    return X


def export_fast(directory: Path, name: str, native: Any) -> Path | None:
    """Compile a native member to `members/<name>.onnx`; keep it only if it matches on probe rows.

    `native` is the member as loaded from its just-written native file (`models.members`), so
    the trees compiled are exactly the ones the native path serves. Returns the artifact path, or
    None (logged) when `onnx` or onnxruntime is missing, the model is not convertible exactly, or
    the check against the native predictions fails.
    """
    path = fast_path(directory, name)
    path.unlink(missing_ok=True)
    if name not in FAST_MEMBERS:
        return None
    pending = path.with_name(path.name + ".unchecked")  # becomes `path` only once it passes
    try:
        diff = _write_and_check(name, native, pending)
    except ImportError as exc:
        pending.unlink(missing_ok=True)
        log.info("member %s: fast path not exported (%s)", name, exc)
        return None
    except Exception as exc:
        pending.unlink(missing_ok=True)
        log.warning("member %s: fast path not exported (%s: %s)", name, type(exc).__name__, exc)
        return None
    if not diff <= TOLERANCE:
        pending.unlink(missing_ok=True)
        log.warning(
            "member %s: fast path differs from native by %.3g > %g; not exported",
            name,
            diff,
            TOLERANCE,
        )
        return None
    pending.replace(path)
    log.info("member %s: fast path exported (max |diff| %.2g on probe rows)", name, diff)
    return path


def _write_and_check(name: str, native: Any, path: Path) -> float:
    """Write the compiled member to `path`; the largest probability difference from `native`."""
    model = native.estimator if hasattr(native, "estimator") else native.booster
    compiled = compile_trees(name, model)
    path.write_bytes(to_onnx(compiled))
    fast = OnnxTreeMember(name, path)
    X = probe_rows(compiled.trees, compiled.n_features)
    diff = float(np.abs(fast.predict_proba(X) - native.predict_proba(X)).max())
    X[::7, ::3] = np.nan  # missing values, where the native model accepts them
    try:
        expected = native.predict_proba(X)
    except ValueError:  # e.g. a scikit-learn forest fitted without missing values rejects NaN
        return diff
    return max(diff, float(np.abs(fast.predict_proba(X) - expected).max()))
