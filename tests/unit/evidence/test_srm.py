"""The sequential sample-ratio check catches a broken split and stays quiet on a good one."""

from __future__ import annotations

import numpy as np
import pytest

from serving.config.flags import parse_flag_config
from serving.evidence import srm
from serving.routing.policy import Health, RequestContext, decide


def test_a_split_as_configured_is_not_a_mismatch():
    assert not srm.check({"classic": 9000, "ensemble": 1000}, {"classic": 90, "ensemble": 10})[
        "mismatch"
    ]


def test_false_alarms_stay_below_alpha_at_every_look():
    """30 % split, a look every 50 observations up to 5,000: flagged in at most alpha of runs."""
    rng = np.random.default_rng(5)
    trials, alpha, flagged = 400, 0.05, 0
    for _ in range(trials):
        draws = rng.random(5000) < 0.3
        for n in range(50, 5001, 50):
            k = int(draws[:n].sum())
            if srm.check({"a": k, "b": n - k}, {"a": 30, "b": 70}, alpha=alpha)["mismatch"]:
                flagged += 1
                break
    assert flagged / trials <= alpha


def test_an_arm_the_split_never_assigns_is_a_mismatch_at_once():
    result = srm.check({"classic": 10, "ensemble": 3}, {"classic": 100})
    assert result["mismatch"] and result["p_value"] == 0.0


def test_catches_a_deliberately_broken_split():
    """Two replicas behind one balancer, one still on old flags (50 % instead of 25 %): the
    routed traffic's ensemble share is ~37.5 %, not the configured 25 %; the check says so,
    and the same traffic through correct replicas only passes."""
    good = parse_flag_config({"ensemble": {"rollout_percentage": 25}})
    stale = parse_flag_config({"ensemble": {"rollout_percentage": 50}})
    broken = {"classic": 0, "ensemble": 0}
    honest = {"classic": 0, "ensemble": 0}
    for i in range(2000):
        ctx = RequestContext(f"user-{i}", "k")
        broken[decide(ctx, stale if i % 2 else good, Health()).arm] += 1
        honest[decide(ctx, good, Health()).arm] += 1
    result = srm.check(broken, {"classic": 75, "ensemble": 25})
    assert result["observed_share"]["ensemble"] == pytest.approx(0.375, abs=0.03)
    assert result["mismatch"], result
    assert not srm.check(honest, {"classic": 75, "ensemble": 25})["mismatch"]
