"""What the framework baselines of `python -m loadtests.benchmark` share (MLServer, LitServe and
Ray Serve, each in its own venv): our request body validated by the stored model's schema, our
answer shape, the batch-size counters, the stored ensemble loaded and warmed up.

Stdlib, numpy and the model code only (no bentoml, no FastAPI): imported inside .venv-mlserver,
.venv-litserve and .venv-ray, where the stored ensemble is loaded by path
(`models.ensemble.EnsembleModel.load`).
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

ALLOWED_KEYS = {"features", "user_id", "context"}


class Invalid(ValueError):
    """The body does not validate: 422 with our error body (`error`)."""

    def __init__(self, message: str, fields: list[dict] | None = None):
        super().__init__(message)
        self.error = {"code": "invalid_input", "message": message, "fields": fields or []}


def encode_body(model: Any, body: Any):
    """One request body -> its (1, features) code matrix, validated like our API
    (422 naming the field, as loadtests/baselines/fastapi_app.py answers); Invalid otherwise."""
    from models.schema import SchemaValidationError

    if not isinstance(body, dict) or not isinstance(body.get("features"), dict):
        raise Invalid(
            "body must be an object with a `features` object",
            [{"field": "features", "message": "required object"}],
        )
    extra = sorted(set(body) - ALLOWED_KEYS)
    if extra:
        raise Invalid(
            f"unknown field(s) {extra}", [{"field": k, "message": "extra field"} for k in extra]
        )
    if body.get("user_id") is not None and not isinstance(body["user_id"], str):
        raise Invalid(
            "user_id must be a string", [{"field": "user_id", "message": "must be a string"}]
        )
    try:
        return model.schema.encode_rows([body["features"]], prefix="features")
    except SchemaValidationError as exc:
        raise Invalid(str(exc), [e.model_dump() for e in exc.errors]) from None


def answer(probabilities, classes: list[str], version: str) -> dict[str, Any]:
    """Our API's answer for one row of probabilities."""
    best = int(probabilities.argmax())
    return {
        "label": classes[best],
        "probabilities": {c: float(p) for c, p in zip(classes, probabilities, strict=True)},
        "model": "ensemble",
        "model_version": version,
        "request_id": uuid.uuid4().hex,
        "fallback": False,
        "cached": False,
        "reason": "direct",
    }


def load_model(directory: Path):
    """The stored ensemble by path, members on two threads for large batches (as our service and
    the MLServer runtime run it), warmed up; fast paths unless SERVING_NATIVE_MEMBERS=1."""
    import numpy as np

    from models.ensemble import EnsembleModel

    model = EnsembleModel.load(Path(directory))
    model.enable_member_parallelism(2)
    row = model.schema.encode_rows([model.schema.example()], prefix="features")
    for n in (1, 16, 64):
        model.predict_proba(np.repeat(row, n, axis=0))
    return model


class BatchStats:
    """Rows per predict call, exported as our ensemble service exports them (the benchmark reads
    `tabular_ensemble_batch_rows_sum` / `_count` from /metrics). `path`: also written to a file,
    for a server whose HTTP process is not the one that predicts (LitServe's workers)."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self.rows = 0
        self.calls = 0
        self._lock = threading.Lock()

    def add(self, rows: int) -> None:
        with self._lock:
            self.rows += rows
            self.calls += 1
            if self.path is not None:
                self.path.write_text(f"{self.rows} {self.calls}")

    def text(self) -> str:
        rows, calls = self.rows, self.calls
        if self.path is not None and self.path.exists():
            rows, calls = (int(x) for x in self.path.read_text().split())
        return (
            "# HELP tabular_ensemble_batch_rows Rows per predict call (one adaptive batch).\n"
            "# TYPE tabular_ensemble_batch_rows summary\n"
            f"tabular_ensemble_batch_rows_sum {float(rows)}\n"
            f"tabular_ensemble_batch_rows_count {float(calls)}\n"
        )


def models_entry(schema: dict, version: str, batching: dict, framework: str) -> dict[str, Any]:
    """GET /api/models: the schema (so the load generator works unchanged) and the batching."""
    return {
        "ensemble": {
            "name": "ensemble",
            "tag": f"ensemble:{version}",
            "ready": True,
            "schema": schema,
            "framework": framework,
            "batching": batching,
        }
    }
