"""What the evaluation report shows about cost: the bill at every stage of the schedule, per arm
and now, the traffic at which the increase reaches the gate (standing replicas spread over more
predictions as traffic grows), and the gate's verdict at the declared and the observed traffic."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from serving.config.delivery import CostConfig
from serving.evidence.cost.bill import (
    StageBill,
    increase,
    missing_inputs,
    stage_bill,
    work_per_request,
)
from serving.evidence.cost.usage import Usage


def traffic_for_increase(
    usage: Usage, config: CostConfig, target: float, low: float = 1e-3, high: float = 1e5
) -> float | None:
    """Predictions per second at which the increase at full rollout equals `target`, the other
    measurements as they are: the increase falls as traffic grows (standing replicas spread over
    more predictions), so just below this traffic the increase is higher. The highest crossing
    in [low, high] (a log grid, then bisection); None when an input is missing or the increase
    does not cross `target` there."""

    def excess(rate: float) -> float | None:
        at = replace(usage, requests_per_second=rate)
        value = increase(stage_bill(at, config, 0.0), stage_bill(at, config, 1.0))
        return None if value is None else value - target

    # scale-to-zero makes the curve non-monotone at a trickle (an app up a small share of the
    # time costs little): bracket the highest crossing on a log grid, then bisect it
    grid = [low * (high / low) ** (i / 120) for i in range(121)]
    maybe = [excess(rate) for rate in grid]
    values = [v for v in maybe if v is not None]
    if len(values) != len(maybe):
        return None
    bracket: tuple[float, float, float] | None = None
    for i in range(len(grid) - 1, 0, -1):
        if (values[i] > 0) != (values[i - 1] > 0):
            bracket = (grid[i - 1], grid[i], values[i - 1])
            break
    if bracket is None:
        return None
    low, high, below = bracket
    for _ in range(60):
        middle = math.sqrt(low * high)
        value = excess(middle)
        if value is None:
            return None
        if (value > 0) == (below > 0):
            low = middle
        else:
            high = middle
    return math.sqrt(low * high)


def verdict_at_traffic(
    usage: Usage, config: CostConfig, rate: float | None, maximum: float, label: str
) -> dict[str, Any]:
    """The cost gate's verdict at `rate` predictions per second, the measured CPU as it is:
    classic alone and 100 % ensemble per month with their bills broken down (compute, idle
    replicas, request charges), the increase, and `pass` (increase < maximum), `fail`, or
    `unknown` when an input is missing (the gate then fails closed)."""
    at = replace(usage, requests_per_second=rate)
    classic, full = stage_bill(at, config, 0.0), stage_bill(at, config, 1.0)
    value = increase(classic, full)
    month = config.seconds_per_month

    def monthly(bill: StageBill | None) -> dict[str, Any] | None:
        if bill is None:
            return None
        parts = {k: v * month for k, v in bill.breakdown().items()}
        return {"total": bill.per_month, "per_request": bill.per_request, **parts}

    return {
        "traffic": label,
        "requests_per_second": rate,
        "classic_alone": monthly(classic),
        "ensemble_full": monthly(full),
        "increase": value,
        "maximum": maximum,
        "verdict": "unknown" if value is None else "pass" if value < maximum else "fail",
        "missing": sorted(set(missing_inputs(at, 0.0) + missing_inputs(at, 1.0))),
    }


def cost_report(
    usage: Usage,
    config: CostConfig,
    schedule: Sequence[float],
    current_percentage: float,
    requests_source: str = "observed",
    increases: Sequence[float] = (),
    observed_requests_per_second: float | None = None,
) -> dict[str, Any]:
    """Everything the evaluation report shows about cost: inputs, per-arm $/request, the blended
    $/request at the current stage, the bill at classic alone and at every stage of `schedule`
    (percentages) with its increase over classic alone, `increase_at_full_rollout` (the go/no-go's
    cost term; None with `missing` saying why), and for each of `increases` (e.g. the gate's
    maximum and target) the traffic at which the increase reaches it."""
    classic_alone = stage_bill(usage, config, 0.0)
    full = stage_bill(usage, config, 1.0)
    shares = sorted({0.0, *(float(p) / 100.0 for p in schedule), 1.0})
    stages = []
    for share in shares:
        bill = {0.0: classic_alone, 1.0: full}.get(share) or stage_bill(usage, config, share)
        entry: dict[str, Any] = {"percentage": share * 100.0}
        if bill is not None:
            entry = bill.to_dict()
            entry["increase"] = increase(classic_alone, bill)
        entry["in_schedule"] = any(math.isclose(share * 100.0, float(p)) for p in schedule)
        stages.append(entry)
    current_share = min(max(float(current_percentage), 0.0), 100.0) / 100.0
    current = stage_bill(usage, config, current_share)
    arms = {}
    for arm, bill in (("classic", classic_alone), ("ensemble", full)):
        arms[arm] = {
            "cpu_seconds_per_request": (
                usage.classic_cpu_seconds_per_request
                if arm == "classic"
                else usage.ensemble_cpu_seconds_per_request
            ),
            "work": work_per_request(usage, config, arm),
            "cost_per_request": None if bill is None else bill.per_request,
            "monthly": None if bill is None else bill.per_month,
        }
    arms["cascade"] = _cascade(usage, config, classic_alone)
    value = increase(classic_alone, full)
    return {
        "definition": (
            "deployment bill per served prediction: CPU- and memory-seconds of the router "
            "share and the arm service at the active rates, standing replicas at their "
            "rates, and the request charge, at the observed traffic (serving/evidence/cost)"
        ),
        "currency": config.prices.currency,
        "inputs": {
            "requests_per_second": usage.requests_per_second,
            "requests_source": requests_source,
            "router_cpu_seconds_per_request": usage.router_cpu_seconds_per_request,
            "classic_cpu_seconds_per_request": usage.classic_cpu_seconds_per_request,
            "ensemble_cpu_seconds_per_request": usage.ensemble_cpu_seconds_per_request,
            "cascade_cpu_seconds_per_request": usage.cascade_cpu_seconds_per_request,
            "classic_in_router": usage.classic_in_router,
            "shadow_rate": usage.shadow_rate,
        },
        "arms": arms,
        "current": {
            "percentage": current_share * 100.0,
            "cost_per_request": None if current is None else current.per_request,
            "monthly": None if current is None else current.per_month,
        },
        "stages": stages,
        "increase_at_full_rollout": value,
        "traffic_for_increase": [
            {"increase": target, "requests_per_second": traffic_for_increase(usage, config, target)}
            for target in increases
        ],
        "missing": sorted(set(missing_inputs(usage, 0.0) + missing_inputs(usage, 1.0))),
        "by_traffic": _by_traffic(
            usage, config, requests_source, increases, observed_requests_per_second
        ),
        "plan": config.plan.model_dump(),
        "config": config.model_dump(mode="json"),
    }


def _by_traffic(
    usage: Usage,
    config: CostConfig,
    source: str,
    increases: Sequence[float],
    observed: float | None,
) -> list[dict[str, Any]]:
    """The verdict at the declared forecast (when one is configured) beside the one at the
    observed traffic: a test client's speed is not the product's traffic."""
    if not increases:
        return []
    maximum = float(increases[0])
    out = []
    if source == "assumed":
        out.append(
            verdict_at_traffic(usage, config, usage.requests_per_second, maximum, "declared")
        )
        rate = observed
    else:
        rate = usage.requests_per_second
    out.append(verdict_at_traffic(usage, config, rate, maximum, "observed"))
    return out


def _cascade(usage: Usage, config: CostConfig, classic_alone: StageBill | None) -> dict[str, Any]:
    """The deployment with all traffic on the cascade (served by the ensemble app at the
    cascade's measured CPU per prediction), and its increase over classic alone."""
    cpu = usage.cascade_cpu_seconds_per_request
    bill = (
        None
        if cpu is None
        else stage_bill(replace(usage, ensemble_cpu_seconds_per_request=cpu), config, 1.0)
    )
    return {
        "cpu_seconds_per_request": cpu,
        "cost_per_request": None if bill is None else bill.per_request,
        "monthly": None if bill is None else bill.per_month,
        "increase": increase(classic_alone, bill),
        "breakdown_per_month": None
        if bill is None
        else {k: v * config.seconds_per_month for k, v in bill.breakdown().items()},
    }
