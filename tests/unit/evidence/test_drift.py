"""Drift detection against training-time reference statistics, checked against scipy."""

from __future__ import annotations

import math
import threading

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from models.schema import FeatureSchema
from serving.config.delivery import DriftConfig
from serving.evidence.drift import RECONSTRUCTED_SAMPLE, DriftMonitor, psi
from training.evaluate import reference_statistics


def _make(
    rng: np.random.Generator,
    n: int,
    *,
    age_shift: float = 0.0,
    region_p=(0.5, 0.3, 0.15, 0.05),
    income_missing: float = 0.05,
) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "age": rng.normal(40 + age_shift, 10, n),
            "income": rng.lognormal(10, 0.6, n),
            # zero-inflated counts: point masses that a one-sample KS test would get wrong
            "visits": np.where(rng.random(n) < 0.4, 0, rng.poisson(3, n)).astype(float),
            "score": rng.uniform(0, 1, n),
            "region": rng.choice(["east", "north", "south", "west"], n, p=list(region_p)),
            "plan": rng.choice(["basic", "plus", "pro"], n, p=[0.7, 0.25, 0.05]),
        }
    )
    frame.loc[rng.random(n) < income_missing, "income"] = np.nan
    frame.loc[rng.random(n) < 0.02, "plan"] = None
    return frame


@pytest.fixture(scope="module")
def trained():
    """A schema and reference statistics computed exactly as training does."""
    train = _make(np.random.default_rng(0), 60_000)
    schema = FeatureSchema.infer(train, ["no", "yes"])
    reference = reference_statistics(schema.encode_frame(train), schema)
    return schema, reference


def _monitor(trained, **config) -> DriftMonitor:
    schema, reference = trained
    features = [f.model_dump() for f in schema.features]
    return DriftMonitor(features, reference, DriftConfig(**config))


def _observe(monitor: DriftMonitor, trained, frame: pd.DataFrame) -> dict:
    schema, _ = trained
    monitor.observe(schema.encode_frame(frame))
    return monitor.report()


# ---------------------------------------------------------------------------- verdicts
@pytest.mark.parametrize("seed", range(8))
def test_no_drift_on_data_from_the_reference_distribution(trained, seed):
    report = _observe(_monitor(trained), trained, _make(np.random.default_rng(100 + seed), 2000))
    assert report["enough_data"] is True and report["n"] == 2000
    assert report["drifted"] is False, report["features_drifted"]
    for entry in report["features"].values():
        assert entry["psi"] < 0.05
        assert entry["p_value"] is not None and entry["p_adjusted"] >= entry["p_value"]


def test_no_drift_at_the_minimum_sample_size(trained):
    report = _observe(_monitor(trained), trained, _make(np.random.default_rng(7), 200))
    assert report["enough_data"] is True and report["drifted"] is False


def test_a_shifted_numeric_feature_drifts(trained):
    report = _observe(
        _monitor(trained), trained, _make(np.random.default_rng(1), 2000, age_shift=5.0)
    )
    assert report["drifted"] is True
    assert report["features_drifted"] == ["age"]
    age = report["features"]["age"]
    assert age["psi"] > 0.2 and age["ks_p_value"] < 1e-10 and age["drifted"]
    assert any(r.startswith("psi") for r in age["drift_reasons"])
    assert any(r.startswith("ks") for r in age["drift_reasons"])


def test_a_changed_categorical_distribution_drifts(trained):
    frame = _make(np.random.default_rng(2), 2000, region_p=(0.25, 0.25, 0.25, 0.25))
    report = _observe(_monitor(trained), trained, frame)
    assert report["features_drifted"] == ["region"]
    region = report["features"]["region"]
    assert region["test"] == "chi2" and region["chi2_p_value"] < 1e-10 and region["psi"] > 0.2


def test_a_feature_that_starts_arriving_empty_drifts(trained):
    frame = _make(np.random.default_rng(3), 2000, income_missing=0.5)
    report = _observe(_monitor(trained), trained, frame)
    assert report["features_drifted"] == ["income"]
    income = report["features"]["income"]
    assert income["missing_rate"] == pytest.approx(0.5, abs=0.05)
    assert income["reference_missing_rate"] == pytest.approx(0.05, abs=0.01)
    assert income["psi"] > 0.2


def test_not_enough_data_below_min_samples(trained):
    monitor = _monitor(trained)
    report = _observe(monitor, trained, _make(np.random.default_rng(4), 199, age_shift=30))
    assert report["enough_data"] is False and report["status"] == "not enough data"
    assert report["drifted"] is False and report["features_drifted"] == []
    assert all(
        entry["psi"] is None and entry["p_value"] is None for entry in report["features"].values()
    )
    report = _observe(monitor, trained, _make(np.random.default_rng(5), 1, age_shift=30))
    assert report["enough_data"] is True and report["features_drifted"] == ["age"]


# ---------------------------------------------------------------------------- statistics vs scipy
def test_ks_matches_scipy_against_the_reconstructed_reference_sample(trained):
    schema, reference = trained
    frame = _make(np.random.default_rng(6), 1500, age_shift=1.0)
    report = _observe(_monitor(trained), trained, frame)
    codes = schema.encode_frame(frame)
    for j, feature in enumerate(schema.features):
        if feature.kind != "numeric":
            continue
        quantiles = np.asarray(reference[feature.name]["quantiles"])
        u = (np.arange(RECONSTRUCTED_SAMPLE) + 0.5) / RECONSTRUCTED_SAMPLE
        rebuilt = np.interp(u, np.linspace(0, 1, 101), quantiles)
        column = codes[:, j]
        # asymptotic p-value: the exact one is O(n * m) and took seconds on windows of repeated rows
        expected = stats.ks_2samp(column[~np.isnan(column)], rebuilt, method="asymp")
        entry = report["features"][feature.name]
        assert entry["ks_statistic"] == pytest.approx(expected.statistic)
        assert entry["ks_p_value"] == pytest.approx(expected.pvalue)


def test_chi_squared_matches_scipy_with_expected_counts_from_the_reference(trained):
    schema, reference = trained
    frame = _make(np.random.default_rng(8), 2000, region_p=(0.45, 0.33, 0.16, 0.06))
    report = _observe(_monitor(trained), trained, frame)
    j = schema.names.index("region")
    codes = schema.encode_frame(frame)[:, j]
    observed = np.bincount(codes.astype(int), minlength=4)
    shares = np.array(
        [reference["region"]["frequencies"][c] for c in ["east", "north", "south", "west"]]
    )
    expected = shares / shares.sum() * observed.sum()
    test = stats.chisquare(observed, expected)
    entry = report["features"]["region"]
    assert entry["chi2_statistic"] == pytest.approx(test.statistic)
    assert entry["chi2_p_value"] == pytest.approx(test.pvalue)


def test_adjusted_p_values_are_benjamini_hochberg(trained):
    report = _observe(
        _monitor(trained), trained, _make(np.random.default_rng(9), 2000, age_shift=0.8)
    )
    names = list(report["features"])
    raw = np.array([report["features"][n]["p_value"] for n in names])
    adjusted = stats.false_discovery_control(raw, method="bh")
    assert report["correction"] == "benjamini-hochberg"
    for name, value in zip(names, adjusted, strict=True):
        assert report["features"][name]["p_adjusted"] == pytest.approx(value)


def test_psi_by_hand_on_a_uniform_reference():
    reference = {"x": {"missing_rate": 0.0, "quantiles": list(np.linspace(0, 100, 101))}}
    monitor = DriftMonitor(
        [{"name": "x", "kind": "numeric"}], reference, DriftConfig(min_samples=10)
    )
    monitor.observe(((np.arange(1000) + 0.5) * 0.05).reshape(-1, 1))  # uniform on the lower half
    report = monitor.report()
    # five deciles hold 20 % each instead of 10 %, five are empty (floored at 1e-4)
    expected = 5 * (0.2 - 0.1) * math.log(2) + 5 * (1e-4 - 0.1) * math.log(1e-4 / 0.1)
    assert report["features"]["x"]["psi"] == pytest.approx(expected)
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0


def test_psi_bins_respect_point_masses():
    # 60 % zeros, then uniform on (0, 40]: the first six deciles are all 0 and merge into one bin
    quantiles = [0.0] * 61 + list(np.linspace(1, 40, 40))
    reference = {"x": {"missing_rate": 0.0, "quantiles": quantiles}}
    monitor = DriftMonitor(
        [{"name": "x", "kind": "numeric"}], reference, DriftConfig(min_samples=10)
    )
    rng = np.random.default_rng(0)
    live = np.where(rng.random(5000) < 0.6, 0.0, rng.uniform(0, 40, 5000))
    monitor.observe(live.reshape(-1, 1))
    entry = monitor.report()["features"]["x"]
    assert entry["psi"] < 0.02 and not entry["drifted"]


# ---------------------------------------------------------------------------- the window
def test_the_window_slides_and_keeps_the_latest_rows(trained):
    monitor = _monitor(trained, window=500)
    schema, _ = trained
    shifted = schema.encode_frame(_make(np.random.default_rng(10), 700, age_shift=30))
    normal = schema.encode_frame(_make(np.random.default_rng(11), 500))
    monitor.observe(shifted)
    assert monitor.size == 500
    assert monitor.report()["features_drifted"] == ["age"]
    for start in range(0, 500, 37):  # uneven batches wrap around the ring
        monitor.observe(normal[start : start + 37])
    report = monitor.report()
    assert report["n"] == 500 and report["drifted"] is False
    monitor.reset()
    assert monitor.size == 0 and monitor.report()["enough_data"] is False


def test_observe_is_thread_safe_and_checks_shapes(trained):
    monitor = _monitor(trained, window=1000)
    schema, _ = trained
    rows = schema.encode_frame(_make(np.random.default_rng(12), 300))

    def feed():
        for i in range(0, 300, 3):
            monitor.observe(rows[i : i + 3])

    threads = [threading.Thread(target=feed) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert monitor.size == 1000
    monitor.observe(rows[0])  # one row as a 1-D array
    with pytest.raises(ValueError):
        monitor.observe(np.zeros((2, 3)))


def test_features_without_reference_are_reported_but_never_drift():
    monitor = DriftMonitor(
        [
            {"name": "a", "kind": "numeric"},
            {"name": "c", "kind": "categorical", "categories": ["x", "y"]},
        ],
        {"a": {"missing_rate": 0.0, "quantiles": list(np.linspace(0, 1, 101))}},
        DriftConfig(min_samples=10),
    )
    monitor.observe(np.column_stack([np.linspace(0, 1, 50), np.zeros(50)]))
    report = monitor.report()
    assert (
        report["features"]["c"]["reference"] is False
        and report["features"]["c"]["drifted"] is False
    )
    with pytest.raises(ValueError):
        DriftMonitor([{"name": "z", "kind": "text"}], {}, DriftConfig())


def test_drift_config_defaults_and_docs():
    cfg = DriftConfig()
    assert (cfg.window, cfg.min_samples, cfg.psi_threshold, cfg.alpha) == (2000, 200, 0.2, 0.01)
    for name, field in DriftConfig.model_fields.items():
        assert field.description, f"{name} has no docstring"


def test_drift_is_judged_on_every_replicas_inputs_through_the_store(trained, tmp_path):
    """Two replicas behind a balancer each see half the traffic: neither has enough rows on its
    own, the shared window has them all and finds the shift; pruning keeps only one window."""
    from serving.config.flags import parse_flag_config
    from serving.delivery.live import LiveEvaluation
    from serving.store import StateStore

    schema, reference = trained
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    flags = parse_flag_config({"drift": {"window": 2000, "min_samples": 300}})
    replicas = [
        LiveEvaluation(store, flags, _monitor(trained, window=2000, min_samples=300), ["no", "yes"],
                       in_process_arms=(), replica=name)
        for name in ("a", "b")
    ]  # fmt: skip
    shifted = schema.encode_frame(_make(np.random.default_rng(5), 400, age_shift=15.0))
    for i, live in enumerate(replicas):
        for batch in np.array_split(shifted[i::2], 4):  # 50 rows per outcome flush
            live.observe_inputs(batch)
            live.flush_outcomes()
    alone = replicas[0].drift.report()
    assert not alone["enough_data"]  # 200 rows < 300 on one replica
    for live in replicas:  # every replica reports the same, from the same rows
        report = live.drift_report()
        assert report["inputs"] == "shared" and report["n"] == 400 and report["enough_data"]
        assert "age" in report["features_drifted"]
    store.record_drift_rows("a", shifted[: 3000 % 400].tolist(), 0.0)
    assert store.prune_drift_rows(keep_rows=100) > 0 and len(store.drift_rows(10_000)) >= 100
    store.close()
