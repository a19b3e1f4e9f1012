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
    n = n_rows
    age = rng.uniform(18, 80, n)
    income = rng.lognormal(10.6, 0.55, n)
    debt_ratio = rng.beta(2.0, 5.0, n)
    credit_utilization = rng.beta(2.0, 3.0, n)
    num_accounts = rng.poisson(4.0, n).astype(float)
    late_payments_12m = rng.poisson(0.8, n).astype(float)
    account_age_months = rng.gamma(3.0, 24.0, n)
    loan_amount = rng.lognormal(9.5, 0.8, n)
    loan_term_months = rng.choice([12.0, 24.0, 36.0, 48.0, 60.0], n)
    savings_balance = rng.lognormal(8.0, 1.3, n)
    transaction_volatility = rng.normal(0.0, 1.0, n)
    days_since_last_login = rng.exponential(20.0, n)
    support_tickets = rng.poisson(1.2, n).astype(float)
    employment_years = np.clip(rng.normal(8.0, 6.0, n), 0, None)
    dependents = rng.poisson(1.1, n).astype(float)
    region = rng.choice(REGIONS, n, p=[0.25, 0.2, 0.2, 0.2, 0.15])
    plan = rng.choice(PLANS, n, p=[0.4, 0.3, 0.2, 0.1])
    noise_cols = {f"signal_{i:02d}": rng.normal(0.0, 1.0, n) for i in range(7)}

    z_income = (np.log(income) - 10.6) / 0.55
    z_age = (age - 49.0) / 17.9
    periodic = np.sin(account_age_months / 9.0)
    loan_to_income = loan_amount / income
    region_idx = np.searchsorted(np.array(sorted(REGIONS)), region)
    plan_idx = np.array([PLANS.index(p) for p in plan])
    region_plan = ((region_idx + plan_idx) % 3) - 1.0  # an interaction no single feature shows

    high = (
        2.2 * (late_payments_12m >= 2)
        + 1.6 * (credit_utilization > 0.65) * (debt_ratio > 0.3)
        + 1.4 * np.sign(transaction_volatility) * np.sign(z_age)
        + 1.2 * periodic
        + 1.5 * (loan_to_income > 0.5)
        + 0.9 * region_plan
        - 1.0 * (savings_balance > 6000)
        + 0.8 * (days_since_last_login > 40)
        + 1.2 * (debt_ratio - 0.29) / 0.16
        + 0.6 * late_payments_12m
    )
    medium = (
        1.5 * (np.abs(z_income) < 0.6)
        + 1.3 * np.cos(2.0 * noise_cols["signal_00"]) * (num_accounts > 3)
        + 1.0 * (support_tickets >= 2)
        + 1.2 * (employment_years < 3) * (dependents >= 2)
        + 0.8 * np.sign(noise_cols["signal_01"] * noise_cols["signal_02"])
        + 0.6 * (loan_term_months >= 48)
    )
    low = (
        1.6 * (z_income > 0.4) * (debt_ratio < 0.25)
        + 1.2 * (account_age_months > 80)
        + 1.1 * (plan_idx >= 2) * (region_idx % 2 == 0)
        + 1.0 * np.abs(noise_cols["signal_03"]) * (credit_utilization < 0.4)
        + 0.7 * np.sin(3.0 * noise_cols["signal_04"])
        + 1.1 * z_income
        - 0.9 * (credit_utilization - 0.4) / 0.2
    )
    if shift:  # SHIFT_TERMS; its own random stream, so the original draws stay the same
        segment = np.random.default_rng([seed, 5]).random(n) < SHIFT_SEGMENT_SHARE
        noise_cols["signal_05"] = noise_cols["signal_05"] + 4.0 * shift * segment
        high = high + 2.5 * shift * np.clip(noise_cols["signal_05"] - 2.5, 0.0, None)
        low = low + 2.5 * shift * segment * (region == "south")
    scores = np.column_stack([low + 0.55, medium + 0.45, high - 0.25])
    scores += rng.gumbel(0.0, 0.2, scores.shape)
    label = np.array(CLASSES)[scores.argmax(axis=1)]

    frame = pd.DataFrame(
        {
            "age": age.round(0),
            "income": income.round(2),
            "debt_ratio": debt_ratio.round(4),
            "credit_utilization": credit_utilization.round(4),
            "num_accounts": num_accounts,
            "late_payments_12m": late_payments_12m,
            "account_age_months": account_age_months.round(1),
            "loan_amount": loan_amount.round(2),
            "loan_term_months": loan_term_months,
            "savings_balance": savings_balance.round(2),
            "transaction_volatility": transaction_volatility.round(4),
            "days_since_last_login": days_since_last_login.round(1),
            "support_tickets": support_tickets,
            "employment_years": employment_years.round(1),
            "dependents": dependents,
            **{k: v.round(4) for k, v in noise_cols.items()},
            "region": region,
            "plan": plan,
        }
    )
    # Missing values, as real exports have them (MCAR, a few percent in some columns).
    for column, rate in [
        ("income", 0.04),
        ("savings_balance", 0.06),
        ("employment_years", 0.05),
        ("days_since_last_login", 0.03),
        ("signal_05", 0.02),
        ("region", 0.03),
    ]:
        frame.loc[rng.random(n) < rate, column] = None
    frame[DEFAULT_TARGET] = label
    return frame


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
