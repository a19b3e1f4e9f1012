"""Evaluation of an experiment with more than two arms: every challenger against the control.

Feedback rows (`StateStore.feedback_since`) say which arm answered and which model version did,
and whether the split assigned the arm (`randomised`): rows whose arm a header, a preference, an
allow-list or a fallback chose are counted under `not_randomised` per arm and left out (only
randomised assignment compares arms without bias);
`variant_of` credits each row to the experiment's variant that really answered it, and
`experiment_report` gives per variant the labelled accuracy (Wilson 95 % interval) and mean
latency, and per challenger against the control:

- the accuracy difference with its Newcombe-Wilson interval and the two-sided pooled z-test
  (`serving.evidence.evaluation.compare_accuracy`, reused);
- a one-sided non-inferiority z-test against `ChallengerConfig.margin`
  (H0: p_challenger <= p_control - margin; unpooled standard error, as the null does not put the
  two proportions equal);
- beside them, under `sequential`, the ANYTIME-VALID versions (`serving.evidence.sequential`:
  normal-mixture confidence sequence of the difference, always-valid two-sided and
  non-inferiority p-values). The verdict is taken on these: the challenger controller re-judges
  the report every few seconds and acts at the first `go`, and a fixed-sample test per look
  promotes an equal challenger 19.9 % of the time by 1,000 labels per arm instead of 5 %
  (`python -m serving.evidence.simulate`);
- Holm's step-down correction of both families of always-valid p-values across the
  experiment's challengers, so the chance of any false `go` (or any false `no_go`) stays at
  most `alpha` for the whole experiment, at any look (the first true null Holm rejects has
  p <= alpha / m0, and each always-valid p-value ever reaches that with probability at most
  alpha / m0). Family-wise control is what a promotion needs (a false discovery rate would let
  a share of promoted challengers be wrong). The fixed-sample p-values are Holm-adjusted too,
  for reference only;
- a verdict: `wait`, `go` or `no_go`, with a reason and the numbers behind it.

`agreement_verdict` judges a challenger's shadow stage: how often it agrees with the champion.

Everything here is pure (no I/O, no clock) and returns JSON-serialisable dicts (plain floats,
NaN and infinities as None). Two-arm configurations (no `experiment` in the flags) do not use
this module: their go/no-go stays `serving.evidence.evaluation.go_no_go`.

Repeated looks are allowed: the verdicts hold however often the report is recomputed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from serving.config.experiments import ChallengerConfig, Experiment, Variant
from serving.evidence import sequential, srm
from serving.evidence.evaluation import compare_accuracy, wilson_interval

INTERVAL_ALPHA = 0.05
"""Per-variant accuracy and shadow agreement intervals are 95 % Wilson intervals."""

WAIT, GO, NO_GO = "wait", "go", "no_go"
PASS, FAIL = "pass", "fail"


# ---------------------------------------------------------------------------- attribution
def served_version(model: str, served: Mapping[str, str]) -> str | None:
    """The version `model`'s service serves now; the cascade runs in the ensemble service, so
    without its own entry it follows the ensemble's."""
    version = served.get(model)
    if version is None and model == "cascade":
        version = served.get("ensemble")
    return None if version is None else str(version)


def variant_of(
    row: Mapping[str, Any], experiment: Experiment, served: Mapping[str, str]
) -> str | None:
    """The name of the variant a feedback row belongs to, or None when it matches none.

    A variant is (model, version): the row's `arm` must be the variant's model (cascade rows
    match `model: cascade` variants only), and its `model_version` the variant's version. A
    variant with `version: None` follows the pin: it owns the rows answered by the version
    `served` maps its model to now (a row of an earlier champion is not this variant's evidence).
    An explicit-version variant wins over a follow-the-pin one, so when the champion and a named
    challenger are the same version the row goes to the named one. Rows without a
    `model_version` (stored before versions were recorded) or of a model `served` does not know
    match no follow-the-pin variant.
    """
    arm = row.get("arm")
    version = row.get("model_version")
    if version is None:
        return None
    version = str(version)
    candidates = [v for v in experiment.variants if v.model == arm]
    for variant in candidates:
        if variant.version is not None and variant.version == version:
            return variant.name
    for variant in candidates:
        if variant.version is None and served_version(variant.model, served) == version:
            return variant.name
    return None


# ---------------------------------------------------------------------------- statistics
def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order.

    Sort ascending; the i-th smallest (0-based rank i) is multiplied by (m - i); a running
    maximum keeps the adjusted values in the same order as the raw ones; cap at 1. Rejecting
    where adjusted p < alpha controls the family-wise error rate at alpha under any dependence
    (the challengers share one control, so their tests are correlated).
    """
    values = [float(p) for p in p_values]
    for p in values:
        if not (0.0 <= p <= 1.0):  # also rejects NaN
            raise ValueError(f"p-values must lie in [0, 1], got {p}")
    m = len(values)
    order = sorted(range(m), key=lambda i: values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * values[index]))
        adjusted[index] = running
    return adjusted


def noninferiority_test(
    correct_control: int,
    n_control: int,
    correct_challenger: int,
    n_challenger: int,
    margin: float,
) -> dict[str, Any]:
    """One-sided z-test of H0: p_challenger <= p_control - margin (against "not worse than the
    control by more than `margin`").

    z = (p_challenger - p_control + margin) / SE with the unpooled SE
    sqrt(pc(1-pc)/nc + pt(1-pt)/nt); p = P(Z >= z). When SE is 0 (both arms all right or all
    wrong) the estimate decides: p = 0 above the boundary, 0.5 on it, 1 below. `p_value` is None
    when either arm has no labels.
    """
    result: dict[str, Any] = {"margin": float(margin), "z": None, "p_value": None}
    if n_control <= 0 or n_challenger <= 0:
        return result
    p_c, p_t = correct_control / n_control, correct_challenger / n_challenger
    distance = p_t - p_c + margin
    se = math.sqrt(p_c * (1 - p_c) / n_control + p_t * (1 - p_t) / n_challenger)
    if se == 0:
        z = None
        p_value = 0.0 if distance > 0 else 0.5 if distance == 0 else 1.0
    else:
        z = distance / se
        p_value = float(stats.norm.sf(z))
    result.update(z=z, p_value=p_value)
    return result


# ---------------------------------------------------------------------------- the report
def experiment_report(
    rows: Iterable[Mapping[str, Any]],
    experiment: Experiment,
    served: Mapping[str, str],
    cfg: ChallengerConfig,
) -> dict[str, Any]:
    """Per-variant accuracy and latency, and each challenger against the control with a verdict.

    Verdicts per challenger (alpha = `cfg.alpha`, family-wise over the challengers by Holm):
    - `wait`: the control or the challenger has fewer than `cfg.min_labelled` labelled rows (the
      reason says how many more); such a challenger enters the Holm families with p = 1 (not
      yet tested), so the family size is always the number of challengers;
    - `go`: non-inferior, Holm-adjusted one-sided p < alpha. Checked first: a challenger that is
      significantly worse but by less than `cfg.margin` is within the tolerance asked for;
    - `no_go`: significantly worse, Holm-adjusted two-sided p < alpha and a negative difference;
    - `wait` otherwise: no decision yet; the challenger controller abandons the stage after
      `cfg.max_stage_s` without one.

    `best`: the `go` challenger with the highest accuracy (ties: the first listed), or None.
    """
    control = experiment.control
    tallies = {v.name: _Tally() for v in experiment.variants}
    tallies_forced: dict[str, int] = {}
    unattributed = 0
    for row in rows:
        if not row.get("randomised", True):  # chosen arms are reported, never compared
            tallies_forced[str(row.get("arm"))] = tallies_forced.get(str(row.get("arm")), 0) + 1
            continue
        name = variant_of(row, experiment, served)
        if name is None:
            unattributed += 1
            continue
        tallies[name].add(row)

    variants = {v.name: _variant_summary(v, tallies[v.name], served) for v in experiment.variants}
    t_c = tallies[control.name]
    comparisons: dict[str, dict[str, Any]] = {}
    for variant in experiment.challengers:
        comparisons[variant.name] = _compare(control.name, t_c, tallies[variant.name], cfg)

    names = list(comparisons)
    _adjust(comparisons, names)
    ratio = srm.check(
        {v.name: tallies[v.name].labelled for v in experiment.variants},
        {v.name: v.weight for v in experiment.variants},
    )

    for name in names:
        comparisons[name].update(_verdict(comparisons[name], cfg))
        if ratio["mismatch"] and comparisons[name]["verdict"] != WAIT:
            comparisons[name].update(
                verdict=WAIT,
                reason=f"sample ratio mismatch: labelled shares {ratio['observed_share']} vs "
                f"configured {ratio['expected_share']} (always-valid p {ratio['p_value']:.3g}); "
                f"no verdict until the split is fixed (would be: {comparisons[name]['reason']})",
            )

    goes = [n for n in names if comparisons[n]["verdict"] == GO]
    best = max(goes, key=lambda n: comparisons[n]["accuracy"], default=None)
    report = {
        "experiment": experiment.name,
        "control": control.name,
        "served": {str(k): str(v) for k, v in served.items()},
        "config": {"alpha": cfg.alpha, "margin": cfg.margin, "min_labelled": cfg.min_labelled},
        "variants": variants,
        "challengers": comparisons,
        "best": best,
        "unattributed": unattributed,
        "not_randomised": tallies_forced,
        "sample_ratio": ratio,
        "method": {
            "variant_interval": "wilson 95 %",
            "difference_interval": "newcombe-wilson (not adjusted for multiplicity)",
            "superiority_test": "two-proportion z-test (pooled), two-sided",
            "noninferiority_test": "z-test (unpooled SE), one-sided, H0: p_t <= p_c - margin",
            "correction": "holm (family: all challengers; untested ones count with p = 1)",
            "sequential": "normal-mixture mSPRT / confidence sequence (anytime-valid); the "
            "verdict is taken on these",
        },
    }
    return _plain(report)


def _compare(control: str, t_c: _Tally, t: _Tally, cfg: ChallengerConfig) -> dict[str, Any]:
    """One challenger's tally against the control's: the fixed-sample comparison and
    non-inferiority test for reference, the anytime-valid sequence the verdict is taken on (the
    Holm-adjusted p-values and the verdict are filled in afterwards, over all challengers)."""
    ab = compare_accuracy(
        t_c.correct, t_c.labelled, t.correct, t.labelled, cfg.alpha, cfg.min_labelled
    )
    ni = noninferiority_test(t_c.correct, t_c.labelled, t.correct, t.labelled, cfg.margin)
    enough = min(t_c.labelled, t.labelled) >= cfg.min_labelled
    seq = sequential.difference(
        t_c.correct, t_c.labelled, t.correct, t.labelled, cfg.alpha, cfg.margin
    )
    return {
        "control": control,
        "labelled": t.labelled,
        "control_labelled": t_c.labelled,
        "accuracy": ab["accuracy_b"],
        "control_accuracy": ab["accuracy_a"],
        "diff": ab["diff"],
        "ci_low": ab["ci_low"],
        "ci_high": ab["ci_high"],
        "interval_level": 1 - cfg.alpha,
        "z": ab["z"],
        "p_value": ab["p_value"],
        "p_value_holm": None,
        "noninferiority": {
            "margin": cfg.margin,
            "z": ni["z"],
            "p_value": ni["p_value"],
            "p_value_holm": None,
        },
        "sequential": {
            "method": seq["method"],
            "cs_low": seq["cs_low"],
            "cs_high": seq["cs_high"],
            "level": seq["level"],
            "p_value": seq["p_value"],
            "p_value_holm": None,
            "noninferiority_p_value": seq["noninferiority_p_value"],
            "noninferiority_p_value_holm": None,
            "noninferiority_low": seq["noninferiority_low"],
        },
        "tested": enough,
    }


FAMILIES = {
    "superiority": ("p_value",),
    "noninferiority": ("noninferiority", "p_value"),
    "sequential": ("sequential", "p_value"),
    "sequential_noninferiority": ("sequential", "noninferiority_p_value"),
}
"""Each family of p-values Holm adjusts across challengers: where the raw value is."""


def _adjust(comparisons: dict[str, dict[str, Any]], names: list[str]) -> None:
    """Holm-adjust each family of p-values (fixed-sample and always-valid) across all
    challengers; the adjusted value sits beside the raw one with a `_holm` suffix."""
    for path in FAMILIES.values():
        raw: list[float | None] = []
        for name in names:
            c = comparisons[name]
            p = _at(c, path)
            raw.append(p if c["tested"] and p is not None else None)
        adjusted = holm([1.0 if p is None else p for p in raw])
        for name, p, adj in zip(names, raw, adjusted, strict=True):
            *parents, leaf = path
            holder = comparisons[name]
            for key in parents:
                holder = holder[key]
            holder[f"{leaf}_holm"] = None if p is None else adj


def _at(c: Mapping[str, Any], path: Sequence[str]) -> Any:
    for key in path:
        c = c[key]
    return c


def _verdict(c: Mapping[str, Any], cfg: ChallengerConfig) -> dict[str, Any]:
    """`go` / `no_go` / `wait` and a sentence saying why (see `experiment_report`)."""
    n_t, n_c = c["labelled"], c["control_labelled"]
    if not c["tested"]:
        missing = []
        if n_c < cfg.min_labelled:
            missing.append(f"control {n_c} ({cfg.min_labelled - n_c} more)")
        if n_t < cfg.min_labelled:
            missing.append(f"challenger {n_t} ({cfg.min_labelled - n_t} more)")
        return {
            "verdict": WAIT,
            "reason": f"need {cfg.min_labelled} labelled rows per variant, have "
            + ", ".join(missing),
        }
    diff, alpha = c["diff"], cfg.alpha
    seq = c["sequential"]
    ni_holm = seq["noninferiority_p_value_holm"]
    ab_holm = seq["p_value_holm"]
    numbers = (
        f"accuracy {c['accuracy']:.4f} vs control {c['control_accuracy']:.4f}, "
        f"difference {diff:+.4f}, anytime-valid {seq['level']:.0%} "
        f"[{seq['cs_low']:+.4f}, {seq['cs_high']:+.4f}]"
    )
    if ni_holm < alpha:
        worse = ab_holm < alpha and diff < 0
        note = " (significantly worse, but within the margin)" if worse else ""
        return {
            "verdict": GO,
            "reason": f"non-inferior at margin {cfg.margin:g}{note}: always-valid Holm-adjusted p "
            f"{ni_holm:.4g} < {alpha:g}; {numbers}",
        }
    if ab_holm < alpha and diff < 0:
        return {
            "verdict": NO_GO,
            "reason": "significantly worse than the control: always-valid Holm-adjusted "
            f"two-sided p "
            f"{ab_holm:.4g} < {alpha:g}; {numbers}",
        }
    return {
        "verdict": WAIT,
        "reason": f"no decision yet: always-valid non-inferiority Holm-adjusted p {ni_holm:.4g} "
        f"and two-sided "
        f"{ab_holm:.4g} not below {alpha:g}; {numbers}",
    }


class _Tally:
    """Labelled rows, correct ones and latencies of one variant."""

    def __init__(self) -> None:
        self.labelled = 0
        self.correct = 0
        self.latencies: list[float] = []

    def add(self, row: Mapping[str, Any]) -> None:
        correct = row.get("correct")
        if correct is None:
            if row.get("label") is None:
                return
            correct = row.get("predicted") == row.get("label")
        self.labelled += 1
        self.correct += int(bool(correct))
        latency = row.get("latency_ms")
        if latency is not None and math.isfinite(float(latency)):
            self.latencies.append(float(latency))


def _variant_summary(variant: Variant, tally: _Tally, served: Mapping[str, str]) -> dict[str, Any]:
    n, k = tally.labelled, tally.correct
    low, high = wilson_interval(k, n, INTERVAL_ALPHA) if n else (None, None)
    return {
        "model": variant.model,
        "version": variant.version,
        "resolved_version": variant.version or served_version(variant.model, served),
        "follows_pin": variant.version is None,
        "weight": variant.weight,
        "control": variant.control,
        "labelled": n,
        "correct": k,
        "accuracy": k / n if n else None,
        "ci_low": low,
        "ci_high": high,
        "latency_ms_mean": math.fsum(tally.latencies) / len(tally.latencies)
        if tally.latencies
        else None,
        "latency_samples": len(tally.latencies),
    }


# ---------------------------------------------------------------------------- shadow
def agreement_verdict(n: int, agreed: int, cfg: ChallengerConfig) -> dict[str, Any]:
    """The shadow gate from counts: `agreed` of `n` shadow comparisons (the replicas add theirs
    up in the shared store).

    The leader re-judges it every tick, so it is judged on the anytime-valid (1 - alpha)
    confidence sequence of the agreement (`serving.evidence.sequential.proportion`), not on a
    fixed-sample interval: `wait` below `cfg.shadow_min_samples` comparisons; `pass` when the
    sequence's lower bound is at least `cfg.min_agreement` (a retrained version should differ
    where the world moved, not everywhere); `fail` when its upper bound is below it; `wait`
    otherwise (the stage gives up after `cfg.max_stage_s`). The 95 % Wilson interval is shown
    beside it for reference.
    """
    low, high = wilson_interval(agreed, n, INTERVAL_ALPHA) if n else (None, None)
    seq = sequential.proportion(agreed, n, cfg.alpha)
    result: dict[str, Any] = {
        "n": n,
        "agreed": agreed,
        "rate": agreed / n if n else None,
        "ci_low": low,
        "ci_high": high,
        "sequential": seq,
        "min_samples": cfg.shadow_min_samples,
        "min_agreement": cfg.min_agreement,
    }
    if n < cfg.shadow_min_samples:
        result.update(
            verdict=WAIT,
            reason=f"need {cfg.shadow_min_samples} shadow comparisons, have {n} "
            f"({cfg.shadow_min_samples - n} more)",
        )
        return _plain(result)
    s_low, s_high = seq["cs_low"], seq["cs_high"]
    numbers = (
        f"agreement {agreed}/{n} = {agreed / n:.4f}, anytime-valid {seq['level']:.0%} "
        f"[{s_low:.4f}, {s_high:.4f}]"
    )
    if s_low >= cfg.min_agreement:
        verdict, reason = PASS, f"{numbers}: lower bound >= {cfg.min_agreement:g}"
    elif s_high < cfg.min_agreement:
        verdict, reason = FAIL, f"{numbers}: upper bound < {cfg.min_agreement:g}"
    else:
        verdict, reason = WAIT, f"{numbers}: not yet shown above or below {cfg.min_agreement:g}"
    result.update(verdict=verdict, reason=reason)
    return _plain(result)


# ---------------------------------------------------------------------------- JSON
def _plain(value: Any) -> Any:
    """A JSON-serialisable copy: numpy scalars to Python ones, NaN and infinities to None."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value
