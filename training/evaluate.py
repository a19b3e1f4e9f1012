"""Held-out metrics, computed the same way for every model and member."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, log_loss


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1 and log-loss of class-probability predictions against integer labels."""
    proba = np.asarray(proba, dtype=np.float64)
    proba = proba / proba.sum(axis=1, keepdims=True)
    predicted = proba.argmax(axis=1)
    labels = list(range(proba.shape[1]))
    return {
        "accuracy": round(float(accuracy_score(y_true, predicted)), 5),
        "macro_f1": round(float(f1_score(y_true, predicted, average="macro", labels=labels)), 5),
        "log_loss": round(float(log_loss(y_true, np.clip(proba, 1e-15, 1.0), labels=labels)), 5),
    }


def reference_statistics(codes: np.ndarray, schema) -> dict[str, dict]:
    """Per-feature reference distributions of the training rows, kept for drift detection.

    Numeric: 101 quantiles (0..100%) and the missing rate. Categorical: category frequencies.
    """
    stats: dict[str, dict] = {}
    for j, feature in enumerate(schema.features):
        column = codes[:, j]
        present = column[~np.isnan(column)]
        entry: dict = {"missing_rate": round(float(np.isnan(column).mean()), 6)}
        if feature.kind == "numeric":
            entry["quantiles"] = [
                round(float(q), 6) for q in np.quantile(present, np.linspace(0, 1, 101))
            ]
        else:
            counts = np.bincount(present.astype(np.int64), minlength=len(feature.categories))
            entry["frequencies"] = {
                c: round(float(n) / max(len(present), 1), 6)
                for c, n in zip(feature.categories, counts, strict=False)
            }
        stats[feature.name] = entry
    return stats


def permutation_importance(
    model: Any,
    codes: np.ndarray,
    y: np.ndarray,
    schema: Any,
    seed: int,
    max_rows: int = 1000,
) -> dict[str, float]:
    """Permutation importance of `model` over the schema's input features, normalised to sum 1.

    On at most `max_rows` rows: each feature's column is shuffled (seeded) and the increase of
    the log-loss measured; all shuffled copies go through the model in one call. Negative
    increases count as 0. Monitoring compares versions by the rank correlation of these.
    """
    rng = np.random.default_rng(seed)
    if len(codes) > max_rows:
        rows = rng.choice(len(codes), max_rows, replace=False)
        codes, y = codes[rows], y[rows]
    n, k = codes.shape
    stacked = np.repeat(codes[np.newaxis], k + 1, axis=0)  # copy 0 is the unshuffled baseline
    for j in range(k):
        stacked[j + 1, :, j] = codes[rng.permutation(n), j]
    proba = np.asarray(model.predict_proba(stacked.reshape(-1, k)), dtype=np.float64)
    proba = np.clip(proba.reshape(k + 1, n, -1), 1e-15, 1.0)
    losses = -np.log(proba[:, np.arange(n), y]).mean(axis=1)
    increase = np.clip(losses[1:] - losses[0], 0.0, None)
    total = float(increase.sum())
    return {
        f.name: round(float(v) / total, 6) if total > 0 else 0.0
        for f, v in zip(schema.features, increase, strict=True)
    }
