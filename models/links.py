"""Link functions from raw model scores to class probabilities, shared by every member path."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax (max-shifted, so large logits do not overflow)."""
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def probabilities(raw: np.ndarray, logistic_scale: float = 1.0) -> np.ndarray:
    """Class probabilities from raw scores: one column is a binary logit (logistic link, two
    columns out), several columns are multiclass logits (softmax)."""
    if raw.shape[1] == 1:
        p = 1.0 / (1.0 + np.exp(-logistic_scale * raw[:, 0]))
        return np.column_stack([1.0 - p, p])
    return softmax(raw)
