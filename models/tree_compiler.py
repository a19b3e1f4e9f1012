"""The tree compiler's first half: a fitted tree model read into one exact intermediate form.

Each library's trees (scikit-learn forests and HistGradientBoosting, LightGBM, XGBoost) become
`Tree`s holding float64 thresholds and leaf values, the comparison the library makes (`x <= t` or
`x < t`), where NaN goes, and the base score and link the library applies after the sums.
Anything the form would not reproduce exactly (categorical splits, LightGBM zero-as-missing or
linear trees, DART, vector leaves, ...) raises `NotConvertible`, and the member stays on its
native path. `models.tree_onnx` writes the form as one ONNX node; see `models.fastpath` for why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LEQ, LT = 0, 1  # ONNX TreeEnsemble nodes_modes: BRANCH_LEQ, BRANCH_LT


class NotConvertible(ValueError):
    """The model uses a feature the fast path would not reproduce exactly."""


@dataclass
class Tree:
    """One binary tree; node 0 is the root, `left[i] < 0` marks a leaf."""

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    missing_left: np.ndarray  # where NaN goes
    value: np.ndarray  # (n_nodes, len(targets)) leaf values (ignored on internal nodes)
    targets: tuple[int, ...]  # the output columns the leaf values add to


@dataclass
class CompiledTrees:
    """A whole model in the intermediate form: the sum of its trees, then `transform`."""

    trees: list[Tree]
    n_features: int
    n_targets: int
    mode: int
    transform: str  # "none" | "softmax" | "logistic"
    base: list[float] = field(default_factory=list)
    scale: float = 1.0  # logistic(scale * raw), LightGBM's `sigmoid:` parameter


def compile_trees(name: str, model: Any) -> CompiledTrees:
    """The member `name`'s fitted model in the intermediate form; raises NotConvertible."""
    if name in ("random_forest", "extra_trees"):
        return _sklearn_forest(model)
    if name == "hist_gradient_boosting":
        return _sklearn_hgb(model)
    if name == "lightgbm":
        return _lightgbm(getattr(model, "booster_", model))
    if name == "xgboost":
        return _xgboost(model.get_booster() if hasattr(model, "get_booster") else model)
    raise NotConvertible(f"no fast path for {name!r}")


# ------------------------------------------------------------------------------ scikit-learn
def _sklearn_forest(est: Any) -> CompiledTrees:
    if getattr(est, "n_outputs_", 1) != 1:
        raise NotConvertible("multi-output forest")
    n_classes = int(est.n_classes_)
    weight = 1.0 / len(est.estimators_)
    trees = [_sklearn_tree(tree.tree_, n_classes, weight) for tree in est.estimators_]
    return CompiledTrees(trees, int(est.n_features_in_), n_classes, LEQ, "none")


def _sklearn_tree(t: Any, n_classes: int, weight: float) -> Tree:
    """One fitted `sklearn.tree._tree.Tree`, its leaves holding `weight` x class probabilities."""
    value = np.asarray(t.value, dtype=np.float64)[:, 0, :]
    norm = value.sum(axis=1, keepdims=True)
    norm[norm == 0.0] = 1.0
    proba = value / norm  # what DecisionTreeClassifier.predict_proba returns
    state = t.__getstate__()["nodes"]
    if "missing_go_to_left" in state.dtype.names:
        missing = state["missing_go_to_left"].astype(bool)
    else:  # older scikit-learn: no missing-value support, NaN is rejected before the trees
        missing = np.zeros(t.node_count, bool)
    return Tree(
        feature=np.asarray(t.feature, np.int64),
        threshold=np.asarray(t.threshold, np.float64),
        left=np.asarray(t.children_left, np.int64),
        right=np.asarray(t.children_right, np.int64),
        missing_left=missing,
        value=proba * weight,
        targets=tuple(range(n_classes)),
    )


def _sklearn_hgb(est: Any) -> CompiledTrees:
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
                Tree(
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
    return CompiledTrees(
        trees, int(est.n_features_in_), k, LEQ, "logistic" if k == 1 else "softmax", base
    )


# ---------------------------------------------------------------------------------- LightGBM
# LightGBM reads a dense row as sparse pairs, dropping |x| <= kZeroThreshold (1e-35f): such x
# compare as 0. Only thresholds inside [-z, z] can tell x from 0; for float32 inputs those
# become `x <= z` (t >= 0) or `x < -z` (t < 0), i.e. one plain `<=` with a moved threshold.
_LGBM_ZERO = float(np.float32(1e-35))
_LGBM_BELOW_MINUS_ZERO = float(np.nextafter(np.float32(-_LGBM_ZERO), np.float32(-np.inf)))


def _lightgbm(booster: Any) -> CompiledTrees:
    dump = booster.dump_model()
    if dump.get("average_output"):
        raise NotConvertible("average_output (random-forest mode)")
    transform, scale = _lightgbm_link(dump["objective"])
    per_iteration = int(dump["num_tree_per_iteration"])
    trees = [
        _lightgbm_tree(info["tree_structure"], int(info["tree_index"]) % per_iteration)
        for info in dump["tree_info"]
    ]
    return CompiledTrees(
        trees,
        int(dump["max_feature_idx"]) + 1,
        per_iteration,
        LEQ,
        transform,
        [0.0] * per_iteration,
        scale,
    )


def _lightgbm_link(objective: str) -> tuple[str, float]:
    """The transform after the sums and the logistic's scale, from LightGBM's objective."""
    parts = objective.split()
    if parts[0] == "multiclass":
        return "softmax", 1.0
    if parts[0] != "binary":
        raise NotConvertible(f"objective {objective!r}")
    scale = 1.0
    for part in parts[1:]:
        if part.startswith("sigmoid:"):
            scale = float(part.split(":", 1)[1])
    return "logistic", scale


def _lightgbm_tree(root: dict[str, Any], target: int) -> Tree:
    """One tree of LightGBM's `dump_model()`, numbered in pre-order (the root gets index 0)."""
    feature: list[int] = []
    threshold: list[float] = []
    left: list[int] = []
    right: list[int] = []
    missing: list[bool] = []
    value: list[float] = []
    stack: list[tuple[dict[str, Any], int, bool]] = [(root, -1, False)]
    while stack:
        node, parent, is_right = stack.pop()
        index = len(feature)
        if parent >= 0:
            (right if is_right else left)[parent] = index
        left.append(-1)
        right.append(-1)
        if "leaf_value" in node and "split_feature" not in node:
            if "leaf_coeff" in node:
                raise NotConvertible("linear trees")
            feature.append(0)
            threshold.append(0.0)
            missing.append(False)
            value.append(float(node["leaf_value"]))
            continue
        t, goes_left = _lightgbm_split(node)
        feature.append(int(node["split_feature"]))
        threshold.append(t)
        missing.append(goes_left)
        value.append(0.0)
        stack.append((node["right_child"], index, True))
        stack.append((node["left_child"], index, False))
    return Tree(
        np.array(feature, np.int64),
        np.array(threshold, np.float64),
        np.array(left, np.int64),
        np.array(right, np.int64),
        np.array(missing, bool),
        np.array(value, np.float64)[:, None],
        (target,),
    )


def _lightgbm_split(node: dict[str, Any]) -> tuple[float, bool]:
    """A split's threshold (moved off LightGBM's zero band) and whether NaN goes left."""
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
    if -_LGBM_ZERO <= t <= _LGBM_ZERO:
        t = _LGBM_ZERO if t >= 0.0 else _LGBM_BELOW_MINUS_ZERO
    return t, goes_left


# ----------------------------------------------------------------------------------- XGBoost
def _xgboost(booster: Any) -> CompiledTrees:
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
    trees = [
        _xgboost_tree(tree, int(target))
        for tree, target in zip(gb["model"]["trees"], gb["model"]["tree_info"], strict=True)
    ]
    transform = "softmax" if objective == "multi:softprob" else "logistic"
    return CompiledTrees(
        trees, n_features, n_targets, LT, transform, _xgboost_base(booster, n_features)
    )


def _xgboost_tree(tree: dict[str, Any], target: int) -> Tree:
    param = tree["tree_param"]
    if int(param["num_deleted"]) or int(param.get("size_leaf_vector", "1")) > 1:
        raise NotConvertible("deleted nodes or vector leaves")
    if any(tree["split_type"]):
        raise NotConvertible("categorical splits")
    left = np.asarray(tree["left_children"], np.int64)
    cond = np.asarray(tree["split_conditions"], np.float32).astype(np.float64)
    return Tree(
        feature=np.asarray(tree["split_indices"], np.int64),
        threshold=cond,
        left=np.where(left < 0, -1, left),
        right=np.asarray(tree["right_children"], np.int64),
        missing_left=np.asarray(tree["default_left"], bool),
        value=cond[:, None],  # leaves keep their weight in split_conditions
        targets=(target,),
    )


def _xgboost_base(booster: Any, n_features: int) -> list[float]:
    """The base margin, as XGBoost itself adds it: margin(0) - margin(0 with base_margin = 0)."""
    import xgboost as xgb

    zero = np.zeros((1, n_features), np.float32)
    with_base = booster.predict(xgb.DMatrix(zero), output_margin=True)
    without = booster.predict(
        xgb.DMatrix(zero, base_margin=np.zeros(np.shape(with_base), np.float32)), output_margin=True
    )
    return (np.asarray(with_base, np.float64) - np.asarray(without, np.float64)).ravel().tolist()
