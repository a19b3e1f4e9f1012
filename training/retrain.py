"""`python -m training --from-feedback`: a new ensemble version from recent labelled requests.

1. Read the labelled requests of the feedback window from the state store (served requests'
   features joined with their feedback; `StateStore.labelled_requests`).
2. Checks: enough rows (`min_labelled`), the parent's schema and classes, at least two classes
   with a few rows each, labels that carry signal (training/feedback.py `signal_check`), and
   original data that regenerates to the parent's fingerprint.
3. Hold out a recent labelled share (stratified, seeded); the rest joins the original training
   data (regenerated from the parent's metadata, or `--data/--target` for a custom-data parent):
   85 % to the training split (repeated so that it weighs `feedback_share` of it), 15 % to the
   validation split that fits the member weights and the stacker.
4. Retrain the ensemble (training/pipeline.py `fit`), evaluate parent and child on the holdout
   and on the original test split (the parent's split seed), and refuse (`refusal_reasons`) a
   child worse than its parent beyond the tolerances.
5. Accepted: save the ensemble alone, with `lineage` metadata and the label `origin: retrained`.

Exit codes (`main`): 0 accepted (or evaluated with --no-save), 3 refused (nothing saved),
2 error.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.schema import FeatureSchema
from training import data as data_mod
from training.feedback import (
    Check,
    class_check,
    count_check,
    holdout_split,
    refusal_reasons,
    signal_check,
    to_frame,
)
from training.pipeline import (
    ExtraRows,
    Trained,
    TrainingOptions,
    fit,
    load_training_table,
    save_models,
)

log = logging.getLogger(__name__)

EXIT_ACCEPTED = 0
EXIT_ERROR = 2
EXIT_REFUSED = 3
MAX_LABELLED_ROWS = 200_000
"""Most labelled requests one run reads (the newest)."""


class RetrainError(RuntimeError):
    """The run cannot proceed (no store, no parent, unusable original data): exit code 2."""


@dataclass
class RetrainOptions:
    state_url: str
    parent: str | None = None
    since_s: float = 7 * 86_400.0
    holdout: float = 0.3
    tolerance: float = 0.01
    original_tolerance: float = 0.03
    min_labelled: int = 500
    quick: bool = False
    save: bool = True
    data: Path | None = None
    target: str | None = None
    seed: int = 42
    """Seeds the holdout split, the signal check and the members."""
    feedback_share: float = 0.3
    """Share of the training split the feedback rows make up (by repetition, at most 20x)."""
    signal_alpha: float = 0.01


_DEFAULT_SOURCE = re.compile(r"^default\(rows=(\d+), seed=(-?\d+)\)$")


def resolve_parent(explicit: str | None, state: Any) -> str:
    """The parent's full tag: `explicit` (a version or ensemble:<version>), else the version
    pinned in the state store, else SERVING_ENSEMBLE_MODEL (default ensemble:latest)."""
    import bentoml

    if explicit:
        tag = explicit if ":" in explicit else f"ensemble:{explicit}"
    else:
        pins = state.get("model_pins") or {}
        tag = pins.get("ensemble") or os.environ.get("SERVING_ENSEMBLE_MODEL", "ensemble:latest")
    try:
        stored = bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        raise RetrainError(f"parent model {tag} is not in the model store") from None
    if stored.tag.name != "ensemble":
        raise RetrainError(f"parent {tag} is not an ensemble")
    return str(stored.tag)


def original_options(meta: dict[str, Any], opts: RetrainOptions) -> TrainingOptions:
    """TrainingOptions that regenerate (or reload) the parent's original training data."""
    training = meta.get("training", {})
    quick = bool(opts.quick or training.get("quick", False))
    seed = int(training.get("seed", data_mod.DEFAULT_SEED))
    source = str(training.get("source", ""))
    match = _DEFAULT_SOURCE.match(source)
    if opts.data is not None:
        return TrainingOptions(
            data=opts.data,
            target=opts.target or meta.get("target", data_mod.DEFAULT_TARGET),
            seed=seed,
            quick=quick,
            save=False,
        )
    if match is None:
        raise RetrainError(
            f"the parent was trained on {source!r}, not the default data: "
            "give its original data with --data FILE --target COLUMN"
        )
    return TrainingOptions(
        rows=int(match.group(1)),
        seed=int(match.group(2)),
        target=meta.get("target", data_mod.DEFAULT_TARGET),
        quick=quick,
        save=False,
    )


def retrain(opts: RetrainOptions) -> dict[str, Any]:
    """Run the retraining; returns the result (outcome accepted | refused, reasons, lineage)."""
    import bentoml

    from models import store
    from serving.store import StateStore
    from training.evaluate import classification_metrics

    started = time.perf_counter()
    try:
        state = StateStore(opts.state_url)
    except Exception as exc:
        from serving.config.secrets import redact, url_password

        shown = redact(f"{opts.state_url}: {exc}", [url_password(opts.state_url)])
        raise RetrainError(f"cannot open the state store {shown}") from None
    until = time.time()
    since = until - float(opts.since_s)
    try:
        parent_tag = resolve_parent(opts.parent, state)
        rows = state.labelled_requests(since, MAX_LABELLED_ROWS)
    finally:
        state.close()
    parent_meta: dict[str, Any] = dict(bentoml.models.get(parent_tag).info.metadata)
    parent, _ = store.load(parent_tag)
    schema = parent.schema
    result: dict[str, Any] = {"outcome": "refused", "parent": parent_tag, "tag": None}
    result.update(reasons=[], checks=[], data_window={"since": since, "until": until})
    checks, feedback = check_feedback(rows, schema, opts)
    if feedback is not None:  # the original data is regenerated only for usable feedback
        options, original = check_original_data(parent_meta, opts)
        checks.append(original)
    if feedback is None or not all(c.passed for c in checks):
        result["checks"] = [c.as_dict() for c in checks]
        result["reasons"] = [c.detail for c in checks if not c.passed]
        return {**result, "seconds": round(time.perf_counter() - started, 1)}

    n_original = int(parent_meta.get("training", {}).get("rows", 0))
    split = FeedbackSplit.of(feedback.labels, n_original, opts)
    log.info("retraining %s: %d labelled rows (%s)", parent_tag, len(rows), split.describe())
    trained = fit(options, split.extra_rows(feedback))
    try:
        if trained.schema.names != schema.names or trained.schema.classes != schema.classes:
            raise RetrainError("the regenerated data's schema differs from the parent's")
        class_index = {c: i for i, c in enumerate(schema.classes)}
        y_holdout = np.array([class_index[v] for v in feedback.labels[split.holdout]])
        codes_holdout = feedback.codes[split.holdout]

        def parent_and_child(y: np.ndarray, codes: np.ndarray) -> dict[str, Any]:
            return {
                "parent": classification_metrics(y, parent.predict_proba(codes)),
                "child": classification_metrics(y, trained.ensemble.predict_proba(codes)),
            }

        metrics = {
            "holdout": parent_and_child(y_holdout, codes_holdout),
            "original_test": parent_and_child(trained.y_test, trained.codes_test),
        }
        lineage = _lineage(parent_tag, since, until, rows, n_original, split, metrics, checks, opts)
        result.update(
            lineage=lineage,
            checks=lineage["checks"],
            metrics=metrics,
            feature_importance=trained.report.get("feature_importance"),
        )
        reasons = refusal_reasons(
            {k: {w: m["accuracy"] for w, m in v.items()} for k, v in metrics.items()},
            opts.tolerance,
            opts.original_tolerance,
        )
        if reasons:
            result["reasons"] = reasons
        else:
            result["outcome"] = "accepted"
            if opts.save:
                result["tag"] = _save_child(trained, lineage, parent_tag)
    finally:
        trained.members_dir.cleanup()
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


@dataclass
class Feedback:
    """The labelled requests as training data: features (schema columns), labels, codes."""

    X: pd.DataFrame
    labels: np.ndarray
    codes: np.ndarray


def check_feedback(
    rows: list[dict[str, Any]], schema: FeatureSchema, opts: RetrainOptions
) -> tuple[list[Check], Feedback | None]:
    """The checks on the labelled requests themselves (count, schema and classes, signal); the
    feedback is None when one before the signal check failed."""
    checks = [count_check(len(rows), opts.min_labelled)]
    if not checks[0].passed:
        return checks, None
    X_fb, y_fb, schema_check = to_frame(rows, schema)
    checks.append(schema_check)
    checks.append(class_check(y_fb))
    if not all(c.passed for c in checks):
        return checks, None
    codes_fb = schema.encode_frame(X_fb)
    checks.append(signal_check(codes_fb, y_fb, opts.seed, alpha=opts.signal_alpha))
    return checks, Feedback(X_fb, y_fb, codes_fb)


def check_original_data(
    parent_meta: dict[str, Any], opts: RetrainOptions
) -> tuple[TrainingOptions, Check]:
    """The options that regenerate the parent's training data, and the check that they do
    (the data's fingerprint against the one in the parent's metadata)."""
    options = original_options(parent_meta, opts)
    original_frame, _ = load_training_table(options)
    fingerprint = data_mod.fingerprint(original_frame)
    expected = parent_meta.get("training", {}).get("fingerprint")
    matches = expected is None or fingerprint == expected
    detail = (
        "the original training data matches the parent's fingerprint"
        if matches
        else f"the original training data differs from the parent's ({fingerprint[:12]} vs "
        f"{str(expected)[:12]})"
    )
    return options, Check("original_data", matches, detail, {"fingerprint": fingerprint})


@dataclass
class FeedbackSplit:
    """Which labelled rows join the training split (each `repeat` times), which the validation
    split, and which are held out to judge parent and child (indices into the feedback)."""

    train: np.ndarray
    validation: np.ndarray
    holdout: np.ndarray
    repeat: int

    @classmethod
    def of(cls, labels: np.ndarray, n_original_rows: int, opts: RetrainOptions) -> FeedbackSplit:
        """Holdout first (stratified, seeded), then 85 / 15 % of the rest; the repetition makes
        the feedback `feedback_share` of the training split (at most 20x)."""
        train_idx, holdout_idx = holdout_split(labels, opts.holdout, opts.seed)
        fb_train, fb_val = holdout_split(labels[train_idx], 0.15, opts.seed + 1)
        fb_train, fb_val = train_idx[fb_train], train_idx[fb_val]
        n_original_train = int(round(0.7 * n_original_rows)) or 1
        share = float(opts.feedback_share)
        repeat = int(
            np.clip(round(share * n_original_train / ((1 - share) * max(len(fb_train), 1))), 1, 20)
        )
        return cls(fb_train, fb_val, holdout_idx, repeat)

    def describe(self) -> str:
        return (
            f"{len(self.train)} train x{self.repeat}, {len(self.validation)} validation, "
            f"{len(self.holdout)} holdout"
        )

    def extra_rows(self, feedback: Feedback) -> ExtraRows:
        return ExtraRows(
            X_train=feedback.X.iloc[self.train].reset_index(drop=True),
            y_train=feedback.labels[self.train],
            X_val=feedback.X.iloc[self.validation].reset_index(drop=True),
            y_val=feedback.labels[self.validation],
            repeat=self.repeat,
        )


def _lineage(
    parent_tag: str,
    since: float,
    until: float,
    rows: list[dict[str, Any]],
    n_original: int,
    split: FeedbackSplit,
    metrics: dict[str, Any],
    checks: list[Check],
    opts: RetrainOptions,
) -> dict[str, Any]:
    """What a retrained version keeps in its metadata about where it came from."""
    created = [float(r["created_at"]) for r in rows]
    return {
        "parent": parent_tag,
        "data_window": {
            "since": since,
            "until": until,
            "first": min(created),
            "last": max(created),
        },
        "rows": {
            "original": n_original,
            "feedback_train": len(split.train),
            "feedback_validation": len(split.validation),
            "feedback_holdout": len(split.holdout),
            "feedback_repeat": split.repeat,
        },
        "metrics": metrics,
        "tolerance": {"holdout": opts.tolerance, "original_test": opts.original_tolerance},
        "checks": [c.as_dict() for c in checks],
    }


def _save_child(trained: Trained, lineage: dict[str, Any], parent_tag: str) -> str:
    """Save the accepted child's ensemble alone, labelled `origin: retrained`; its tag."""
    trained.ensemble_meta["lineage"] = lineage
    trained.labels = {
        **trained.labels,
        "origin": "retrained",
        "parent": parent_tag.split(":", 1)[1],
    }
    save_models(trained, ensemble_only=True)
    return str(trained.report["ensemble"]["tag"])


def summary_lines(result: dict[str, Any]) -> list[str]:
    lines = [f"retraining from feedback: parent {result['parent']}: {result['outcome'].upper()}"]
    for check in result.get("checks", []):
        lines.append(
            f"  check {check['name']}: {'ok' if check['passed'] else 'FAILED'}: {check['detail']}"
        )
    for split, figures in result.get("metrics", {}).items():
        lines.append(
            f"  {split}: parent accuracy {figures['parent']['accuracy']:.4f}, "
            f"child {figures['child']['accuracy']:.4f}"
        )
    for reason in result.get("reasons", []):
        lines.append(f"  refused: {reason}")
    if result.get("tag"):
        lines.append(f"saved {result['tag']}")
    lines.append(f"retraining time: {result.get('seconds')} s")
    return lines
