"""Input drift: live feature distributions against the reference saved at training time.

The reference per feature is what `training.evaluate.reference_statistics` writes:
numeric -> {"missing_rate", "quantiles": 101 values at 0, 1, ..., 100 %};
categorical -> {"missing_rate", "frequencies": {category: share of the present values}}.
Live rows arrive as the code matrix of `models.schema.FeatureSchema.encode_rows` (numeric
floats, categorical category indices, NaN = missing) and go into a sliding window of the last
`DriftConfig.window` rows.

Per feature, `DriftMonitor.report()` computes:

- PSI (population stability index, sum of (live - ref) * ln(live / ref) over bins, shares
  floored at 1e-4). Numeric bins: 10 bins cut at the reference deciles (right-closed; repeated
  deciles of a feature with point masses merge, and each bin's reference share is read off the
  reference CDF). Categorical bins: the categories. Both get one extra bin for missing values,
  so a feature that suddenly arrives empty drifts too.
- A test of the present values: numeric -> two-sample Kolmogorov-Smirnov (`scipy.stats.ks_2samp`)
  against a reference sample of `RECONSTRUCTED_SAMPLE` points reconstructed from the quantiles by
  linear interpolation (two-sample, not one-sample against the piecewise-linear CDF, because the
  one-sample test breaks on the point masses of integer or zero-inflated features), with the
  asymptotic p-value: scipy's default "exact" one costs O(n * m) and took 11 s per report on a
  full window of repeated rows (it ran on the router's rollout tick); with a 10,000-point
  reference the two agree to a few percent, and the reference is itself an approximation;
  categorical -> chi-squared goodness of fit (`scipy.stats.chisquare`) over categories plus a
  missing bin, expected counts from the reference frequencies, categories expected fewer than 5
  times pooled into one bin.
- p-values adjusted for testing many features at once with Benjamini-Hochberg
  (`scipy.stats.false_discovery_control(method="bh")`), controlling the false discovery rate at
  `alpha`.

A feature drifts when it has enough data and its PSI exceeds `psi_threshold` or its adjusted
p-value is below `alpha`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from serving.config.delivery import DriftConfig

RECONSTRUCTED_SAMPLE = 10_000
"""Points of the reference sample rebuilt from the 101 quantiles for the two-sample KS test."""

PSI_FLOOR = 1e-4
"""Smallest share used in PSI, so an empty bin costs a large but finite amount."""

MIN_EXPECTED = 5.0
"""Categories expected fewer times than this are pooled for the chi-squared test."""


class DriftMonitor:
    """A sliding window of live code rows and their drift against the training reference.

    `schema_features`: the model's features in code-matrix column order, each a mapping (or an
    object such as `models.schema.Feature`) with `name`, `kind` ("numeric" | "categorical") and
    `categories`. `reference`: `reference_statistics(...)` output by feature name; a feature
    without reference statistics is reported with `reference: false` and never drifts.
    """

    def __init__(
        self,
        schema_features: Sequence[Any],
        reference: Mapping[str, Mapping[str, Any]],
        config: DriftConfig | None = None,
    ):
        self.config = config or DriftConfig()
        self.features: list[dict] = [_feature_dict(f) for f in schema_features]
        self.reference = reference
        self._lock = threading.Lock()
        self._buffer = np.full((self.config.window, len(self.features)), np.nan, dtype=np.float64)
        self._next = 0  # ring position of the next row
        self._filled = 0
        self._prepared = [self._prepare(f) for f in self.features]

    # ------------------------------------------------------------------ live data
    def observe(self, codes: np.ndarray) -> None:
        """Add rows (n x features code matrix, or one row) to the window; thread-safe."""
        rows = np.asarray(codes, dtype=np.float64)
        if rows.ndim == 1:
            rows = rows.reshape(1, -1)
        if rows.ndim != 2 or rows.shape[1] != len(self.features):
            raise ValueError(f"expected rows of {len(self.features)} codes, got shape {rows.shape}")
        capacity = self.config.window
        if rows.shape[0] >= capacity:
            rows = rows[-capacity:]
        n = rows.shape[0]
        if n == 0:
            return
        with self._lock:
            end = self._next + n
            if end <= capacity:
                self._buffer[self._next : end] = rows
            else:
                first = capacity - self._next
                self._buffer[self._next :] = rows[:first]
                self._buffer[: n - first] = rows[first:]
            self._next = end % capacity
            self._filled = min(capacity, self._filled + n)

    def reset(self) -> None:
        """Forget every live row (e.g. after retraining on new reference data)."""
        with self._lock:
            self._buffer.fill(np.nan)
            self._next = 0
            self._filled = 0

    @property
    def size(self) -> int:
        """Rows currently in the window."""
        return self._filled

    def _rows(self) -> np.ndarray:
        with self._lock:
            if self._filled < self.config.window:
                return self._buffer[: self._filled].copy()
            return self._buffer.copy()

    # ------------------------------------------------------------------ report
    def report(self, rows: np.ndarray | None = None) -> dict:
        """Drift of every feature, and overall, over this window's rows (or over `rows`: e.g.
        every replica's window from the shared store, judged against the same reference).

        Returns {"n", "window", "enough_data", "drifted", "features_drifted", "alpha",
        "psi_threshold", "correction": "benjamini-hochberg", "features": {name: {...}}}. Per
        feature: "kind", "n" (rows), "present", "missing_rate", "reference_missing_rate", "psi",
        "test" ("ks" | "chi2"), "ks_statistic" + "ks_p_value" (numeric) or "chi2_statistic" +
        "chi2_p_value" (categorical), "p_value", "p_adjusted", "enough_data", "drifted" and
        "drift_reasons". Statistics are None until the feature has `min_samples` rows (present
        values for the KS test). With fewer than `min_samples` rows overall, "enough_data" is
        false and nothing drifts ("not enough data").
        """
        cfg = self.config
        rows = self._rows() if rows is None else np.asarray(rows, dtype=np.float64)[-cfg.window :]
        n = rows.shape[0]
        enough = n >= cfg.min_samples
        features: dict[str, dict] = {}
        tested: list[str] = []
        p_values: list[float] = []
        for j, (feature, prepared) in enumerate(zip(self.features, self._prepared, strict=True)):
            column = rows[:, j]
            entry = self._feature_report(feature, prepared, column, enough)
            features[feature["name"]] = entry
            if entry["p_value"] is not None:
                tested.append(feature["name"])
                p_values.append(entry["p_value"])
        if p_values:
            adjusted = stats.false_discovery_control(np.asarray(p_values), method="bh")
            for name, value in zip(tested, adjusted, strict=True):
                features[name]["p_adjusted"] = float(value)
        drifted_names = []
        for name, entry in features.items():
            reasons = []
            if entry["enough_data"]:
                if entry["psi"] is not None and entry["psi"] > cfg.psi_threshold:
                    reasons.append(f"psi {entry['psi']:.3f} > {cfg.psi_threshold}")
                if entry["p_adjusted"] is not None and entry["p_adjusted"] < cfg.alpha:
                    reasons.append(
                        f"{entry['test']} adjusted p {entry['p_adjusted']:.2g} < {cfg.alpha}"
                    )
            entry["drift_reasons"] = reasons
            entry["drifted"] = bool(reasons)
            if reasons:
                drifted_names.append(name)
        return {
            "n": n,
            "window": cfg.window,
            "min_samples": cfg.min_samples,
            "enough_data": enough,
            "status": "ok" if enough else "not enough data",
            "drifted": bool(drifted_names),
            "features_drifted": drifted_names,
            "alpha": cfg.alpha,
            "psi_threshold": cfg.psi_threshold,
            "correction": "benjamini-hochberg",
            "features": features,
        }

    # ------------------------------------------------------------------ per feature
    def _prepare(self, feature: dict) -> dict | None:
        """Precompute bins, reference shares and the reconstructed sample of one feature."""
        ref = self.reference.get(feature["name"])
        if not ref:
            return None
        missing = float(ref.get("missing_rate") or 0.0)
        if feature["kind"] == "numeric":
            quantiles = np.asarray(ref.get("quantiles") or [], dtype=np.float64)
            if quantiles.size < 2:
                return None
            quantiles = np.maximum.accumulate(quantiles)  # guard against rounding wobble
            levels = np.linspace(0.0, 1.0, quantiles.size)
            deciles = np.interp(np.linspace(0.1, 0.9, 9), levels, quantiles)
            edges = np.unique(deciles)
            cdf = np.array([_reference_cdf(e, quantiles, levels) for e in edges])
            shares = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
            u = (np.arange(RECONSTRUCTED_SAMPLE) + 0.5) / RECONSTRUCTED_SAMPLE
            sample = np.interp(u, levels, quantiles)
            return {
                "missing_rate": missing,
                "edges": edges,
                "shares": np.append(shares * (1 - missing), missing),
                "sample": sample,
            }
        frequencies = ref.get("frequencies") or {}
        categories = feature["categories"]
        present = np.array([float(frequencies.get(c, 0.0)) for c in categories], dtype=np.float64)
        total = present.sum()
        present = (
            present / total
            if total > 0
            else np.full(len(categories), 1.0 / max(len(categories), 1))
        )
        return {"missing_rate": missing, "shares": np.append(present * (1 - missing), missing)}

    def _feature_report(
        self, feature: dict, prepared: dict | None, column: np.ndarray, enough: bool
    ) -> dict:
        cfg = self.config
        missing = np.isnan(column)
        present = column[~missing]
        entry: dict[str, Any] = {
            "kind": feature["kind"],
            "n": int(column.size),
            "present": int(present.size),
            "missing_rate": float(missing.mean()) if column.size else None,
            "reference": prepared is not None,
            "reference_missing_rate": None if prepared is None else prepared["missing_rate"],
            "psi": None,
            "test": "ks" if feature["kind"] == "numeric" else "chi2",
            "p_value": None,
            "p_adjusted": None,
            "enough_data": bool(enough and prepared is not None),
        }
        if feature["kind"] == "numeric":
            entry.update(ks_statistic=None, ks_p_value=None)
        else:
            entry.update(chi2_statistic=None, chi2_p_value=None)
        if prepared is None or not entry["enough_data"]:
            return entry
        if feature["kind"] == "numeric":
            # right-closed bins (-inf, e0], (e0, e1], ..., (e_last, inf), then the missing bin
            counts = np.bincount(
                np.searchsorted(prepared["edges"], present, side="left"),
                minlength=prepared["edges"].size + 1,
            )
            counts = np.append(counts, missing.sum()).astype(np.float64)
            entry["psi"] = psi(counts / column.size, prepared["shares"])
            if present.size >= cfg.min_samples:
                test = stats.ks_2samp(present, prepared["sample"], method="asymp")
                entry["ks_statistic"] = float(test.statistic)
                entry["ks_p_value"] = entry["p_value"] = float(test.pvalue)
        else:
            k = len(feature["categories"])
            codes = present.astype(np.int64)
            valid = (codes >= 0) & (codes < k) & (codes == present)
            counts = np.bincount(codes[valid], minlength=k).astype(np.float64)
            counts = np.append(counts, missing.sum())
            observed_total = counts.sum()
            entry["psi"] = psi(counts / observed_total, prepared["shares"])
            statistic, p_value = _chi_squared(counts, prepared["shares"])
            if p_value is not None:
                entry["chi2_statistic"] = statistic
                entry["chi2_p_value"] = entry["p_value"] = p_value
        return entry


def psi(live_shares: np.ndarray, reference_shares: np.ndarray, floor: float = PSI_FLOOR) -> float:
    """Population stability index sum((live - ref) * ln(live / ref)), shares floored at `floor`."""
    live = np.maximum(np.asarray(live_shares, dtype=np.float64), floor)
    ref = np.maximum(np.asarray(reference_shares, dtype=np.float64), floor)
    return float(np.sum((live - ref) * np.log(live / ref)))


def _reference_cdf(x: float, quantiles: np.ndarray, levels: np.ndarray) -> float:
    """P(X <= x) under the piecewise-linear reference; right-continuous at point masses."""
    i = int(np.searchsorted(quantiles, x, side="right")) - 1  # last quantile <= x
    if i < 0:
        return 0.0
    if i >= quantiles.size - 1:
        return 1.0
    low, high = quantiles[i], quantiles[i + 1]
    return float(levels[i] + (levels[i + 1] - levels[i]) * (x - low) / (high - low))


def _chi_squared(observed: np.ndarray, shares: np.ndarray) -> tuple[float | None, float | None]:
    """Goodness of fit of `observed` counts to reference `shares`, rare bins pooled."""
    total = observed.sum()
    if total <= 0:
        return None, None
    shares = shares / shares.sum()
    expected = shares * total
    # A bin the reference never saw but the live data has is drift: keep it with a tiny
    # expectation (floored share) rather than pooling it away.
    never = (expected == 0) & (observed > 0)
    rare = (expected < MIN_EXPECTED) & ~never
    obs_bins = list(observed[~rare & ~never])
    exp_bins = list(expected[~rare & ~never])
    if rare.any():
        obs_bins.append(observed[rare].sum())
        exp_bins.append(expected[rare].sum())
    if never.any():
        obs_bins.extend(observed[never])
        exp_bins.extend([PSI_FLOOR * total] * int(never.sum()))
    obs = np.asarray(obs_bins, dtype=np.float64)
    exp = np.asarray(exp_bins, dtype=np.float64)
    keep = exp > 0
    obs, exp = obs[keep], exp[keep]
    if obs.size < 2:
        return None, None
    exp = exp * obs.sum() / exp.sum()  # chisquare needs equal totals
    test = stats.chisquare(obs, exp)
    return float(test.statistic), float(test.pvalue)


def _feature_dict(feature: Any) -> dict:
    if isinstance(feature, Mapping):
        name, kind, categories = feature["name"], feature["kind"], feature.get("categories") or []
    else:
        name, kind, categories = (
            feature.name,
            feature.kind,
            getattr(feature, "categories", None) or [],
        )
    if kind not in ("numeric", "categorical"):
        raise ValueError(f"feature {name!r}: kind must be numeric or categorical, got {kind!r}")
    return {"name": str(name), "kind": kind, "categories": [str(c) for c in categories]}
