"""Training data: the embedded default data set, user CSV/Parquet loading, and the fixed split.

The default data set is *generated*, never downloaded: a seeded simulation of a loan-risk
problem (three classes: low / medium / high risk) whose label depends on thresholds,
interactions and periodic effects of the features, so that a linear model is clearly weaker
than tree ensembles -- the gap the ensemble exists to close.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from models.schema import FeatureSchema

DEFAULT_TARGET = "risk"
DEFAULT_ROWS = 60_000
DEFAULT_SEED = 42
CLASSES = ("low", "medium", "high")
REGIONS = ("north", "south", "east", "west", "central")
PLANS = ("basic", "standard", "premium", "business")


SHIFT_SEGMENT_SHARE = 0.3
SHIFT_TERMS = (
    "a new segment: with probability 0.3 (a separate seeded stream) a row's signal_05 is moved "
    "up by 4 * shift (the original data has almost no signal_05 above 2.5); then "
    "high += 2.5 * shift * max(signal_05 - 2.5, 0) and, in the segment, "
    "low += 2.5 * shift * [region == south]"
)
"""The shift `make_default_dataset(..., shift=s)` applies: a segment the original data does not
have, labelled by terms the original concept does not have. Figures in `make_default_dataset`."""


class DataError(ValueError):
    """The training data cannot be used; the message says why (shown to the user as is)."""


def make_default_dataset(
    n_rows: int = DEFAULT_ROWS, seed: int = DEFAULT_SEED, shift: float = 0.0
) -> pd.DataFrame:
    """Generate the default data set: 22 numeric + 2 categorical features, 3 classes, ~4% missing.

    Deterministic for a given (n_rows, seed, shift). The label is the argmax of three latent
    scores built from non-linear terms (thresholds, sign interactions, a periodic effect, a
    region-by-plan interaction) plus noise; eight of the numeric features are pure noise.

    `shift` > 0 simulates a **concept shift** (the world moved after training; the features'
    distributions stay the same, only how the label depends on them changes): see `SHIFT_TERMS`.
    `shift=0` is today's data exactly (same bytes, same fingerprint).
    """
    rng = np.random.default_rng(seed)
    f = _draw_features(rng, n_rows)
    low, medium, high = _latent_scores(f)
    if shift:  # SHIFT_TERMS; its own random stream, so the original draws stay the same
        segment = np.random.default_rng([seed, 5]).random(n_rows) < SHIFT_SEGMENT_SHARE
        f["signal_05"] = f["signal_05"] + 4.0 * shift * segment
        high = high + 2.5 * shift * np.clip(f["signal_05"] - 2.5, 0.0, None)
        low = low + 2.5 * shift * segment * (f["region"] == "south")
    scores = np.column_stack([low + 0.55, medium + 0.45, high - 0.25])
    scores += rng.gumbel(0.0, 0.2, scores.shape)
    frame = pd.DataFrame(
        {name: f[name] if places is None else f[name].round(places) for name, places in _COLUMNS}
    )
    # Missing values, as real exports have them (MCAR, a few percent in some columns).
    for column, rate in _MISSING_RATES:
        frame.loc[rng.random(n_rows) < rate, column] = None
    frame[DEFAULT_TARGET] = np.array(CLASSES)[scores.argmax(axis=1)]
    return frame


_NOISE = tuple(f"signal_{i:02d}" for i in range(7))
"""Seven standard-normal columns: five enter the label only through non-linear terms (cosine,
sign, sine), signal_05 only under `shift`, signal_06 never."""

_COLUMNS: tuple[tuple[str, int | None], ...] = (
    ("age", 0),
    ("income", 2),
    ("debt_ratio", 4),
    ("credit_utilization", 4),
    ("num_accounts", None),
    ("late_payments_12m", None),
    ("account_age_months", 1),
    ("loan_amount", 2),
    ("loan_term_months", None),
    ("savings_balance", 2),
    ("transaction_volatility", 4),
    ("days_since_last_login", 1),
    ("support_tickets", None),
    ("employment_years", 1),
    ("dependents", None),
    *((name, 4) for name in _NOISE),
    ("region", None),
    ("plan", None),
)
"""The default data's columns in order, with the decimals each is rounded to (None: as is)."""

_MISSING_RATES = (
    ("income", 0.04),
    ("savings_balance", 0.06),
    ("employment_years", 0.05),
    ("days_since_last_login", 0.03),
    ("signal_05", 0.02),
    ("region", 0.03),
)


def _draw_features(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """The raw feature draws, in the order the data set's bytes depend on."""
    f = {
        "age": rng.uniform(18, 80, n),
        "income": rng.lognormal(10.6, 0.55, n),
        "debt_ratio": rng.beta(2.0, 5.0, n),
        "credit_utilization": rng.beta(2.0, 3.0, n),
        "num_accounts": rng.poisson(4.0, n).astype(float),
        "late_payments_12m": rng.poisson(0.8, n).astype(float),
        "account_age_months": rng.gamma(3.0, 24.0, n),
        "loan_amount": rng.lognormal(9.5, 0.8, n),
        "loan_term_months": rng.choice([12.0, 24.0, 36.0, 48.0, 60.0], n),
        "savings_balance": rng.lognormal(8.0, 1.3, n),
        "transaction_volatility": rng.normal(0.0, 1.0, n),
        "days_since_last_login": rng.exponential(20.0, n),
        "support_tickets": rng.poisson(1.2, n).astype(float),
        "employment_years": np.clip(rng.normal(8.0, 6.0, n), 0, None),
        "dependents": rng.poisson(1.1, n).astype(float),
        "region": rng.choice(REGIONS, n, p=[0.25, 0.2, 0.2, 0.2, 0.15]),
        "plan": rng.choice(PLANS, n, p=[0.4, 0.3, 0.2, 0.1]),
    }
    f.update({name: rng.normal(0.0, 1.0, n) for name in _NOISE})
    return f


def _latent_scores(f: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The low / medium / high scores before noise: thresholds, sign interactions, a periodic
    effect and a region-by-plan interaction no single feature shows."""
    z_income = (np.log(f["income"]) - 10.6) / 0.55
    z_age = (f["age"] - 49.0) / 17.9
    periodic = np.sin(f["account_age_months"] / 9.0)
    loan_to_income = f["loan_amount"] / f["income"]
    region_idx = np.searchsorted(np.array(sorted(REGIONS)), f["region"])
    plan_idx = np.array([PLANS.index(p) for p in f["plan"]])
    region_plan = ((region_idx + plan_idx) % 3) - 1.0
    debt, utilization, late = f["debt_ratio"], f["credit_utilization"], f["late_payments_12m"]
    high = (
        2.2 * (late >= 2)
        + 1.6 * (utilization > 0.65) * (debt > 0.3)
        + 1.4 * np.sign(f["transaction_volatility"]) * np.sign(z_age)
        + 1.2 * periodic
        + 1.5 * (loan_to_income > 0.5)
        + 0.9 * region_plan
        - 1.0 * (f["savings_balance"] > 6000)
        + 0.8 * (f["days_since_last_login"] > 40)
        + 1.2 * (debt - 0.29) / 0.16
        + 0.6 * late
    )
    medium = (
        1.5 * (np.abs(z_income) < 0.6)
        + 1.3 * np.cos(2.0 * f["signal_00"]) * (f["num_accounts"] > 3)
        + 1.0 * (f["support_tickets"] >= 2)
        + 1.2 * (f["employment_years"] < 3) * (f["dependents"] >= 2)
        + 0.8 * np.sign(f["signal_01"] * f["signal_02"])
        + 0.6 * (f["loan_term_months"] >= 48)
    )
    low = (
        1.6 * (z_income > 0.4) * (debt < 0.25)
        + 1.2 * (f["account_age_months"] > 80)
        + 1.1 * (plan_idx >= 2) * (region_idx % 2 == 0)
        + 1.0 * np.abs(f["signal_03"]) * (utilization < 0.4)
        + 0.7 * np.sin(3.0 * f["signal_04"])
        + 1.1 * z_income
        - 0.9 * (utilization - 0.4) / 0.2
    )
    return low, medium, high


def load_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file, turning every reader failure into a DataError."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            frame = pd.read_parquet(path)
        elif suffix in {".csv", ".txt", ""}:
            frame = pd.read_csv(path)
        else:
            raise DataError(f"unsupported file type {suffix!r}: use .csv or .parquet")
    except DataError:
        raise
    except pd.errors.EmptyDataError:
        raise DataError(f"data file is empty: {path}") from None
    except Exception as exc:  # the readers raise many types; the user needs the message
        raise DataError(f"cannot read {path}: {exc}") from None
    if frame.empty:
        raise DataError(f"data file has no rows: {path}")
    return frame


@dataclass(frozen=True)
class Split:
    """The fixed train / validation / test split. Test is never used for fitting or weighting."""

    X_train: pd.DataFrame
    y_train: np.ndarray
    X_val: pd.DataFrame
    y_val: np.ndarray
    X_test: pd.DataFrame
    y_test: np.ndarray


def prepare(frame: pd.DataFrame, target: str) -> tuple[pd.DataFrame, pd.Series, FeatureSchema]:
    """Check the table, infer the feature schema, and return (features, labels, schema)."""
    if target not in frame.columns:
        raise DataError(
            f"target column {target!r} not found; columns are: {', '.join(map(str, frame.columns))}"
        )
    labelled = frame[frame[target].notna()]
    if labelled.empty:
        raise DataError(f"target column {target!r} has no values")
    y = labelled[target].astype(str)
    classes = sorted(y.unique())
    if len(classes) < 2:
        raise DataError(
            f"target column {target!r} has a single class ({classes[0]!r}): nothing to learn"
        )
    counts = y.value_counts()
    if counts.min() < 10:
        rare = ", ".join(f"{c!r} ({n})" for c, n in counts[counts < 10].items())
        raise DataError(f"every class needs at least 10 rows; too few for {rare}")
    X = labelled.drop(columns=[target])
    if X.shape[1] == 0:
        raise DataError("the table has no feature columns besides the target")
    try:
        schema = FeatureSchema.infer(X, classes=classes)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    return schema.coerce_frame(X), y, schema


def split(X: pd.DataFrame, y: pd.Series, seed: int = DEFAULT_SEED) -> Split:
    """Stratified 70 / 15 / 15 split, seeded."""
    from sklearn.model_selection import train_test_split

    y_arr = y.to_numpy()
    X_train, X_rest, y_train, y_rest = train_test_split(
        X, y_arr, test_size=0.30, random_state=seed, stratify=y_arr
    )
    X_val, X_test, y_val, y_test = train_test_split(
        X_rest, y_rest, test_size=0.50, random_state=seed, stratify=y_rest
    )
    return Split(
        X_train.reset_index(drop=True),
        y_train,
        X_val.reset_index(drop=True),
        y_val,
        X_test.reset_index(drop=True),
        y_test,
    )


def fingerprint(frame: pd.DataFrame) -> str:
    """A stable SHA-256 of the table's content, recorded with each model."""
    import hashlib

    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest = hashlib.sha256(hashed.tobytes())
    digest.update(",".join(map(str, frame.columns)).encode())
    return digest.hexdigest()
