"""Labelled feedback as training data: the checks a retraining run must pass, and its verdict.

Pure functions (no model store, no state store), so each rule is tested on its own:

- `to_frame`: labelled requests (the state store's `labelled_requests`) -> feature table + labels,
  with the schema check (the features the parent was trained on, nothing else; known classes).
- `signal_check`: do the labels carry signal? The cross-validated accuracy of a quick classifier
  on the feedback rows must beat the majority-class rate by a one-sided binomial test
  (`scipy.stats.binomtest`). Shuffled (poisoned) labels carry none and fail.
- `holdout_split`: the recent labelled holdout (stratified, seeded).
- `refusal_reasons`: the rule that refuses a child worse than its parent beyond a tolerance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class Check:
    """One named check: passed or not, why, and its figures."""

    name: str
    passed: bool
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def to_frame(rows: Sequence[Mapping[str, Any]], schema) -> tuple[pd.DataFrame, np.ndarray, Check]:
    """The feature table (the schema's columns, in order) and labels of labelled requests.

    The check fails when a row lacks one of the schema's features or has features the schema
    does not know (another schema: data from a different model), or when a label is not one of
    the parent's classes. Values are coerced by the schema (unknown categories become missing).
    """
    names = list(schema.names)
    known = set(names)
    missing: dict[str, int] = {}
    unknown: dict[str, int] = {}
    for row in rows:
        features = row["features"]
        for name in known.difference(features):
            missing[name] = missing.get(name, 0) + 1
        for name in set(features).difference(known):
            unknown[name] = unknown.get(name, 0) + 1
    labels = np.array([str(r["label"]) for r in rows], dtype=object)
    strange = sorted(set(labels.tolist()).difference(schema.classes))
    problems = []
    if missing:
        problems.append(f"features missing from some rows: {sorted(missing)}")
    if unknown:
        problems.append(f"features the parent does not know: {sorted(unknown)}")
    if strange:
        problems.append(f"labels that are not the parent's classes {schema.classes}: {strange}")
    check = Check(
        "schema",
        not problems,
        "; ".join(problems) or f"{len(rows)} rows with the parent's {len(names)} features",
        {"missing": missing, "unknown": unknown, "unknown_labels": strange},
    )
    frame = pd.DataFrame([{n: r["features"].get(n) for n in names} for r in rows], columns=names)
    return schema.coerce_frame(frame), labels, check


def count_check(n_rows: int, min_labelled: int) -> Check:
    return Check(
        "min_labelled",
        n_rows >= min_labelled,
        f"{n_rows} labelled requests (at least {min_labelled} needed)",
        {"rows": n_rows, "min_labelled": min_labelled},
    )


def class_check(labels: np.ndarray, min_per_class: int = 5) -> Check:
    """Every class seen in the feedback has a few rows (a stratified holdout needs them), and
    at least two classes are present."""
    values, counts = np.unique(labels.astype(str), return_counts=True)
    per_class = {str(v): int(c) for v, c in zip(values, counts, strict=True)}
    rare = {k: v for k, v in per_class.items() if v < min_per_class}
    ok = len(per_class) >= 2 and not rare
    detail = f"labels per class {per_class}"
    if len(per_class) < 2:
        detail += ": a single class, nothing to learn"
    elif rare:
        detail += f": fewer than {min_per_class} rows for {sorted(rare)}"
    return Check("classes", ok, detail, {"per_class": per_class})


def signal_check(
    codes: np.ndarray, labels: np.ndarray, seed: int, alpha: float = 0.01, folds: int = 5
) -> Check:
    """Whether the labels carry signal the features can predict.

    A small histogram gradient boosting is cross-validated (stratified `folds`, seeded) on the
    feedback rows; its out-of-fold correct count is tested against the majority-class rate with a
    one-sided exact binomial test. Passes when p < `alpha`. Labels shuffled against their
    features score about the majority rate and fail.
    """
    from scipy.stats import binomtest
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    y = np.asarray(labels).astype(str)
    n = len(y)
    _, counts = np.unique(y, return_counts=True)
    majority = float(counts.max() / n) if n else 1.0
    folds = int(min(folds, counts.min())) if len(counts) >= 2 else 0
    if folds < 2 or majority >= 1.0:
        return Check(
            "signal",
            False,
            "too few rows per class to cross-validate",
            {"rows": n, "majority_rate": majority},
        )
    model = HistGradientBoostingClassifier(
        max_iter=60, learning_rate=0.1, max_leaf_nodes=15, random_state=seed
    )
    predicted = cross_val_predict(
        model, codes, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed)
    )
    correct = int((predicted == y).sum())
    p_value = float(binomtest(correct, n, majority, alternative="greater").pvalue)
    accuracy = correct / n
    passed = p_value < alpha
    verdict = "carry signal" if passed else "carry no signal the features predict"
    return Check(
        "signal",
        passed,
        f"labels {verdict}: cross-validated accuracy {accuracy:.3f} vs majority rate "
        f"{majority:.3f} (binomial p = {p_value:.2g}, needs < {alpha:g})",
        {
            "cv_accuracy": round(accuracy, 5),
            "majority_rate": round(majority, 5),
            "p_value": p_value,
            "alpha": alpha,
            "rows": n,
            "folds": folds,
        },
    )


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, holdout indices) of the labelled rows: stratified when every class has two
    rows, seeded."""
    from sklearn.model_selection import train_test_split

    y = np.asarray(labels).astype(str)
    index = np.arange(len(y))
    _, counts = np.unique(y, return_counts=True)
    stratify = y if counts.min() >= 2 else None
    train, holdout = train_test_split(
        index, test_size=fraction, random_state=seed, stratify=stratify
    )
    return np.sort(train), np.sort(holdout)


def refusal_reasons(
    metrics: Mapping[str, Mapping[str, float]], tolerance: float, original_tolerance: float
) -> list[str]:
    """Why a child must be refused (empty: it may be saved).

    `metrics` = {"holdout": {"parent": accuracy, "child": accuracy}, "original_test": {...}}. The
    child is refused when its accuracy on the recent holdout is more than `tolerance` below its
    parent's, or on the original test split more than `original_tolerance` below.
    """
    reasons = []
    for split, allowed, label in (
        ("holdout", tolerance, "the recent labelled holdout"),
        ("original_test", original_tolerance, "the original test split"),
    ):
        parent = float(metrics[split]["parent"])
        child = float(metrics[split]["child"])
        if child < parent - allowed - 1e-12:
            reasons.append(
                f"worse than its parent on {label}: accuracy {child:.4f} vs {parent:.4f} "
                f"(a drop of {parent - child:.4f}, tolerance {allowed:.4f})"
            )
    return reasons
