"""Anytime-valid tests (serving.evidence.sequential) and the seeded polling simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from serving.evidence import sequential, simulate


def test_mixture_is_one_at_the_null_estimate_and_grows_with_distance():
    v = 0.0016
    assert sequential.log_mixture(0.0, 0.0, v) < 0  # no evidence: M < 1
    near, far = (float(sequential.always_valid_p(d, 0.0, v)) for d in (0.02, 0.2))
    assert far < near <= 1.0


def test_confidence_sequence_is_wider_than_the_fixed_sample_interval():
    v = 0.16 * 2 / 1000
    fixed = 1.959964 * math.sqrt(v)
    assert float(sequential.radius(v, 0.05)) > fixed


def test_cs_and_p_value_agree():
    """The CS excludes 0 exactly when the two-sided always-valid p-value is below alpha."""
    for k_t in range(150, 200, 3):
        r = sequential.difference(150, 200, k_t, 200, alpha=0.05)
        excludes = r["cs_low"] > 0 or r["cs_high"] < 0
        assert excludes == (r["p_value"] < 0.05), r


def test_one_sided_bound_inverts_the_one_sided_test():
    r = sequential.difference(800, 1000, 860, 1000, alpha=0.05)
    v = float(sequential.difference_variance(800, 1000, 860, 1000))
    p_at_bound = float(
        sequential.always_valid_p(r["diff"], r["noninferiority_low"], v, one_sided=True)
    )
    assert p_at_bound == pytest.approx(0.05, rel=1e-4)
    assert r["cs_low"] < r["noninferiority_low"] < r["diff"]


def test_proportion_cs_contains_the_rate_and_stays_in_unit_interval():
    r = sequential.proportion(200, 200, 0.05)
    assert r["cs_high"] == 1.0 and 0.9 < r["cs_low"] < 1.0
    assert sequential.proportion(0, 0, 0.05)["rate"] is None


def test_running_min():
    assert sequential.running_min([0.5, 0.2, 0.4]) == [0.5, 0.2, 0.2]


def test_anytime_valid_coverage_under_the_null_by_simulation():
    """Equal arms, a look every 25 labels per arm to 2,000: the CS misses 0 at ANY look in
    at most alpha of the trials (the fixed-sample interval misses far more often)."""
    world = simulate.World()
    rng = np.random.default_rng(7)
    n, k_c, k_t = simulate._paths(world, 0.0, 2000, 1500, rng)
    d = k_t / n - k_c / n
    v = sequential.difference_variance(k_c, n, k_t, n)
    ever_after = (np.abs(d) > sequential.radius(v, 0.05)).any(axis=1).mean()
    ever_before = (np.abs(d) > 1.96 * np.sqrt(v)).any(axis=1).mean()
    assert ever_after <= 0.05
    assert ever_before > 0.2


@pytest.fixture(scope="module")
def small_run():
    return {
        (r["horizon"], r["delta"], r["method"]): r
        for r in simulate.run(trials=1500, seed=11, horizons=(1000,))
    }


@pytest.mark.parametrize("delta", [0.0, -0.01, -0.02])
def test_after_false_promotions_stay_below_alpha(small_run, delta):
    assert small_run[(1000, delta, "after")]["go_rate"] <= 0.05


def test_before_false_promotions_exceed_alpha(small_run):
    """The fixed-sample test per look, as the controller polled it, promotes an equal
    challenger far more often than alpha: the simulation can fail."""
    assert small_run[(1000, 0.0, "before")]["go_rate"] > 0.12


def test_after_still_finds_a_clearly_better_challenger(small_run):
    assert small_run[(1000, 0.05, "after")]["go_rate"] > 0.5


def test_table_prints_every_scenario(small_run):
    text = simulate.table(list(small_run.values()), simulate.World())
    assert text.count("false promotion") == 3 and text.count("power") == 2
