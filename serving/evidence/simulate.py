"""Seeded simulation of the challenger A/B as the controller really polls it.

    python -m serving.evidence.simulate [--trials 4000] [--seed 23]

Two arms at a base accuracy; from `min_labelled` labels per arm the controller looks every
`step` labels per arm and acts at the first `go` or `no_go`. Per scenario (challenger 0, -1,
-2, +3, +5 accuracy points from the control) and horizon (labels per arm at which the stage
gives up) it reports how often the verdict was `go` (a false promotion when the challenger is
not better, power when it is) and the median labels per arm to a decision, BEFORE (the
fixed-sample non-inferiority and two-sided z-tests per look, as `experiment_report` judged
before its verdicts were sequential) and AFTER (the anytime-valid mixture tests of
`serving.evidence.sequential`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from serving.evidence import sequential

SCENARIOS = (0.0, -0.01, -0.02, 0.03, 0.05)
HORIZONS = (1_000, 5_000)


@dataclass(frozen=True)
class World:
    base: float = 0.80
    alpha: float = 0.05
    margin: float = 0.0
    min_labelled: int = 200
    step: int = 25
    tau: float = sequential.DEFAULT_TAU


def _paths(world: World, delta: float, horizon: int, trials: int, rng) -> tuple:
    """Cumulative (n, k_control, k_challenger) at every look, shape (trials, looks)."""
    looks = np.arange(world.min_labelled, horizon + 1, world.step)
    sizes = np.diff(looks, prepend=0)
    k_c = rng.binomial(sizes, world.base, size=(trials, len(looks))).cumsum(axis=1)
    k_t = rng.binomial(sizes, world.base + delta, size=(trials, len(looks))).cumsum(axis=1)
    return looks[None, :].astype(float), k_c.astype(float), k_t.astype(float)


def verdicts_before(n, k_c, k_t, world: World) -> tuple[np.ndarray, np.ndarray]:
    """(go, no_go) per look: the fixed-sample tests `experiment_report` used per look."""
    p_c, p_t = k_c / n, k_t / n
    d = p_t - p_c
    se = np.sqrt(p_c * (1 - p_c) / n + p_t * (1 - p_t) / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        z_ni = np.where(se > 0, (d + world.margin) / se, np.sign(d + world.margin) * np.inf)
        pooled = (k_c + k_t) / (2 * n)
        se0 = np.sqrt(pooled * (1 - pooled) * 2 / n)
        z = np.where(se0 > 0, d / se0, 0.0)
    go = stats.norm.sf(z_ni) < world.alpha
    no_go = (2 * stats.norm.sf(np.abs(z)) < world.alpha) & (d < 0)
    return go, no_go


def verdicts_after(n, k_c, k_t, world: World) -> tuple[np.ndarray, np.ndarray]:
    """(go, no_go) per look: the anytime-valid tests `experiment_report` uses now."""
    d = k_t / n - k_c / n
    v = sequential.difference_variance(k_c, n, k_t, n)
    p_ni = sequential.always_valid_p(d, -world.margin, v, world.tau, one_sided=True)
    p_two = sequential.always_valid_p(d, 0.0, v, world.tau)
    return p_ni < world.alpha, (p_two < world.alpha) & (d < 0)


def first_decision(go: np.ndarray, no_go: np.ndarray, looks: np.ndarray) -> tuple:
    """Per trial: promoted (go at the first decision), decided at all, labels per arm then."""
    decided = go | no_go
    any_decided = decided.any(axis=1)
    first = decided.argmax(axis=1)
    rows = np.arange(go.shape[0])
    promoted = any_decided & go[rows, first]
    labels = np.where(any_decided, looks[0, first], np.nan)
    return promoted, any_decided, labels


def run(
    trials: int = 4000,
    seed: int = 23,
    world: World | None = None,
    scenarios: Sequence[float] = SCENARIOS,
    horizons: Sequence[int] = HORIZONS,
) -> list[dict]:
    """One row per (horizon, scenario, method): go rate, decided rate, median labels."""
    world = world or World()
    rng = np.random.default_rng(seed)
    out = []
    for horizon in horizons:
        for delta in scenarios:
            n, k_c, k_t = _paths(world, delta, horizon, trials, rng)
            for method, judge in (("before", verdicts_before), ("after", verdicts_after)):
                go, no_go = judge(n, k_c, k_t, world)
                promoted, decided, labels = first_decision(go, no_go, n)
                out.append(
                    {
                        "horizon": horizon,
                        "delta": delta,
                        "method": method,
                        "go_rate": float(promoted.mean()),
                        "decided_rate": float(decided.mean()),
                        "median_labels": float(np.nanmedian(labels)) if decided.any() else None,
                    }
                )
    return out


def table(rows: list[dict], world: World) -> str:
    """The rows as a text table: false promotions for delta <= 0, power for delta > 0."""
    lines = [
        f"base accuracy {world.base}, alpha {world.alpha}, margin {world.margin}, a look every "
        f"{world.step} labels per arm from {world.min_labelled}",
        f"{'horizon':>7} {'challenger':>10} {'what':>16} {'before':>8} {'after':>8}"
        f" {'median labels before':>21} {'after':>6}",
    ]
    by_key = {(r["horizon"], r["delta"], r["method"]): r for r in rows}
    for horizon, delta in dict.fromkeys((r["horizon"], r["delta"]) for r in rows):
        b, a = by_key[(horizon, delta, "before")], by_key[(horizon, delta, "after")]
        what = "power (go)" if delta > 0 else "false promotion"
        lines.append(
            f"{horizon:>7} {delta * 100:>+9.0f}p {what:>16} {b['go_rate']:>8.1%} "
            f"{a['go_rate']:>8.1%} {_fmt(b['median_labels']):>21} {_fmt(a['median_labels']):>6}"
        )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--tau", type=float, default=sequential.DEFAULT_TAU)
    args = parser.parse_args(argv)
    world = World(tau=args.tau)
    print(table(run(args.trials, args.seed, world), world))


if __name__ == "__main__":
    main()
