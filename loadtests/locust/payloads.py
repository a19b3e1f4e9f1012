"""Request payloads for the load tests, generated from the served model's feature schema.

The schema comes from `GET /api/models` (field `classic.schema`) of the server under test, so the
generated rows are valid for whatever model is deployed: numeric features are drawn inside
[min, max] around mean/std (a shifted log-normal for right-skewed, non-negative columns such as
money amounts; integral ranges give whole numbers), categorical features from the known
categories, and each feature is null with its training missing rate. Every row is distinct, so the
router's prediction cache does not make a run look faster than real traffic.

Also here: a user-id population with Zipf-like reuse (a few heavy users, a long tail), so the
sticky split sees realistic repeat traffic, and `check_prediction`, the response validation
shared by every Locust task and the benchmark.

No Locust import: usable from plain Python (benchmark, tests).
"""

from __future__ import annotations

import bisect
import json
import math
import random
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

MODELS = ("classic", "ensemble")
PROBABILITY_TOLERANCE = 1e-3


# --------------------------------------------------------------------------- schema
def fetch_models(host: str, timeout: float = 10.0) -> dict[str, Any]:
    """GET {host}/api/models as JSON (raises on a non-200 answer or a network error)."""
    request = urllib.request.Request(
        host.rstrip("/") + "/api/models", headers={"Accept": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (loopback URL from the user)
        return json.loads(response.read())


def schema_from_models(models: Mapping[str, Any]) -> dict[str, Any]:
    """The feature schema ({features, classes}) of the served classic model (the router's
    schema)."""
    for name in ("classic", "ensemble"):
        schema = (models.get(name) or {}).get("schema")
        if schema and schema.get("features") and schema.get("classes"):
            return schema
    raise ValueError("GET /api/models has no model with a feature schema (is a model loaded?)")


# --------------------------------------------------------------------------- rows
class RowGenerator:
    """Random, valid, distinct feature rows for one schema."""

    def __init__(self, schema: Mapping[str, Any], rng: random.Random | None = None):
        self.features: list[dict[str, Any]] = list(schema["features"])
        self.classes: list[str] = [str(c) for c in schema["classes"]]
        self.rng = rng or random.Random()
        self._draw = [self._drawer(f) for f in self.features]

    def row(self) -> dict[str, Any]:
        rng = self.rng
        out: dict[str, Any] = {}
        for feature, draw in zip(self.features, self._draw, strict=True):
            rate = feature.get("missing_rate") or 0.0
            out[feature["name"]] = None if rate and rng.random() < rate else draw()
        return out

    def rows(self, n: int) -> list[dict[str, Any]]:
        return [self.row() for _ in range(n)]

    def _drawer(self, feature: Mapping[str, Any]):
        rng = self.rng
        if feature["kind"] == "categorical":
            categories = list(feature.get("categories") or [])
            if not categories:
                return lambda: None
            return lambda: rng.choice(categories)
        lo, hi = feature.get("min"), feature.get("max")
        mean, std = feature.get("mean"), feature.get("std")
        if lo is None or hi is None:  # no range recorded: a standard normal is the best guess
            lo, hi = -3.0, 3.0
        mean = (lo + hi) / 2 if mean is None else mean
        std = (hi - lo) / 6 if not std else std
        integral = float(lo).is_integer() and float(hi).is_integer() and 0 < hi - lo <= 1000
        decimals = 0 if integral else 4
        if hi <= lo:
            return lambda: lo
        skewed = lo >= 0 and mean - 1.5 * std < lo < mean
        if skewed:  # min + log-normal with the recorded mean and std: money amounts, counts of days
            m = mean - lo
            sigma2 = math.log1p((std / m) ** 2)
            mu, sigma = math.log(m) - sigma2 / 2, math.sqrt(sigma2)

            def draw() -> float:
                return _clip(lo + rng.lognormvariate(mu, sigma), lo, hi, decimals)
        else:

            def draw() -> float:
                for _ in range(4):  # truncated normal by rejection, then clip
                    value = rng.gauss(mean, std)
                    if lo <= value <= hi:
                        break
                return _clip(value, lo, hi, decimals)

        return draw


def _clip(value: float, lo: float, hi: float, decimals: int) -> float:
    value = min(max(value, lo), hi)
    return float(round(value)) if decimals == 0 else round(value, decimals)


# --------------------------------------------------------------------------- users
@dataclass
class UserPopulation:
    """`size` user ids drawn with Zipf-like reuse: id rank k has weight 1 / k**exponent."""

    size: int = 10_000
    exponent: float = 1.1
    prefix: str = "lt-user-"

    def __post_init__(self) -> None:
        weights = [1.0 / (k**self.exponent) for k in range(1, self.size + 1)]
        self._cumulative = list(accumulate(weights))
        self._total = self._cumulative[-1]
        self.ids = [f"{self.prefix}{k:05d}" for k in range(self.size)]

    def pick(self, rng: random.Random) -> str:
        return self.ids[bisect.bisect_left(self._cumulative, rng.random() * self._total)]

    def tier(self, user_id: str) -> str:
        """A stable request attribute per user (for eligibility rules): 70 % free, 25 % paid, 5 %
        enterprise."""
        bucket = int(user_id[-5:]) % 20 if user_id[-5:].isdigit() else 0
        return "enterprise" if bucket == 0 else "paid" if bucket <= 5 else "free"


# --------------------------------------------------------------------------- validation
def check_prediction(
    body: Any,
    classes: Sequence[str],
    expect_model: str | None = None,
    expect_reason: str | None = None,
) -> str | None:
    """Why a prediction body is wrong, or None when it is right."""
    if not isinstance(body, Mapping):
        return f"body is not an object: {str(body)[:80]}"
    missing = [
        k
        for k in ("label", "probabilities", "model", "model_version", "request_id", "fallback")
        if k not in body
    ]
    if missing:
        return f"missing field(s) {missing}"
    label, probabilities, model = body["label"], body["probabilities"], body["model"]
    if label not in classes:
        return f"label {label!r} not in classes {list(classes)}"
    if not isinstance(probabilities, Mapping) or set(probabilities) != set(classes):
        keys = sorted(probabilities) if isinstance(probabilities, Mapping) else probabilities
        return f"probabilities keys {keys!r} != classes {sorted(classes)}"
    values = list(probabilities.values())
    if not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0 for v in values
    ):
        return f"probabilities not all in [0, 1]: {values}"
    total = sum(values)
    if abs(total - 1.0) > PROBABILITY_TOLERANCE:
        return f"probabilities sum to {total:.6f}, not 1"
    if probabilities[label] < max(values) - 1e-9:
        return f"label {label!r} is not the most probable class"
    if model not in MODELS:
        return f"model {model!r} not in {MODELS}"
    if expect_model is not None and model != expect_model:
        return f"model {model!r}, expected {expect_model!r}"
    if not body["model_version"] or not body["request_id"]:
        return "empty model_version or request_id"
    if not isinstance(body["fallback"], bool) or not isinstance(body.get("cached", False), bool):
        return "fallback/cached are not booleans"
    if body["fallback"] and model != "classic":
        return f"fallback answer from {model!r} (fallback is always classic)"
    if expect_reason is not None and body.get("reason") != expect_reason:
        return f"reason {body.get('reason')!r}, expected {expect_reason!r}"
    return None


def check_batch(body: Any, n: int, classes: Sequence[str]) -> str | None:
    """Why a batch answer is wrong, or None."""
    if not isinstance(body, Mapping) or not isinstance(body.get("predictions"), list):
        return "body has no 'predictions' list"
    predictions = body["predictions"]
    if len(predictions) != n:
        return f"{len(predictions)} predictions for {n} instances"
    for i, prediction in enumerate(predictions):
        problem = check_prediction(prediction, classes)
        if problem:
            return f"predictions[{i}]: {problem}"
    return None


def check_feedback(body: Any, request_id: str, predicted: str, label: str) -> str | None:
    """Why an answer of POST /api/feedback is wrong, or None."""
    if not isinstance(body, Mapping):
        return f"body is not an object: {str(body)[:80]}"
    if body.get("request_id") != request_id:
        return f"answer for request_id {body.get('request_id')!r}, sent {request_id!r}"
    if body.get("status") not in ("recorded", "duplicate"):
        return f"status {body.get('status')!r}, expected 'recorded' or 'duplicate'"
    if "predicted" in body and body["predicted"] != predicted:
        return f"predicted {body['predicted']!r}, but the prediction was {predicted!r}"
    if "correct" in body and body["correct"] != (predicted == label):
        return f"correct={body['correct']!r} for predicted {predicted!r} and label {label!r}"
    return None
