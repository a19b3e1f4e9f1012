"""Experiments with more than two arms: attribution of feedback to variants, each challenger
against the control with Holm's correction, and the shadow agreement verdict."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from serving.config.experiments import ChallengerConfig, Experiment
from serving.evidence.evaluation import compare_accuracy, wilson_interval
from serving.evidence.experiment_report import (
    agreement_verdict,
    experiment_report,
    holm,
    noninferiority_test,
    variant_of,
)

SERVED = {"ensemble": "abc", "classic": "xyz"}


def three_variants(weights=(40, 30, 30), **extra) -> Experiment:
    """Classic control, the champion ensemble (follows the pin), a retrained ensemble version.
    Tests give the weights their simulated traffic was split by (the sample-ratio check holds
    any verdict on traffic that does not match them)."""
    w_control, w_champion, w_retrained = weights
    return Experiment(
        name="plan-b",
        variants=[
            {"name": "control", "model": "classic", "weight": w_control, "control": True},
            {"name": "champion", "model": "ensemble", "weight": w_champion},
            {"name": "retrained", "model": "ensemble", "version": "v2", "weight": w_retrained},
        ],
        **extra,
    )


def rows(arm: str, version: str | None, n: int, correct: int, latency: float | None = 10.0):
    """`n` labelled feedback rows of one arm and version, the first `correct` of them right."""
    out = []
    for i in range(n):
        right = i < correct
        out.append(
            {
                "request_id": f"{arm}-{version}-{i}",
                "arm": arm,
                "model_version": version,
                "predicted": "a",
                "label": "a" if right else "b",
                "correct": right,
                "created_at": 1000.0 + i,
                "latency_ms": latency,
            }
        )
    return out


def row(arm: str, version: str | None) -> dict:
    return rows(arm, version, 1, 1)[0]


# ---------------------------------------------------------------------------- variant_of
def test_follow_the_pin_variants_own_the_served_version_only():
    exp = three_variants()
    assert variant_of(row("classic", "xyz"), exp, SERVED) == "control"
    assert variant_of(row("ensemble", "abc"), exp, SERVED) == "champion"
    # an earlier champion's answers are not the current champion's evidence
    assert variant_of(row("ensemble", "old"), exp, SERVED) is None
    assert variant_of(row("classic", "old"), exp, SERVED) is None


def test_explicit_versions_match_exactly_and_win_over_the_pin():
    exp = three_variants()
    assert variant_of(row("ensemble", "v2"), exp, SERVED) == "retrained"
    # after a promotion the champion serves v2 too: the named challenger keeps its rows
    assert variant_of(row("ensemble", "v2"), exp, {"ensemble": "v2", "classic": "xyz"}) == (
        "retrained"
    )


def test_cascade_rows_match_cascade_variants_only():
    exp = Experiment(
        name="cascade-test",
        variants=[
            {"name": "control", "model": "classic", "weight": 50, "control": True},
            {"name": "cascade", "model": "cascade", "weight": 25},
            {"name": "ensemble", "model": "ensemble", "weight": 25},
        ],
    )
    # the cascade runs in the ensemble service: without its own entry it follows the ensemble
    assert variant_of(row("cascade", "abc"), exp, SERVED) == "cascade"
    assert variant_of(row("ensemble", "abc"), exp, SERVED) == "ensemble"
    assert variant_of(row("cascade", "c1"), exp, {**SERVED, "cascade": "c1"}) == "cascade"
    # no cascade variant: cascade rows belong to nobody
    assert variant_of(row("cascade", "abc"), three_variants(), SERVED) is None


def test_unknown_rows_match_nothing():
    exp = three_variants()
    assert variant_of(row("shadow", "abc"), exp, SERVED) is None
    assert variant_of({"arm": "ensemble"}, exp, SERVED) is None
    assert variant_of(row("ensemble", None), exp, SERVED) is None  # stored before versions
    assert variant_of(row("classic", "xyz"), exp, {"ensemble": "abc"}) is None  # pin unknown


# ---------------------------------------------------------------------------- the report
CFG = ChallengerConfig(min_labelled=200, alpha=0.05, margin=0.0)


def test_three_variants_each_against_the_control():
    feedback = (
        rows("classic", "xyz", 600, 420, latency=5.0)  # 0.70
        + rows("ensemble", "abc", 600, 510, latency=20.0)  # 0.85: better
        + rows("ensemble", "v2", 600, 330, latency=None)  # 0.55: worse
        + rows("ensemble", "old", 50, 50)  # an earlier champion
    )
    report = experiment_report(feedback, three_variants((34, 33, 33)), SERVED, CFG)
    json.dumps(report, allow_nan=False)
    assert not report["sample_ratio"]["mismatch"]

    assert report["control"] == "control"
    assert report["unattributed"] == 50
    control = report["variants"]["control"]
    assert (control["labelled"], control["correct"]) == (600, 420)
    assert control["accuracy"] == pytest.approx(0.70)
    assert (control["ci_low"], control["ci_high"]) == pytest.approx(wilson_interval(420, 600))
    assert control["latency_ms_mean"] == pytest.approx(5.0)
    assert report["variants"]["champion"]["resolved_version"] == "abc"
    assert report["variants"]["retrained"]["latency_ms_mean"] is None

    champion, retrained = report["challengers"]["champion"], report["challengers"]["retrained"]
    assert champion["control"] == retrained["control"] == "control"
    expected = compare_accuracy(420, 600, 510, 600, alpha=0.05)
    assert champion["diff"] == pytest.approx(0.15)
    assert (champion["ci_low"], champion["ci_high"], champion["p_value"]) == pytest.approx(
        (expected["ci_low"], expected["ci_high"], expected["p_value"])
    )
    assert champion["verdict"] == "go", champion["reason"]
    assert "non-inferior" in champion["reason"]
    assert retrained["verdict"] == "no_go", retrained["reason"]
    assert retrained["diff"] == pytest.approx(-0.15)
    assert report["best"] == "champion"


def test_too_few_rows_wait_and_say_how_many_more():
    feedback = (
        rows("classic", "xyz", 600, 420)
        + rows("ensemble", "abc", 600, 510)
        + rows("ensemble", "v2", 150, 150)
    )
    report = experiment_report(feedback, three_variants((44, 44, 12)), SERVED, CFG)
    retrained = report["challengers"]["retrained"]
    assert retrained["verdict"] == "wait"
    assert "challenger 150 (50 more)" in retrained["reason"]
    # an untested challenger stays in the family with p = 1: the other's Holm p is doubled
    assert retrained["p_value_holm"] is None
    champion = report["challengers"]["champion"]
    assert champion["p_value_holm"] == pytest.approx(min(1.0, 2 * champion["p_value"]))
    assert champion["verdict"] == "go"

    short_control = experiment_report(
        rows("classic", "xyz", 20, 14) + rows("ensemble", "abc", 600, 510),
        three_variants(),
        SERVED,
        CFG,
    )
    for c in short_control["challengers"].values():
        assert c["verdict"] == "wait"
        assert "control 20 (180 more)" in c["reason"]
    assert short_control["best"] is None


def test_an_undecided_challenger_waits():
    feedback = (
        rows("classic", "xyz", 300, 210)
        + rows("ensemble", "abc", 300, 212)
        + rows("ensemble", "v2", 0, 0)
    )
    champion = experiment_report(feedback, three_variants(), SERVED, CFG)["challengers"]["champion"]
    assert champion["verdict"] == "wait"
    assert champion["reason"].startswith("no decision yet")


def test_non_inferiority_margin_turns_a_small_loss_into_a_go():
    feedback = rows("classic", "xyz", 5000, 4000) + rows("ensemble", "abc", 5000, 3950)
    halves = three_variants((50, 50, 0))
    strict = experiment_report(feedback, halves, SERVED, CFG)
    assert strict["challengers"]["champion"]["verdict"] == "wait"
    tolerant = experiment_report(
        feedback, halves, SERVED, ChallengerConfig(min_labelled=200, margin=0.05)
    )
    champion = tolerant["challengers"]["champion"]
    assert champion["verdict"] == "go"
    assert champion["noninferiority"]["margin"] == 0.05


def test_noninferiority_test_matches_the_formula():
    result = noninferiority_test(700, 1000, 690, 1000, margin=0.05)
    se = math.sqrt(0.7 * 0.3 / 1000 + 0.69 * 0.31 / 1000)
    z = (0.69 - 0.70 + 0.05) / se
    assert result["z"] == pytest.approx(z)
    assert result["p_value"] == pytest.approx(stats.norm.sf(z))
    # degenerate arms: the estimate decides
    assert noninferiority_test(10, 10, 10, 10, margin=0.01)["p_value"] == 0.0
    assert noninferiority_test(10, 10, 10, 10, margin=0.0)["p_value"] == 0.5
    assert noninferiority_test(10, 10, 0, 10, margin=0.1)["p_value"] == 1.0
    assert noninferiority_test(0, 0, 5, 10, margin=0.1)["p_value"] is None


def test_rows_without_correct_are_judged_from_label_and_prediction():
    feedback = [
        {"arm": "classic", "model_version": "xyz", "predicted": "a", "label": "a"},
        {"arm": "classic", "model_version": "xyz", "predicted": "a", "label": "b"},
    ]
    report = experiment_report(feedback, three_variants(), SERVED, CFG)
    assert report["variants"]["control"]["correct"] == 1
    assert report["variants"]["control"]["labelled"] == 2


# ---------------------------------------------------------------------------- Holm
def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 times 3, 2, 1 = 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9, 0.4]) == [1.0, 1.0, 1.0]
    assert holm([]) == []
    assert holm([0.02]) == [0.02]
    with pytest.raises(ValueError):
        holm([float("nan")])
    with pytest.raises(ValueError):
        holm([1.5])


@given(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=12))
@settings(max_examples=300, deadline=None)
def test_holm_properties(p):
    adjusted = holm(p)
    m = len(p)
    for raw, adj in zip(p, adjusted, strict=True):
        assert raw <= adj <= 1.0
        assert adj <= min(1.0, m * raw) + 1e-12  # never worse than Bonferroni
    for i in range(m):  # same order as the raw p-values
        for j in range(m):
            if p[i] <= p[j]:
                assert adjusted[i] <= adjusted[j]


def test_holm_controls_the_family_wise_error_under_the_null():
    """2000 experiments, one control and 3 null challengers sharing it (correlated tests): the
    share of experiments with any rejection stays at alpha with Holm, above it without."""
    rng = np.random.default_rng(18)
    alpha, n, p_true, runs = 0.05, 400, 0.7, 2000
    any_holm = any_raw = 0
    for _ in range(runs):
        control = int(rng.binomial(n, p_true))
        challengers = rng.binomial(n, p_true, size=3)
        raw = [compare_accuracy(control, n, int(k), n)["p_value"] for k in challengers]
        any_holm += any(p < alpha for p in holm(raw))
        any_raw += any(p < alpha for p in raw)
    slack = 3 * math.sqrt(alpha * (1 - alpha) / runs)
    assert any_holm / runs <= alpha + slack
    assert any_raw / runs > alpha + slack  # the correction is needed


def test_non_inferiority_go_rate_at_the_boundary_stays_at_alpha():
    """Challengers exactly `margin` worse than the control (H0 true at its boundary): the share of
    experiments where any of 3 gets a Holm-adjusted `go` stays at alpha."""
    rng = np.random.default_rng(7)
    alpha, margin, n, runs = 0.05, 0.05, 500, 2000
    false_go = 0
    for _ in range(runs):
        control = int(rng.binomial(n, 0.75))
        challengers = rng.binomial(n, 0.75 - margin, size=3)
        raw = [noninferiority_test(control, n, int(k), n, margin)["p_value"] for k in challengers]
        false_go += any(p < alpha for p in holm(raw))
    assert false_go / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


# ---------------------------------------------------------------------------- shadow
SHADOW = ChallengerConfig(shadow_min_samples=200, min_agreement=0.6)


def test_shadow_waits_for_enough_comparisons():
    result = agreement_verdict(150, 150, SHADOW)
    assert result["verdict"] == "wait"
    assert "50 more" in result["reason"]
    assert agreement_verdict(0, 0, SHADOW)["rate"] is None


def test_shadow_passes_on_the_lower_bound():
    result = agreement_verdict(200, 180, SHADOW)
    json.dumps(result, allow_nan=False)
    assert (result["n"], result["agreed"], result["rate"]) == (200, 180, 0.9)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx(wilson_interval(180, 200))
    assert result["verdict"] == "pass"


def test_shadow_waits_while_the_sequence_straddles_the_minimum():
    # 0.62 observed, the lower bound below 0.6 and the upper above: not yet shown either way
    # (the fixed-sample gate failed it at once, and would have passed a lucky look later)
    result = agreement_verdict(200, 124, SHADOW)
    assert result["rate"] == pytest.approx(0.62)
    assert result["sequential"]["cs_low"] < 0.6 < result["sequential"]["cs_high"]
    assert result["verdict"] == "wait", result["reason"]


def test_shadow_fails_when_the_sequence_is_below_the_minimum():
    result = agreement_verdict(300, 80, SHADOW)
    assert result["sequential"]["cs_high"] < 0.6
    assert result["verdict"] == "fail"
    assert agreement_verdict(300, 0, SHADOW)["verdict"] == "fail"


def test_shadow_pass_needs_the_anytime_valid_lower_bound():
    # Wilson's 95 % lower bound of 0.615 at n = 200 is above 0.6 but the sequence's is not yet
    result = agreement_verdict(200, 136, SHADOW)
    assert result["ci_low"] > 0.6 > result["sequential"]["cs_low"]
    assert result["verdict"] == "wait"


def test_a_fixed_sample_go_is_not_an_anytime_valid_go():
    """+3.5 points at 1,000 labels per arm: the fixed-sample non-inferiority p is below 0.05,
    the always-valid one is not: the controller waits for more labels."""
    halves = three_variants((50, 50, 0))
    feedback = rows("classic", "xyz", 1000, 800) + rows("ensemble", "abc", 1000, 835)
    c = experiment_report(feedback, halves, SERVED, CFG)["challengers"]["champion"]
    assert c["noninferiority"]["p_value"] < 0.05
    seq = c["sequential"]
    assert seq["noninferiority_p_value"] > 0.05
    assert seq["cs_low"] < c["ci_low"] and seq["cs_high"] > c["ci_high"]
    assert c["verdict"] == "wait"
    more = rows("classic", "xyz", 4000, 3200) + rows("ensemble", "abc", 4000, 3340)
    c = experiment_report(more, halves, SERVED, CFG)["challengers"]["champion"]
    assert c["verdict"] == "go" and "always-valid" in c["reason"]


def test_only_randomised_rows_are_compared_and_forced_ones_are_reported():
    """Allow-listed users who love the challenger must not make it win: their rows are counted
    under `not_randomised`, not in the comparison."""
    forced = [
        {**r, "randomised": False, "request_id": "f" + r["request_id"]}
        for r in rows("ensemble", "abc", 2000, 2000)
    ]
    feedback = rows("classic", "xyz", 300, 210) + rows("ensemble", "abc", 300, 210) + forced
    report = experiment_report(feedback, three_variants(), SERVED, CFG)
    champion = report["challengers"]["champion"]
    assert champion["labelled"] == 300 and champion["verdict"] == "wait"
    assert report["not_randomised"] == {"ensemble": 2000}


def test_a_sample_ratio_mismatch_holds_every_verdict():
    """The split says 40/30/30; the labelled traffic came 600/600/600: whatever the accuracies,
    no verdict until the split is explained (the reason keeps what it would have been)."""
    feedback = (
        rows("classic", "xyz", 600, 420)
        + rows("ensemble", "abc", 600, 510)
        + rows("ensemble", "v2", 600, 330)
    )
    report = experiment_report(feedback, three_variants(), SERVED, CFG)
    assert report["sample_ratio"]["mismatch"]
    for c in report["challengers"].values():
        assert c["verdict"] == "wait" and c["reason"].startswith("sample ratio mismatch")
    assert report["best"] is None
