"""Labelled traffic from the (shifted) default generator, written straight into a state store.

For tests and demonstrations of retraining from feedback: `write_labelled_requests` stores rows
of `make_default_dataset(n, seed, shift)` as served requests (`record_served`) with their true
label as feedback (`record_feedback`), exactly what the router and the feedback endpoint write.
`shuffle_labels` poisons the labels (shuffled against the features).
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

import numpy as np

from training import data as data_mod


def feature_dicts(frame) -> list[dict[str, Any]]:
    """Rows of a feature table as JSON-able dicts (missing values as None), as a client sends."""
    out = []
    for row in frame.to_dict(orient="records"):
        out.append(
            {
                k: None if (v is None or (isinstance(v, float) and math.isnan(v))) else v
                for k, v in row.items()
            }
        )
    return out


def write_labelled_requests(
    state,
    n_rows: int,
    seed: int = 7,
    shift: float = 1.0,
    shuffle_labels: bool = False,
    now: float | None = None,
    arm: str = "ensemble",
    model_version: str | None = None,
) -> int:
    """Store `n_rows` labelled requests spread over the last hour before `now`; returns n."""
    frame = data_mod.make_default_dataset(n_rows, seed, shift=shift)
    labels = frame.pop(data_mod.DEFAULT_TARGET).astype(str).to_numpy()
    if shuffle_labels:
        labels = np.random.default_rng(seed).permutation(labels)
    now = time.time() if now is None else now
    times = now - 3600.0 + np.arange(n_rows) * (3600.0 / max(n_rows, 1))
    served = []
    for features, label, at in zip(feature_dicts(frame), labels, times, strict=True):
        request_id = f"sim-{uuid.uuid4().hex}"
        served.append(
            {
                "request_id": request_id,
                "created_at": float(at),
                "arm": arm,
                "model_version": model_version,
                "predicted": str(label),
                "features": features,
            }
        )
    state.record_served(served)
    for row, label in zip(served, labels, strict=True):
        state.record_feedback(
            row["request_id"],
            arm,
            row["predicted"],
            str(label),
            None,
            None,
            None,
            row["created_at"],
            model_version=model_version,
        )
    return n_rows
