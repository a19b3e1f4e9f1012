"""The tree compiler's second half: `CompiledTrees` written as one ONNX tree-ensemble node.

- boosted models: `TreeEnsemble` (ai.onnx.ml opset 5), float64 thresholds, leaves and output;
  the base score and link are applied at serving, in numpy (`models.fastpath.OnnxTreeMember`);
- forests: `TreeEnsembleRegressor` (opset 3), whose leaves may feed all classes at once (one walk
  per tree instead of one per tree and class) but whose output is float32: probabilities in
  [0, 1] rounded to float32 are within 6e-8.
Needs `onnx` (training only); serving reads the result with onnxruntime alone.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from models.tree_compiler import LEQ, LT, CompiledTrees

FORMAT = "tree-ensemble-v1"
"""The `format` property of the artifacts this module writes (checked when they are loaded)."""


def to_onnx(c: CompiledTrees) -> bytes:
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


def _ints(parts: list[np.ndarray]) -> list[int]:
    return np.concatenate(parts).astype(np.int64).tolist()


def _floats(parts: list[np.ndarray], label: str) -> Any:
    """A float64 tensor attribute (an `onnx.TensorProto`)."""
    from onnx import numpy_helper

    return numpy_helper.from_array(np.concatenate(parts).astype(np.float64), label)


def _one(value: float) -> np.ndarray:
    return np.array([value])


def _tree_ensemble_v5(c: CompiledTrees) -> tuple[Any, int, str]:
    """One `TreeEnsemble` node (ai.onnx.ml opset 5): float64 in, float64 (n, n_targets) out.

    Its leaves carry one value each, so a tree whose leaves feed several targets is repeated
    once per target (the forests use `_tree_ensemble_v3` instead).
    """
    from onnx import helper, numpy_helper

    names = ("feats", "splits", "true_ids", "true_leaf", "false_ids", "false_leaf", "missing")
    p: dict[str, list[np.ndarray]] = {n: [] for n in (*names, "leaf_targets", "leaf_weights")}
    roots: list[int] = []
    n_nodes = n_leaves = 0
    for tree in c.trees:
        is_leaf = tree.left < 0
        internal = np.flatnonzero(~is_leaf)
        leaves = np.flatnonzero(is_leaf)
        for column, target in enumerate(tree.targets):
            if is_leaf[0]:  # a lone leaf: one dummy split whose branches both reach it
                roots.append(n_nodes)
                for n, v in zip(names, (0, 0.0, n_leaves, 1, n_leaves, 1, 0), strict=True):
                    p[n].append(_one(v))
                p["leaf_targets"].append(_one(target))
                p["leaf_weights"].append(tree.value[:1, column])
                n_nodes, n_leaves = n_nodes + 1, n_leaves + 1
                continue
            new_index = np.empty(len(is_leaf), np.int64)
            new_index[internal] = n_nodes + np.arange(len(internal))
            new_index[leaves] = n_leaves + np.arange(len(leaves))
            roots.append(int(new_index[0]))
            lc, rc = tree.left[internal], tree.right[internal]
            p["feats"].append(tree.feature[internal])
            p["splits"].append(tree.threshold[internal])
            p["true_ids"].append(new_index[lc])
            p["true_leaf"].append(is_leaf[lc])
            p["false_ids"].append(new_index[rc])
            p["false_leaf"].append(is_leaf[rc])
            p["missing"].append(tree.missing_left[internal])
            p["leaf_targets"].append(np.full(len(leaves), target))
            p["leaf_weights"].append(tree.value[leaves, column])
            n_nodes += len(internal)
            n_leaves += len(leaves)

    node = helper.make_node(
        "TreeEnsemble",
        ["X"],
        ["Y"],
        domain="ai.onnx.ml",
        n_targets=c.n_targets,
        aggregate_function=1,  # SUM
        post_transform=0,  # NONE: the transform is applied in float64 numpy at serving
        tree_roots=roots,
        nodes_featureids=_ints(p["feats"]),
        nodes_splits=_floats(p["splits"], "nodes_splits"),
        nodes_modes=numpy_helper.from_array(np.full(n_nodes, c.mode, np.uint8), "nodes_modes"),
        nodes_truenodeids=_ints(p["true_ids"]),
        nodes_trueleafs=_ints(p["true_leaf"]),
        nodes_falsenodeids=_ints(p["false_ids"]),
        nodes_falseleafs=_ints(p["false_leaf"]),
        nodes_missing_value_tracks_true=_ints(p["missing"]),
        leaf_targetids=_ints(p["leaf_targets"]),
        leaf_weights=_floats(p["leaf_weights"], "leaf_weights"),
    )
    return node, 5, "double"


def _tree_ensemble_v3(c: CompiledTrees) -> tuple[Any, int, str]:
    """One `TreeEnsembleRegressor` node (ai.onnx.ml opset 3): float64 in, float32 out.

    Thresholds, leaf values and sums are float64 (onnxruntime accumulates in the threshold type);
    only the final sums are rounded to float32 (relative error <= 6e-8), which for the forests'
    probabilities in [0, 1] is far inside the tolerance. Leaves may feed several targets, so a
    forest is traversed once per tree rather than once per tree and class.
    """
    from onnx import helper

    modes = {LEQ: "BRANCH_LEQ", LT: "BRANCH_LT"}
    names = ("tree_ids", "node_ids", "feats", "splits", "true_ids", "false_ids", "missing")
    targets = ("t_tree", "t_node", "t_target", "t_weight")
    p: dict[str, list[np.ndarray]] = {n: [] for n in (*names, *targets)}
    mode_list: list[str] = []
    for tid, tree in enumerate(c.trees):
        n = len(tree.left)
        is_leaf = tree.left < 0
        p["tree_ids"].append(np.full(n, tid))
        p["node_ids"].append(np.arange(n))
        p["feats"].append(np.where(is_leaf, 0, tree.feature))
        p["splits"].append(np.where(is_leaf, 0.0, tree.threshold))
        mode_list.extend("LEAF" if leaf else modes[c.mode] for leaf in is_leaf)
        p["true_ids"].append(np.where(is_leaf, 0, tree.left))
        p["false_ids"].append(np.where(is_leaf, 0, tree.right))
        p["missing"].append(np.where(is_leaf, 0, tree.missing_left))
        leaves = np.flatnonzero(is_leaf)
        for column, target in enumerate(tree.targets):
            p["t_tree"].append(np.full(len(leaves), tid))
            p["t_node"].append(leaves)
            p["t_target"].append(np.full(len(leaves), target))
            p["t_weight"].append(tree.value[leaves, column])
    node = helper.make_node(
        "TreeEnsembleRegressor",
        ["X"],
        ["Y"],
        domain="ai.onnx.ml",
        n_targets=c.n_targets,
        aggregate_function="SUM",
        post_transform="NONE",
        nodes_treeids=_ints(p["tree_ids"]),
        nodes_nodeids=_ints(p["node_ids"]),
        nodes_featureids=_ints(p["feats"]),
        nodes_values_as_tensor=_floats(p["splits"], "nodes_values"),
        nodes_modes=mode_list,
        nodes_truenodeids=_ints(p["true_ids"]),
        nodes_falsenodeids=_ints(p["false_ids"]),
        nodes_missing_value_tracks_true=_ints(p["missing"]),
        target_treeids=_ints(p["t_tree"]),
        target_nodeids=_ints(p["t_node"]),
        target_ids=_ints(p["t_target"]),
        target_weights_as_tensor=_floats(p["t_weight"], "target_weights"),
    )
    return node, 3, "float"
