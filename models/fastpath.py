"""Fast in-process paths for the tree members: each model compiled to one ONNX tree-ensemble node.

Why: scikit-learn's forests and HistGradientBoosting cost a fixed 9-20 ms per `predict_proba`
call whatever the batch (validation, thread-pool set-up), XGBoost about 0.6 ms, and LightGBM
walks batches slowly on one thread. The same trees as one `ai.onnx.ml` tree-ensemble node, run by
onnxruntime on one thread, cost 0.1-0.4 ms for a row (figures: loadtests/bench_inprocess.py).

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

Export (`export_fast`) runs at training time and needs `onnx`; it writes `members/<name>.onnx`
next to the native file only after checking it against the native model on probe rows placed on,
just below and just above every split threshold (and with NaNs). Serving needs only onnxruntime.
Cost: an onnxruntime session holds about 2.5x the memory of the native forest (60,000-row models:
random forest ~300 MB, extra trees ~550 MB resident, with a transient peak twice that at load).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.links import probabilities, softmax

log = logging.getLogger(__name__)

NATIVE_ENV = "SERVING_NATIVE_MEMBERS"
"""`1`/`true`/`all`: serve every member through its native library (benchmarks, debugging);
a comma-separated list of member names: only those (e.g. to trade speed for memory)."""

FAST_MEMBERS = ("random_forest", "extra_trees", "hist_gradient_boosting", "xgboost", "lightgbm")
"""The members that may have an ONNX fast artifact (CatBoost and the TFLite net are native-fast)."""

TOLERANCE = 1e-5
"""Largest absolute probability difference from the native library accepted at export time."""

FORMAT = "tree-ensemble-v1"


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


class NotConvertible(ValueError):
    """The model uses a feature the fast path would not reproduce exactly."""


# ------------------------------------------------------------------------ intermediate form
LEQ, LT = 0, 1  # ONNX TreeEnsemble nodes_modes: BRANCH_LEQ, BRANCH_LT


@dataclass
class _Tree:
    """One binary tree; node 0 is the root, `left[i] < 0` marks a leaf."""

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    missing_left: np.ndarray  # where NaN goes
    value: np.ndarray  # (n_nodes, len(targets)) leaf values (ignored on internal nodes)
    targets: tuple[int, ...]  # the output columns the leaf values add to


@dataclass
class _Compiled:
    trees: list[_Tree]
    n_features: int
    n_targets: int
    mode: int
    transform: str  # "none" | "softmax" | "logistic"
    base: list[float] = field(default_factory=list)
    scale: float = 1.0  # logistic(scale * raw), LightGBM's `sigmoid:` parameter


def _sklearn_forest(est: Any) -> _Compiled:
    if getattr(est, "n_outputs_", 1) != 1:
        raise NotConvertible("multi-output forest")
    n_classes = int(est.n_classes_)
    trees = []
    weight = 1.0 / len(est.estimators_)
    for tree in est.estimators_:
        t = tree.tree_
        value = np.asarray(t.value, dtype=np.float64)[:, 0, :]
        norm = value.sum(axis=1, keepdims=True)
        norm[norm == 0.0] = 1.0
        proba = value / norm  # what DecisionTreeClassifier.predict_proba returns
        state = t.__getstate__()["nodes"]
        if "missing_go_to_left" in state.dtype.names:
            missing = state["missing_go_to_left"].astype(bool)
        else:  # older scikit-learn: no missing-value support, NaN is rejected before the trees
            missing = np.zeros(t.node_count, bool)
        trees.append(
            _Tree(
                feature=np.asarray(t.feature, np.int64),
                threshold=np.asarray(t.threshold, np.float64),
                left=np.asarray(t.children_left, np.int64),
                right=np.asarray(t.children_right, np.int64),
                missing_left=missing,
                value=proba * weight,
                targets=tuple(range(n_classes)),
            )
        )
    return _Compiled(trees, int(est.n_features_in_), n_classes, LEQ, "none")


def _sklearn_hgb(est: Any) -> _Compiled:
    loss = type(est._loss).__name__
    k = int(est.n_trees_per_iteration_)
    if (k == 1) != (loss == "HalfBinomialLoss") or (k > 1 and loss != "HalfMultinomialLoss"):
        raise NotConvertible(f"unsupported loss {loss}")
    trees = []
    for iteration in est._predictors:
        for target, predictor in enumerate(iteration):
            nodes = predictor.nodes
            if nodes["is_categorical"].any():
                raise NotConvertible("categorical splits")
            leaf = nodes["is_leaf"].astype(bool)
            trees.append(
                _Tree(
                    feature=nodes["feature_idx"].astype(np.int64),
                    threshold=nodes["num_threshold"].astype(np.float64),
                    left=np.where(leaf, -1, nodes["left"].astype(np.int64)),
                    right=np.where(leaf, -1, nodes["right"].astype(np.int64)),
                    missing_left=nodes["missing_go_to_left"].astype(bool),
                    value=nodes["value"].astype(np.float64)[:, None],
                    targets=(target,),
                )
            )
    base = np.asarray(est._baseline_prediction, dtype=np.float64).ravel().tolist()
    return _Compiled(
        trees, int(est.n_features_in_), k, LEQ, "logistic" if k == 1 else "softmax", base
    )


def _lightgbm(booster: Any) -> _Compiled:
    dump = booster.dump_model()
    if dump.get("average_output"):
        raise NotConvertible("average_output (random-forest mode)")
    objective = dump["objective"].split()
    scale = 1.0
    if objective[0] == "multiclass":
        transform = "softmax"
    elif objective[0] == "binary":
        transform = "logistic"
        for part in objective[1:]:
            if part.startswith("sigmoid:"):
                scale = float(part.split(":", 1)[1])
    else:
        raise NotConvertible(f"objective {dump['objective']!r}")
    per_iteration = int(dump["num_tree_per_iteration"])
    # LightGBM reads a dense row as sparse pairs, dropping |x| <= kZeroThreshold (1e-35f): such x
    # compare as 0. Only thresholds inside [-z, z] can tell x from 0; for float32 inputs those
    # become `x <= z` (t >= 0) or `x < -z` (t < 0), i.e. one plain `<=` with a moved threshold.
    z = float(np.float32(1e-35))
    below_minus_z = float(np.nextafter(np.float32(-z), np.float32(-np.inf)))
    trees = []
    for info in dump["tree_info"]:
        feature, threshold, left, right, missing, value = [], [], [], [], [], []
        stack = [(info["tree_structure"], -1, False)]
        while stack:  # pre-order: the root gets index 0
            node, parent, is_right = stack.pop()
            index = len(feature)
            if parent >= 0:
                (right if is_right else left)[parent] = index
            if "leaf_value" in node and "split_feature" not in node:
                if "leaf_coeff" in node:
                    raise NotConvertible("linear trees")
                feature.append(0), threshold.append(0.0), missing.append(False)
                left.append(-1), right.append(-1), value.append(float(node["leaf_value"]))
                continue
            if node["decision_type"] != "<=":
                raise NotConvertible("categorical splits")
            t = float(node["threshold"])
            kind = node["missing_type"]
            if kind == "None":  # LightGBM turns NaN into 0.0 before comparing
                goes_left = 0.0 <= t
            elif kind == "NaN":
                goes_left = bool(node["default_left"])
            else:  # "Zero": zeros take the default branch, which one node cannot express
                raise NotConvertible("zero_as_missing")
            if -z <= t <= z:
                t = z if t >= 0.0 else below_minus_z
            feature.append(int(node["split_feature"])), threshold.append(t)
            missing.append(goes_left), value.append(0.0)
            left.append(-1), right.append(-1)
            stack.append((node["right_child"], index, True))
            stack.append((node["left_child"], index, False))
        trees.append(
            _Tree(
                np.array(feature, np.int64),
                np.array(threshold, np.float64),
                np.array(left, np.int64),
                np.array(right, np.int64),
                np.array(missing, bool),
                np.array(value, np.float64)[:, None],
                (int(info["tree_index"]) % per_iteration,),
            )
        )
    return _Compiled(
        trees,
        int(dump["max_feature_idx"]) + 1,
        per_iteration,
        LEQ,
        transform,
        [0.0] * per_iteration,
        scale,
    )


def _xgboost(booster: Any) -> _Compiled:
    import xgboost as xgb

    model = json.loads(booster.save_raw("json"))["learner"]
    objective = model["objective"]["name"]
    if objective not in ("multi:softprob", "binary:logistic"):
        raise NotConvertible(f"objective {objective!r}")
    gb = model["gradient_booster"]
    if gb["name"] != "gbtree":
        raise NotConvertible(f"booster {gb['name']!r}")
    params = model["learner_model_param"]
    n_features = int(params["num_feature"])
    n_targets = max(1, int(params["num_class"]))
    if int(params.get("num_target", "1")) != 1:
        raise NotConvertible("multi-target model")
    trees = []
    for tree, target in zip(gb["model"]["trees"], gb["model"]["tree_info"], strict=True):
        param = tree["tree_param"]
        if int(param["num_deleted"]) or int(param.get("size_leaf_vector", "1")) > 1:
            raise NotConvertible("deleted nodes or vector leaves")
        if any(tree["split_type"]):
            raise NotConvertible("categorical splits")
        left = np.asarray(tree["left_children"], np.int64)
        cond = np.asarray(tree["split_conditions"], np.float32).astype(np.float64)
        trees.append(
            _Tree(
                feature=np.asarray(tree["split_indices"], np.int64),
                threshold=cond,
                left=np.where(left < 0, -1, left),
                right=np.asarray(tree["right_children"], np.int64),
                missing_left=np.asarray(tree["default_left"], bool),
                value=cond[:, None],  # leaves keep their weight in split_conditions
                targets=(int(target),),
            )
        )
    # The base margin, as XGBoost itself adds it: margin(0) - margin(0 with base_margin = 0).
    zero = np.zeros((1, n_features), np.float32)
    with_base = booster.predict(xgb.DMatrix(zero), output_margin=True)
    without = booster.predict(
        xgb.DMatrix(zero, base_margin=np.zeros(np.shape(with_base), np.float32)), output_margin=True
    )
    base = (np.asarray(with_base, np.float64) - np.asarray(without, np.float64)).ravel().tolist()
    transform = "softmax" if objective == "multi:softprob" else "logistic"
    return _Compiled(trees, n_features, n_targets, LT, transform, base)


# --------------------------------------------------------------------------------- ONNX
def _tree_ensemble_v5(c: _Compiled):
    """One `TreeEnsemble` node (ai.onnx.ml opset 5): float64 in, float64 (n, n_targets) out.

    Its leaves carry one value each, so a tree whose leaves feed several targets is repeated
    once per target (the forests use `_tree_ensemble_v3` instead).
    """
    from onnx import helper, numpy_helper

    feats, splits, true_ids, true_leaf, false_ids, false_leaf, missing = ([] for _ in range(7))
    roots, leaf_targets, leaf_weights = [], [], []
    n_nodes = n_leaves = 0
    for tree in c.trees:
        is_leaf = tree.left < 0
        internal = np.flatnonzero(~is_leaf)
        leaves = np.flatnonzero(is_leaf)
        for column, target in enumerate(tree.targets):
            if is_leaf[0]:  # a lone leaf: one dummy split whose branches both reach it
                roots.append(n_nodes)
                feats.append([0]), splits.append([0.0]), missing.append([0])
                true_ids.append([n_leaves]), false_ids.append([n_leaves])
                true_leaf.append([1]), false_leaf.append([1])
                leaf_targets.append([target]), leaf_weights.append(tree.value[:1, column])
                n_nodes, n_leaves = n_nodes + 1, n_leaves + 1
                continue
            new_index = np.empty(len(is_leaf), np.int64)
            new_index[internal] = n_nodes + np.arange(len(internal))
            new_index[leaves] = n_leaves + np.arange(len(leaves))
            roots.append(int(new_index[0]))
            lc, rc = tree.left[internal], tree.right[internal]
            feats.append(tree.feature[internal]), splits.append(tree.threshold[internal])
            true_ids.append(new_index[lc]), true_leaf.append(is_leaf[lc])
            false_ids.append(new_index[rc]), false_leaf.append(is_leaf[rc])
            missing.append(tree.missing_left[internal])
            leaf_targets.append(np.full(len(leaves), target))
            leaf_weights.append(tree.value[leaves, column])
            n_nodes += len(internal)
            n_leaves += len(leaves)

    ints = lambda parts: np.concatenate(parts).astype(np.int64).tolist()  # noqa: E731
    floats = lambda parts, label: numpy_helper.from_array(  # noqa: E731
        np.concatenate(parts).astype(np.float64), label
    )
    node = helper.make_node(
        "TreeEnsemble",
        ["X"],
        ["Y"],
        domain="ai.onnx.ml",
        n_targets=c.n_targets,
        aggregate_function=1,  # SUM
        post_transform=0,  # NONE: the transform is applied in float64 numpy at serving
        tree_roots=roots,
        nodes_featureids=ints(feats),
        nodes_splits=floats(splits, "nodes_splits"),
        nodes_modes=numpy_helper.from_array(np.full(n_nodes, c.mode, np.uint8), "nodes_modes"),
        nodes_truenodeids=ints(true_ids),
        nodes_trueleafs=ints(true_leaf),
        nodes_falsenodeids=ints(false_ids),
        nodes_falseleafs=ints(false_leaf),
        nodes_missing_value_tracks_true=ints(missing),
        leaf_targetids=ints(leaf_targets),
        leaf_weights=floats(leaf_weights, "leaf_weights"),
    )
    return node, 5, "double"


def _tree_ensemble_v3(c: _Compiled):
    """One `TreeEnsembleRegressor` node (ai.onnx.ml opset 3): float64 in, float32 out.

    Thresholds, leaf values and sums are float64 (onnxruntime accumulates in the threshold type);
    only the final sums are rounded to float32 (relative error <= 6e-8), which for the forests'
    probabilities in [0, 1] is far inside the tolerance. Leaves may feed several targets, so a
    forest is traversed once per tree rather than once per tree and class.
    """
    from onnx import helper, numpy_helper

    modes = {LEQ: "BRANCH_LEQ", LT: "BRANCH_LT"}
    tree_ids, node_ids, feats, splits, true_ids, false_ids, missing = ([] for _ in range(7))
    mode_list: list[str] = []
    t_tree, t_node, t_target, t_weight = [], [], [], []
    for tid, tree in enumerate(c.trees):
        n = len(tree.left)
        is_leaf = tree.left < 0
        tree_ids.append(np.full(n, tid)), node_ids.append(np.arange(n))
        feats.append(np.where(is_leaf, 0, tree.feature))
        splits.append(np.where(is_leaf, 0.0, tree.threshold))
        mode_list.extend("LEAF" if leaf else modes[c.mode] for leaf in is_leaf)
        true_ids.append(np.where(is_leaf, 0, tree.left))
        false_ids.append(np.where(is_leaf, 0, tree.right))
        missing.append(np.where(is_leaf, 0, tree.missing_left))
        leaves = np.flatnonzero(is_leaf)
        for column, target in enumerate(tree.targets):
            t_tree.append(np.full(len(leaves), tid)), t_node.append(leaves)
            t_target.append(np.full(len(leaves), target))
            t_weight.append(tree.value[leaves, column])
    ints = lambda parts: np.concatenate(parts).astype(np.int64).tolist()  # noqa: E731
    floats = lambda parts, label: numpy_helper.from_array(  # noqa: E731
        np.concatenate(parts).astype(np.float64), label
    )
    node = helper.make_node(
        "TreeEnsembleRegressor",
        ["X"],
        ["Y"],
        domain="ai.onnx.ml",
        n_targets=c.n_targets,
        aggregate_function="SUM",
        post_transform="NONE",
        nodes_treeids=ints(tree_ids),
        nodes_nodeids=ints(node_ids),
        nodes_featureids=ints(feats),
        nodes_values_as_tensor=floats(splits, "nodes_values"),
        nodes_modes=mode_list,
        nodes_truenodeids=ints(true_ids),
        nodes_falsenodeids=ints(false_ids),
        nodes_missing_value_tracks_true=ints(missing),
        target_treeids=ints(t_tree),
        target_nodeids=ints(t_node),
        target_ids=ints(t_target),
        target_weights_as_tensor=floats(t_weight, "target_weights"),
    )
    return node, 3, "float"


def _to_onnx(c: _Compiled) -> bytes:
    """The compiled trees as an ONNX model: X (n, n_features) float64 -> Y (n, n_targets)."""
    from onnx import TensorProto, helper

    multi = any(len(t.targets) > 1 for t in c.trees)
    node, ml_opset, out_type = (_tree_ensemble_v3 if multi else _tree_ensemble_v5)(c)
    out = TensorProto.DOUBLE if out_type == "double" else TensorProto.FLOAT
    graph = helper.make_graph(
        [node],
        "trees",
        [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, c.n_features])],
        [helper.make_tensor_value_info("Y", out, [None, c.n_targets])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", ml_opset)],
        producer_name="models.fastpath",
    )
    model.ir_version = 10
    helper.set_model_props(
        model,
        {
            "format": FORMAT,
            "transform": c.transform,
            "base": json.dumps(c.base or [0.0] * c.n_targets),
            "scale": repr(c.scale),
            "n_features": str(c.n_features),
        },
    )
    return model.SerializeToString()


def _compile(name: str, model: Any) -> _Compiled:
    if name in ("random_forest", "extra_trees"):
        return _sklearn_forest(model)
    if name == "hist_gradient_boosting":
        return _sklearn_hgb(model)
    if name == "lightgbm":
        return _lightgbm(getattr(model, "booster_", model))
    if name == "xgboost":
        return _xgboost(model.get_booster() if hasattr(model, "get_booster") else model)
    raise NotConvertible(f"no fast path for {name!r}")


def compile_model(name: str, model: Any) -> bytes:
    """ONNX bytes for a fitted member; raises NotConvertible. Needs `onnx` (training only)."""
    return _to_onnx(_compile(name, model))


# ------------------------------------------------------------------------------ serving
def _session(path: Path):
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
def probe_rows(trees: list[_Tree], n_features: int, rows: int = 512, seed: int = 0) -> np.ndarray:
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
    compiled = _compile(name, model)
    path.write_bytes(_to_onnx(compiled))
    fast = OnnxTreeMember(name, path)
    X = probe_rows(compiled.trees, compiled.n_features)
    diff = float(np.abs(fast.predict_proba(X) - native.predict_proba(X)).max())
    X[::7, ::3] = np.nan  # missing values, where the native model accepts them
    try:
        expected = native.predict_proba(X)
    except ValueError:  # e.g. a scikit-learn forest fitted without missing values rejects NaN
        return diff
    return max(diff, float(np.abs(fast.predict_proba(X) - expected).max()))
