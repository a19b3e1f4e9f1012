"""JSON in and out of the store: plain data only, non-finite floats stored as null."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from typing import Any


def finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def plain(value: Any) -> Any:
    """Recursively turn `value` into plain JSON data (non-finite floats become None)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if hasattr(value, "model_dump"):  # pydantic
        return plain(value.model_dump(mode="json"))
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return plain(value.tolist())
    if hasattr(value, "item"):
        return plain(value.item())
    raise TypeError(f"cannot store a {type(value).__name__} as JSON")


def dumps(value: Any) -> str:
    return json.dumps(plain(value), sort_keys=True, allow_nan=False, separators=(",", ":"))
