"""The feature schema: inferred from training data, stored in model metadata, enforced on requests.

A request row is a mapping of feature name to a raw value (number, string or null). `encode_rows`
checks every row against the schema and turns the batch into one float64 matrix of *codes*:
numeric features as floats (NaN = missing), categorical features as the index of the category
(NaN = missing). Every model's own preprocessing step starts from that matrix, so the router
validates once and the model services stay free of per-request dict handling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

MAX_CATEGORIES = 200
"""A string column with more distinct values than this is an identifier, not a feature."""
MAGNITUDE_FACTOR = 1e6
"""A numeric value may be at most this many times the largest magnitude seen in training (or 1):
far outside the data range is still served, but 1e308 is not a measurement. Why: finite 1e308
values overflowed retraining's scaler statistics (mean, variance) to inf/NaN, and a 400-digit
integer raised OverflowError (a 500) on float conversion."""
MAX_MAGNITUDE = 1e15
"""The ceiling whatever the training range (float64 stops being exact for integers at 2**53)."""


class FieldError(BaseModel):
    """One problem with one field of a request, named by its path (e.g.
    `instances[2].features.age`).
    """

    field: str
    message: str


class SchemaValidationError(ValueError):
    """A request does not fit the model's feature schema; carries every offending field."""

    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))


class Feature(BaseModel):
    """One input feature as the training data had it."""

    name: str
    kind: Literal["numeric", "categorical"]
    categories: list[str] = Field(default_factory=list, description="known values (categorical)")
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    missing_rate: float = 0.0

    @property
    def magnitude_limit(self) -> float:
        """The largest |value| a request may send for this numeric feature."""
        seen = max(abs(self.min or 0.0), abs(self.max or 0.0), 1.0)
        return min(MAGNITUDE_FACTOR * seen, MAX_MAGNITUDE)


class FeatureSchema(BaseModel):
    """Feature names, kinds, categories and ranges, plus the class labels, in model order."""

    features: list[Feature]
    classes: list[str]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    # ------------------------------------------------------------------ training side
    @classmethod
    def infer(cls, frame: pd.DataFrame, classes: Sequence[str]) -> FeatureSchema:
        """Infer kinds from a raw table: numbers (or all-numeric strings) are numeric, others
        categorical.

        Raises ValueError with a readable message on unusable columns.
        """
        features: list[Feature] = []
        for column in frame.columns:
            name = str(column)
            series = frame[column]
            missing_rate = float(series.isna().mean())
            if missing_rate == 1.0:
                raise ValueError(f"column {name!r} has no values")
            numeric = _as_numeric(series, name)
            if numeric is not None:
                values = numeric.dropna()
                if not np.isfinite(values.to_numpy()).all():
                    raise ValueError(f"column {name!r} contains infinite values")
                features.append(
                    Feature(
                        name=name,
                        kind="numeric",
                        min=float(values.min()),
                        max=float(values.max()),
                        mean=float(values.mean()),
                        std=float(values.std(ddof=0)),
                        missing_rate=missing_rate,
                    )
                )
            else:
                categories = sorted(series.dropna().astype(str).unique())
                if len(categories) > MAX_CATEGORIES:
                    raise ValueError(
                        f"column {name!r} has {len(categories)} distinct text values (more than "
                        f"{MAX_CATEGORIES}); it looks like an identifier: drop it from the data"
                    )
                features.append(
                    Feature(
                        name=name,
                        kind="categorical",
                        categories=categories,
                        missing_rate=missing_rate,
                    )
                )
        return cls(features=features, classes=[str(c) for c in classes])

    def coerce_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Return the table with numeric columns as float64 and categorical ones as str/None."""
        out = {}
        for feature in self.features:
            series = frame[feature.name]
            if feature.kind == "numeric":
                out[feature.name] = pd.to_numeric(series, errors="coerce").astype("float64")
            else:
                out[feature.name] = series.map(lambda v: None if _is_missing(v) else str(v))
        return pd.DataFrame(out)

    def encode_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """Encode a training table to the code matrix (unknown categories become missing)."""
        codes = np.empty((len(frame), len(self.features)), dtype=np.float64)
        for j, feature in enumerate(self.features):
            series = frame[feature.name]
            if feature.kind == "numeric":
                codes[:, j] = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
            else:
                lookup = {c: float(i) for i, c in enumerate(feature.categories)}
                codes[:, j] = [
                    lookup.get(v, math.nan) if isinstance(v, str) else math.nan for v in series
                ]
        return codes

    # ------------------------------------------------------------------ serving side
    def encode_rows(
        self, rows: Sequence[Mapping[str, Any]], prefix: str = "instances"
    ) -> np.ndarray:
        """Validate request rows and encode them; raise SchemaValidationError naming each bad field.

        Rules: every feature must be present (null means missing); no unknown features; numeric
        features take finite JSON numbers (not booleans or strings); categorical features take
        one of the training categories. Unknown categories are errors, not silently missing.
        """
        codes = np.empty((len(rows), len(self.features)), dtype=np.float64)
        errors: list[FieldError] = []
        lookups = self._lookups
        for i, row in enumerate(rows):
            where = (
                f"{prefix}[{i}].features" if len(rows) > 1 or prefix != "features" else "features"
            )
            if not isinstance(row, Mapping):
                errors.append(
                    FieldError(field=where, message="must be an object of feature values")
                )
                continue
            unknown = [k for k in row if k not in lookups]
            for key in unknown:
                errors.append(FieldError(field=f"{where}.{key}", message="unknown feature"))
            for j, feature in enumerate(self.features):
                name = feature.name
                if name not in row:
                    errors.append(
                        FieldError(
                            field=f"{where}.{name}",
                            message="missing feature (send null for a missing value)",
                        )
                    )
                    continue
                value = row[name]
                if value is None:
                    codes[i, j] = math.nan
                elif feature.kind == "numeric":
                    if isinstance(value, bool) or not isinstance(value, (int, float)):
                        errors.append(
                            FieldError(
                                field=f"{where}.{name}",
                                message=f"must be a number or null, got {type(value).__name__}",
                            )
                        )
                    elif (problem := _magnitude_problem(value, feature)) is not None:
                        errors.append(FieldError(field=f"{where}.{name}", message=problem))
                    else:
                        codes[i, j] = float(value)
                else:
                    if not isinstance(value, str):
                        errors.append(
                            FieldError(
                                field=f"{where}.{name}",
                                message=f"must be a string or null, got {type(value).__name__}",
                            )
                        )
                    elif (code := lookups[name].get(value)) is None:
                        shown = ", ".join(feature.categories[:20])
                        errors.append(
                            FieldError(
                                field=f"{where}.{name}",
                                message=(
                                    f"unknown category {value[:80]!r}; expected one of: {shown}"
                                ),
                            )
                        )
                    else:
                        codes[i, j] = code
            if len(errors) > 50:
                break
        if errors:
            raise SchemaValidationError(errors[:50])
        return codes

    @property
    def _lookups(self) -> dict[str, dict[str, float]]:
        cached = self.__dict__.get("_lookup_cache")
        if cached is None:
            cached = {
                f.name: {c: float(i) for i, c in enumerate(f.categories)} for f in self.features
            }
            self.__dict__["_lookup_cache"] = cached
        return cached

    def example(self) -> dict[str, Any]:
        """A valid example row (means and first categories), for docs and load tests."""
        row: dict[str, Any] = {}
        for f in self.features:
            if f.kind == "numeric":
                row[f.name] = 0.0 if f.mean is None else round(f.mean, 4)
            else:
                row[f.name] = f.categories[0]
        return row


def _magnitude_problem(value: int | float, feature: Feature) -> str | None:
    """Why a JSON number cannot be this feature's value (None: it can). Integers are compared
    before any float conversion, so a 400-digit one is an answer, not an OverflowError."""
    limit = feature.magnitude_limit
    if isinstance(value, int):
        ok = -limit <= value <= limit  # int vs float compares exactly, never overflows
    else:
        if not math.isfinite(value):
            return "must be a finite number"
        ok = abs(value) <= limit
    return None if ok else f"must be between {-limit:g} and {limit:g}"


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _as_numeric(series: pd.Series, name: str) -> pd.Series | None:
    """The column as float64 if it is numeric; None if categorical; ValueError if mixed."""
    if pd.api.types.is_bool_dtype(series):
        return series.astype("float64")
    if pd.api.types.is_numeric_dtype(series):
        return series.astype("float64")
    present = series.dropna()
    parsed = pd.to_numeric(present, errors="coerce")
    bad = parsed.isna()
    if not bad.any():
        return pd.to_numeric(series, errors="coerce").astype("float64")
    if bad.mean() < 0.05:  # mostly numbers with a few strays: unparseable values, not a category
        example = present[bad].iloc[0]
        row = present[bad].index[0]
        raise ValueError(
            f"column {name!r} is numeric but has unparseable values, e.g. {example!r} at row {row}"
        )
    return None
