"""CatBoost's oblivious trees in one vectorised numpy pass: the CatBoost member's fast path.

An oblivious (symmetric) tree asks the same question at every node of a level, so a row's leaf is
just the bits `x[feature_j] > border_j` of its d levels read as a number. For all T trees at once
that is one gather, one comparison and one small matrix product, whatever the batch size. CatBoost's
own `predict_proba` builds a `Pool` per call, and that Python set-up (not the trees) was the largest
single cost of the ensemble worker under load (py-spy: 16 % of its GIL time at ~5 rows per batch).

Built from the loaded native model at start-up (CatBoost's JSON export), and used only after it
matches CatBoost's own probabilities within `TOLERANCE` on probe rows that sit on, just above and
just below every border; otherwise the native model serves (see `models.members.load_member`).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import numpy as np

from models.links import probabilities

TOLERANCE = 1e-5


class NotConvertible(ValueError):
    """The model uses something this evaluator does not implement (e.g. categorical splits)."""


class ObliviousTrees:
    """`predict_proba(X) -> (n, n_classes)` of a CatBoost classifier on float features;
    thread-safe."""

    name = "catboost"
    path_kind = "numpy"

    def __init__(
        self,
        features: np.ndarray,
        borders: np.ndarray,
        leaf_values: np.ndarray,
        scale: float = 1.0,
        bias: np.ndarray | float = 0.0,
        n_features: int | None = None,
    ):
        self.features = np.asarray(features, dtype=np.intp)  # (T, d) feature of each level
        self.borders = np.asarray(borders, dtype=np.float32)  # (T, d) go right when x > border
        self.leaf_values = np.asarray(leaf_values, dtype=np.float64)  # (T, 2**d, C)
        depth = self.features.shape[1]
        self._powers = (1 << np.arange(depth)).astype(np.intp)  # level j is bit j of the leaf index
        self._trees = np.arange(len(self.features))[None, :]
        self.scale = float(scale)
        self.bias = np.asarray(bias, dtype=np.float64)
        self.n_features = int(n_features if n_features is not None else self.features.max() + 1)

    @classmethod
    def from_catboost(cls, model: Any) -> ObliviousTrees:
        """Read a fitted CatBoostClassifier through its JSON export."""
        fd, path = tempfile.mkstemp(suffix=".json")
        os.close(fd)
        try:
            model.save_model(path, format="json")
            with open(path) as handle:
                doc = json.load(handle)
        finally:
            os.unlink(path)
        return cls.from_json(doc)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ObliviousTrees:
        trees = doc.get("oblivious_trees") or []
        if not trees or doc.get("features_info", {}).get("categorical_features"):
            raise NotConvertible("only oblivious trees over float features are supported")
        depths = {len(t["splits"]) for t in trees}
        if len(depths) != 1 or 0 in depths:
            raise NotConvertible(f"trees of several depths {sorted(depths)}")
        depth = depths.pop()
        if any(s.get("split_type") != "FloatFeature" for t in trees for s in t["splits"]):
            raise NotConvertible("a split that is not on a float feature")
        n_dims = len(trees[0]["leaf_values"]) // 2**depth
        features = np.array([[s["float_feature_index"] for s in t["splits"]] for t in trees])
        borders = np.array([[s["border"] for s in t["splits"]] for t in trees])
        leaves = np.array([t["leaf_values"] for t in trees], dtype=np.float64).reshape(
            len(trees), 2**depth, n_dims
        )
        scale, bias = doc.get("scale_and_bias", [1.0, [0.0] * n_dims])
        n_features = len(doc.get("features_info", {}).get("float_features", [])) or None
        return cls(
            features,
            borders,
            leaves,
            scale,
            np.broadcast_to(np.asarray(bias, dtype=np.float64), (n_dims,)),
            n_features,
        )

    def raw(self, X: np.ndarray) -> np.ndarray:
        """Summed leaf values (n, C): CatBoost's RawFormulaVal."""
        X = np.asarray(X, dtype=np.float32)
        right = (
            X[:, self.features] > self.borders
        )  # (n, T, d); NaN compares False: CatBoost's "Min" mode
        leaf = right.astype(np.intp) @ self._powers  # (n, T)
        return self.leaf_values[self._trees, leaf].sum(axis=1) * self.scale + self.bias

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return probabilities(self.raw(X))  # binary Logloss: one logit; multiclass: softmax

    def probe_rows(self, rows: int = 512, seed: int = 0) -> np.ndarray:
        """float32 rows whose values sit on, just above and just below each feature's borders."""
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((rows, self.n_features)).astype(np.float32)
        for f in np.unique(self.features):
            b = np.unique(self.borders[self.features == f])
            with np.errstate(over="ignore"):
                candidates = np.concatenate(
                    [b, np.nextafter(b, np.float32(np.inf)), np.nextafter(b, np.float32(-np.inf))]
                )
            candidates = candidates[np.isfinite(candidates)]
            if not len(candidates):
                continue
            pick = rng.random(rows) < 0.8
            X[pick, f] = rng.choice(candidates, size=int(pick.sum()))
        return X


def checked(native: Any) -> tuple[ObliviousTrees, float]:
    """The fast evaluator of a native CatBoost member and its largest probability difference on
    probe rows; raises NotConvertible when the difference exceeds TOLERANCE."""
    fast = ObliviousTrees.from_catboost(native.model)
    X = fast.probe_rows()
    diff = float(np.abs(fast.predict_proba(X) - native.predict_proba(X)).max())
    if not diff <= TOLERANCE:
        raise NotConvertible(f"differs from CatBoost by {diff:.3g} > {TOLERANCE}")
    return fast, diff
