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


def resolve_parent(explicit: str | None, state) -> str:
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


def original_options(meta: dict[str, Any], opts: RetrainOptions):
    """TrainingOptions that regenerate (or reload) the parent's original training data."""
    from training.pipeline import TrainingOptions

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
    from training.pipeline import ExtraRows, fit, load_training_table, save_models

    started = time.perf_counter()
    try:
        state = StateStore(opts.state_url)
    except Exception as exc:
        raise RetrainError(f"cannot open the state store {opts.state_url}: {exc}") from None
    until = time.time()
    since = until - float(opts.since_s)
    try:
        parent_tag = resolve_parent(opts.parent, state)
        rows = state.labelled_requests(since, MAX_LABELLED_ROWS)
    finally:
        state.close()
    parent_meta = dict(bentoml.models.get(parent_tag).info.metadata)
    parent, _ = store.load(parent_tag)
    schema = parent.schema
    result: dict[str, Any] = {
        "outcome": "refused",
        "parent": parent_tag,
        "tag": None,
        "reasons": [],
        "checks": [],
        "data_window": {"since": since, "until": until},
    }

    def refuse(checks: list[Check], reasons: list[str]) -> dict[str, Any]:
        result["checks"] = [c.as_dict() for c in checks]
        result["reasons"] = reasons
        result["seconds"] = round(time.perf_counter() - started, 1)
        return result

    checks = [count_check(len(rows), opts.min_labelled)]
    if not checks[0].passed:
        return refuse(checks, [checks[0].detail])
    X_fb, y_fb, schema_check = to_frame(rows, schema)
    checks.append(schema_check)
    checks.append(class_check(y_fb))
    if not all(c.passed for c in checks):
        return refuse(checks, [c.detail for c in checks if not c.passed])
    codes_fb = schema.encode_frame(X_fb)
    checks.append(signal_check(codes_fb, y_fb, opts.seed, alpha=opts.signal_alpha))

    options = original_options(parent_meta, opts)
    original_frame, _ = load_training_table(options)
    fingerprint = data_mod.fingerprint(original_frame)
    expected = parent_meta.get("training", {}).get("fingerprint")
    checks.append(
        Check(
            "original_data",
            expected is None or fingerprint == expected,
            "the original training data matches the parent's fingerprint"
            if expected is None or fingerprint == expected
            else f"the original training data differs from the parent's ({fingerprint[:12]} vs "
            f"{str(expected)[:12]})",
            {"fingerprint": fingerprint},
        )
    )
    del original_frame
    if not all(c.passed for c in checks):
        return refuse(checks, [c.detail for c in checks if not c.passed])

    train_idx, holdout_idx = holdout_split(y_fb, opts.holdout, opts.seed)
    fb_train, fb_val = holdout_split(y_fb[train_idx], 0.15, opts.seed + 1)
    fb_train, fb_val = train_idx[fb_train], train_idx[fb_val]
    n_original_train = int(round(0.7 * parent_meta.get("training", {}).get("rows", 0))) or 1
    share = float(opts.feedback_share)
    repeat = int(
        np.clip(round(share * n_original_train / ((1 - share) * max(len(fb_train), 1))), 1, 20)
    )
    extra = ExtraRows(
        X_train=X_fb.iloc[fb_train].reset_index(drop=True),
        y_train=y_fb[fb_train],
        X_val=X_fb.iloc[fb_val].reset_index(drop=True),
        y_val=y_fb[fb_val],
        repeat=repeat,
    )
    log.info(
        "retraining %s: %d labelled rows (%d train x%d, %d validation, %d holdout)",
        parent_tag,
        len(rows),
        len(fb_train),
        repeat,
        len(fb_val),
        len(holdout_idx),
    )
    trained = fit(options, extra)
    try:
        if trained.schema.names != schema.names or trained.schema.classes != schema.classes:
            raise RetrainError("the regenerated data's schema differs from the parent's")
        class_index = {c: i for i, c in enumerate(schema.classes)}
        y_holdout = np.array([class_index[v] for v in y_fb[holdout_idx]])
        codes_holdout = codes_fb[holdout_idx]
        metrics = {
            "holdout": {
                "parent": classification_metrics(y_holdout, parent.predict_proba(codes_holdout)),
                "child": classification_metrics(
                    y_holdout, trained.ensemble.predict_proba(codes_holdout)
                ),
            },
            "original_test": {
                "parent": classification_metrics(
                    trained.y_test, parent.predict_proba(trained.codes_test)
                ),
                "child": classification_metrics(
                    trained.y_test, trained.ensemble.predict_proba(trained.codes_test)
                ),
            },
        }
        reasons = refusal_reasons(
            {k: {w: m["accuracy"] for w, m in v.items()} for k, v in metrics.items()},
            opts.tolerance,
            opts.original_tolerance,
        )
        created = [float(r["created_at"]) for r in rows]
        lineage = {
            "parent": parent_tag,
            "data_window": {
                "since": since,
                "until": until,
                "first": min(created),
                "last": max(created),
            },
            "rows": {
                "original": int(parent_meta.get("training", {}).get("rows", 0)),
                "feedback_train": len(fb_train),
                "feedback_validation": len(fb_val),
                "feedback_holdout": len(holdout_idx),
                "feedback_repeat": repeat,
            },
            "metrics": metrics,
            "tolerance": {"holdout": opts.tolerance, "original_test": opts.original_tolerance},
            "checks": [c.as_dict() for c in checks],
        }
        result["lineage"] = lineage
        result["checks"] = lineage["checks"]
        result["metrics"] = metrics
        result["feature_importance"] = trained.report.get("feature_importance")
        if reasons:
            result["reasons"] = reasons
        else:
            result["outcome"] = "accepted"
            if opts.save:
                trained.ensemble_meta["lineage"] = lineage
                trained.labels = {
                    **trained.labels,
                    "origin": "retrained",
                    "parent": parent_tag.split(":", 1)[1],
                }
                save_models(trained, ensemble_only=True)
                result["tag"] = trained.report["ensemble"]["tag"]
    finally:
        trained.members_dir.cleanup()
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


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
