"""Save, load and list model versions in the real BentoML model store (`bentoml.models`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bentoml

from models.cascade import CascadeSpec
from models.classic import ClassicModel
from models.ensemble import EnsembleModel


def save_classic(model: ClassicModel, metadata: dict[str, Any], labels: dict[str, str]) -> str:
    with bentoml.models.create("classic", labels=labels, metadata=metadata) as stored:
        model.save(Path(stored.path))
    return str(stored.tag)


def save_ensemble(
    model: EnsembleModel,
    fitted: dict[str, object],
    metadata: dict[str, Any],
    labels: dict[str, str],
    classic_head: object | None = None,
    members_from: Path | None = None,
) -> str:
    """Save the ensemble (see `EnsembleModel.save`); `classic_head` when its cascade's first
    stage is classic (metadata `cascade`, see models/cascade.py)."""
    with bentoml.models.create("ensemble", labels=labels, metadata=metadata) as stored:
        model.save(Path(stored.path), fitted, classic_head, members_from)
    return str(stored.tag)


def load(
    tag: str, exclude_members: tuple[str, ...] = ()
) -> tuple[ClassicModel | EnsembleModel, bentoml.Model]:
    """Load `classic:<version>` or `ensemble:<version>`; returns the model and its store entry."""
    stored = bentoml.models.get(tag)
    path = Path(stored.path)
    if stored.tag.name == "ensemble":
        model = EnsembleModel.load(path, exclude=exclude_members)
        model.attach_cascade(CascadeSpec.from_metadata(stored.info.metadata), path)
        return model, stored
    return ClassicModel.load(path), stored


def versions(name: str) -> list[dict[str, Any]]:
    """Every stored version of a model, newest first, with its labels and headline metrics."""
    out = []
    for stored in bentoml.models.list(name):
        metrics = stored.info.metadata.get("metrics")
        out.append(
            {
                "tag": str(stored.tag),
                "version": stored.tag.version,
                "created_at": stored.info.creation_time.isoformat(),
                "labels": dict(stored.info.labels),
                "accuracy": metrics.get("accuracy") if isinstance(metrics, dict) else None,
            }
        )
    return sorted(out, key=lambda v: v["created_at"], reverse=True)


def has_models() -> bool:
    try:
        return bool(bentoml.models.list("classic")) and bool(bentoml.models.list("ensemble"))
    except bentoml.exceptions.NotFound:
        return False
