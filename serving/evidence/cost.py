"""The deployment's bill per served request and per month, from what the router measures.

Pure: no clock, no I/O; `serving/delivery/live.py` feeds it and `go_no_go` reads its result.

Definition (the go/no-go's cost term and the dashboard's KPI row use this)
-------------------------------------------------------------------------
The deployment is three Azure Container Apps, sized by `CostConfig.apps` (the same sizes
`python -m deploy apps` creates): the router, the classic service and the ensemble service. At an
ensemble traffic share s and a traffic of L served predictions per second:

1. **Work.** Every process that works on a request spends CPU on it:
   - the router: its own CPU per served prediction (its process CPU time over the window, minus
     the CPU of models it runs in-process, over the predictions it served: HTTP, validation,
     routing, feedback joins, the calls to the arms, background jobs), the same on both arms;
   - the arm that answered: classic's model CPU (in the router process by default,
     `SERVING_CLASSIC_LOCAL`), or the ensemble service's CPU per row as that service reports it
     (its seven members run inside it); the ensemble also computes the shadow copies,
     (1 - s) x the shadow sample rate of the traffic.
   An app's work W is CPU-seconds per second.
2. **Busy time.** A replica of c vCPU and m GiB doing W CPU-seconds per second is busy
   W / (c u) replica-seconds per second (u = `utilisation`; 1.0 bills exactly the measured CPU):
   the time the requests occupied it. Its whole allocation is billed for that time, at the active
   rates: so a request's memory-seconds are m / (c u) times its CPU-seconds.
3. **Standing replicas.** An app runs max(busy, min_replicas, 1 if it serves any traffic)
   replicas: Container Apps scales an app to zero only when no requests come. Replica time beyond
   the busy time is billed at the idle rates when the app has min_replicas > 0 (the platform's
   idle eligibility) and at the active rates otherwise (a scale-to-zero app that traffic keeps up
   is never billed idle).
4. **Requests.** Each served prediction is one billable request at the router; calls between
   apps of one environment are not billed.

cost per second = sum over apps of busy x (c x active vCPU price + m x active GiB price)
+ standing x (c x vCPU rate + m x GiB rate) + L x request price; cost per served request = cost per
second / L; per month = cost per second x `seconds_per_month` (less the free grant when
`prices.free_grant` is on: per subscription, so off by default).

The go/no-go's cost term is the relative increase of the cost per served request at s = 100 %
over classic alone (s = 0: no ensemble app running, no shadow copies).

Prices: Azure Container Apps consumption plan, pay-as-you-go list prices in USD (active
$0.000024 per vCPU-second and $0.000003 per GiB-second; idle $0.000003 and $0.000003; $0.40 per
million requests; free per subscription and month 180,000 vCPU-s, 360,000 GiB-s, 2 million
requests) from https://azure.microsoft.com/pricing/details/container-apps/ and "Billing in Azure
Container Apps" (learn.microsoft.com, updated 2025-12-09), read 2026-12-02.

What this leaves out (so the figures are lower bounds of the bill):
- Container Apps meters replica state per second: a min_replicas > 0 replica that handles any
  request in a second is active for that second, so at moderate traffic the router is idle less
  often than its busy time implies.
- The ensemble service reports the CPU of its model computation, not of its own HTTP handling.
- Replicas are fluid (1.4 busy replicas bill 1.4, not 2), with no scale-out lag or cooldown.
- The router's own CPU per prediction is a mean over the window's mix of arms, assumed the same
  at every share.
- With several router replicas, serving/delivery/live.py observes this replica's traffic and CPU
  (the arms' figures come from every replica's outcomes): the increase is then overstated unless
  `requests_per_second` gives the whole deployment's traffic.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from serving.config.delivery import AppSize, CostConfig, PriceTable

APPS: tuple[str, ...] = ("router", "classic", "ensemble")
"""The apps of the deployment, in report order."""


# ---------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Usage:
    """What the router measured (or was told to assume) over its evaluation window."""

    requests_per_second: float | None
    """Served predictions per second (all arms, cache hits included)."""
    router_cpu_seconds_per_request: float | None
    """The router's own CPU per served prediction, without models run in its process."""
    classic_cpu_seconds_per_request: float | None
    """Classic's model CPU per prediction it served."""
    ensemble_cpu_seconds_per_request: float | None
    """The ensemble service's CPU per prediction it served."""
    classic_in_router: bool = True
    """Classic answers in the router process (its CPU bills as the router's)."""
    shadow_rate: float = 0.0
    """Share of classic-served predictions mirrored to the ensemble (0 with shadow off)."""
    cascade_cpu_seconds_per_request: float | None = None
    """The ensemble service's CPU per prediction the cascade served (its cheap first stage,
    the whole ensemble for the rows it escalates); None before the cascade served any."""


@dataclass(frozen=True)
class MeterReading:
    """Differences between the oldest and newest `CpuMeter` samples."""

    seconds: float
    served: int
    cpu_seconds: float
    in_process_cpu_seconds: float

    @property
    def requests_per_second(self) -> float | None:
        return self.served / self.seconds if self.seconds > 0 else None

    @property
    def router_cpu_seconds_per_request(self) -> float | None:
        """Process CPU less in-process model CPU, per served prediction (None before traffic)."""
        if self.served <= 0:
            return None
        return max(0.0, self.cpu_seconds - self.in_process_cpu_seconds) / self.served


class CpuMeter:
    """Samples of (time, process CPU seconds, predictions served, in-process model CPU seconds),
    kept for `max_age_s`; `reading()` is the difference between the oldest and the newest.

    The caller takes the readings (e.g. `time.process_time()` each rollout tick); samples closer
    than `min_interval_s` to the previous one replace it, so memory stays bounded. Thread-safe.
    """

    def __init__(self, max_age_s: float, min_interval_s: float = 0.5):
        if max_age_s <= 0:
            raise ValueError("max_age_s must be positive")
        self.max_age_s = float(max_age_s)
        self.min_interval_s = float(min_interval_s)
        self._samples: deque[tuple[float, float, int, float]] = deque()
        self._lock = threading.Lock()

    def add(
        self, at: float, cpu_seconds: float, served: int, in_process_cpu_seconds: float
    ) -> None:
        sample = (float(at), float(cpu_seconds), int(served), float(in_process_cpu_seconds))
        with self._lock:
            samples = self._samples
            if len(samples) >= 2 and at - samples[-2][0] < self.min_interval_s:
                samples[-1] = sample  # keep the newest, not one per call
            else:
                samples.append(sample)
            while len(samples) > 2 and samples[1][0] <= at - self.max_age_s:
                samples.popleft()

    def reading(self) -> MeterReading | None:
        """None until two samples exist."""
        with self._lock:
            if len(self._samples) < 2:
                return None
            (t0, cpu0, n0, in0), (t1, cpu1, n1, in1) = self._samples[0], self._samples[-1]
        return MeterReading(t1 - t0, n1 - n0, cpu1 - cpu0, in1 - in0)


def arm_cpu_per_served(snapshot: Mapping[str, Any]) -> float | None:
    """CPU per prediction an arm served, from its `ArmWindow.snapshot()`: the mean over computed
    predictions, spread over cache hits too (a hit costs the arm nothing)."""
    mean = snapshot.get("cpu_seconds_per_request")
    if mean is None:
        return None
    computed = int(snapshot.get("cpu_samples") or 0)
    hits = int(snapshot.get("cached") or 0)
    return float(mean) * computed / (computed + hits) if computed + hits else None


# ---------------------------------------------------------------------------- the bill
@dataclass(frozen=True)
class AppBill:
    """One app's usage per second of traffic at one share."""

    name: str
    cpu_seconds: float
    """Work: CPU-seconds per second."""
    rows: float
    """Predictions it computes per second."""
    busy_replicas: float
    """Replica-seconds per second the work occupies (cpu_seconds / (vCPU x utilisation))."""
    replicas: float
    """Replicas running: max(busy, min_replicas, 1 if it serves traffic)."""
    active_vcpu_seconds: float
    active_gib_seconds: float
    idle_vcpu_seconds: float
    idle_gib_seconds: float
    cost_per_second: float
    """List price of the above, per second (no free grant)."""
    saturated: bool
    """The work needs more replicas than max_replicas allows."""
    cold_starts_per_second: float = 0.0
    """Requests that find a scale-to-zero app at zero replicas (each bills `cold_start_s`)."""
    compute_cost_per_second: float = 0.0
    """The busy part of `cost_per_second`: the work itself at the active rates."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StageBill:
    """The deployment's bill at one ensemble share."""

    share: float
    requests_per_second: float
    apps: tuple[AppBill, ...]
    requests_cost_per_second: float
    per_second: float
    """List price per second: apps plus requests (no free grant)."""
    per_month: float
    """Projected month (the free grant subtracted when configured)."""
    per_request: float
    """per_month over the month's served predictions."""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["percentage"] = self.share * 100.0
        out["apps"] = {app.name: app.to_dict() for app in self.apps}
        out["breakdown_per_second"] = self.breakdown()
        return out

    def breakdown(self) -> dict[str, float]:
        """List price per second split into compute (the work, active rates), idle replicas
        (standing replicas and cold starts beyond the work) and request charges."""
        compute = sum(b.compute_cost_per_second for b in self.apps)
        apps = sum(b.cost_per_second for b in self.apps)
        return {
            "compute": compute,
            "idle_replicas": apps - compute,
            "requests": self.requests_cost_per_second,
        }


def missing_inputs(usage: Usage, share: float) -> list[str]:
    """What `stage_bill` lacks at `share` (empty when it can price it)."""
    missing = []
    if not usage.requests_per_second or usage.requests_per_second <= 0:
        missing.append("no observed traffic")
    if usage.router_cpu_seconds_per_request is None:
        missing.append("no router CPU measurement")
    if share < 1 and usage.classic_cpu_seconds_per_request is None:
        missing.append("no classic CPU measurement")
    if share > 0 and usage.ensemble_cpu_seconds_per_request is None:
        missing.append("no ensemble CPU measurement")
    return missing


def app_bill(
    name: str,
    size: AppSize,
    cpu_seconds: float,
    rows: float,
    prices: PriceTable,
    utilisation: float = 1.0,
    cooldown_s: float | None = None,
    cold_start_s: float = 0.0,
) -> AppBill:
    """Bill one app doing `cpu_seconds` of work and computing `rows` predictions per second.

    A scale-to-zero app (min_replicas 0) with `cooldown_s` given is up only the share of time
    some request came within the cooldown (Poisson traffic: 1 - exp(-rows x cooldown)), and each
    request that finds it at zero bills `cold_start_s` of active time; without `cooldown_s` it is
    up whenever it serves any traffic (the upper bound)."""
    busy = cpu_seconds / (size.cpu * utilisation)
    up = 1.0 if rows > 0 else 0.0
    cold = 0.0
    if size.min_replicas == 0 and cooldown_s is not None and rows > 0:
        up = -math.expm1(-rows * cooldown_s)
        cold = rows * math.exp(-rows * cooldown_s)
    replicas = max(busy, float(size.min_replicas), up) + cold * cold_start_s
    standing = replicas - busy
    idle = standing if size.min_replicas > 0 else 0.0
    active = replicas - idle
    active_vcpu, active_gib = active * size.cpu, active * size.memory_gib
    idle_vcpu, idle_gib = idle * size.cpu, idle * size.memory_gib
    cost = (
        active_vcpu * prices.active_vcpu_second
        + active_gib * prices.active_gib_second
        + idle_vcpu * prices.idle_vcpu_second
        + idle_gib * prices.idle_gib_second
    )
    return AppBill(
        name=name,
        cpu_seconds=cpu_seconds,
        rows=rows,
        busy_replicas=busy,
        replicas=replicas,
        active_vcpu_seconds=active_vcpu,
        active_gib_seconds=active_gib,
        idle_vcpu_seconds=idle_vcpu,
        idle_gib_seconds=idle_gib,
        cost_per_second=cost,
        saturated=busy > size.max_replicas,
        cold_starts_per_second=cold,
        compute_cost_per_second=busy
        * (size.cpu * prices.active_vcpu_second + size.memory_gib * prices.active_gib_second),
    )


def stage_bill(usage: Usage, config: CostConfig, share: float) -> StageBill | None:
    """The deployment's bill with `share` (0..1) of the traffic on the ensemble; share 0 is
    classic alone (no ensemble app, no shadow). None when an input is missing."""
    if not 0 <= share <= 1:
        raise ValueError("share must be in [0, 1]")
    if missing_inputs(usage, share):
        return None
    rate = float(usage.requests_per_second or 0.0)
    classic_rows = rate * (1 - share)
    ensemble_rows = rate * (share + (1 - share) * usage.shadow_rate) if share > 0 else 0.0
    classic_cpu = classic_rows * (usage.classic_cpu_seconds_per_request or 0.0)
    router_cpu = rate * float(usage.router_cpu_seconds_per_request or 0.0)
    if usage.classic_in_router:
        router_cpu += classic_cpu
    apps, prices = config.apps, config.prices
    cold = (config.scale_down_cooldown_s, config.cold_start_s)
    bills = (
        app_bill("router", apps.router, router_cpu, rate, prices, config.utilisation, *cold),
        app_bill(
            "classic",
            apps.classic,
            0.0 if usage.classic_in_router else classic_cpu,
            0.0 if usage.classic_in_router else classic_rows,
            prices,
            config.utilisation,
            *cold,
        ),
        app_bill(
            "ensemble",
            apps.ensemble,
            ensemble_rows * (usage.ensemble_cpu_seconds_per_request or 0.0),
            ensemble_rows,
            prices,
            config.utilisation,
            *cold,
        ),
    )
    requests_cost = rate * prices.per_million_requests / 1e6
    per_second = sum(b.cost_per_second for b in bills) + requests_cost
    per_month = monthly_amount(bills, rate, prices, config.seconds_per_month)
    return StageBill(
        share=share,
        requests_per_second=rate,
        apps=bills,
        requests_cost_per_second=requests_cost,
        per_second=per_second,
        per_month=per_month,
        per_request=per_month / (rate * config.seconds_per_month),
    )


def monthly_amount(
    bills: Sequence[AppBill], requests_per_second: float, prices: PriceTable, seconds: float
) -> float:
    """A month of `bills` and requests; with `prices.free_grant` the grant comes off the
    active usage first (the dearer meter), then the idle usage."""
    active_vcpu = sum(b.active_vcpu_seconds for b in bills) * seconds
    idle_vcpu = sum(b.idle_vcpu_seconds for b in bills) * seconds
    active_gib = sum(b.active_gib_seconds for b in bills) * seconds
    idle_gib = sum(b.idle_gib_seconds for b in bills) * seconds
    requests = requests_per_second * seconds
    if prices.free_grant:
        active_vcpu, idle_vcpu = _grant(active_vcpu, idle_vcpu, prices.free_vcpu_seconds)
        active_gib, idle_gib = _grant(active_gib, idle_gib, prices.free_gib_seconds)
        requests = max(0.0, requests - prices.free_requests)
    return (
        active_vcpu * prices.active_vcpu_second
        + idle_vcpu * prices.idle_vcpu_second
        + active_gib * prices.active_gib_second
        + idle_gib * prices.idle_gib_second
        + requests * prices.per_million_requests / 1e6
    )


def _grant(active: float, idle: float, free: float) -> tuple[float, float]:
    taken = min(active, free)
    return active - taken, max(0.0, idle - (free - taken))


def work_per_request(usage: Usage, config: CostConfig, arm: str) -> dict[str, Any] | None:
    """The work one prediction served by `arm` costs, at the active rates, without standing
    replicas or the request charge: CPU-seconds of each process, the vCPU-seconds and GiB-seconds
    they keep a replica busy, and their price. None when a measurement is missing."""
    router = usage.router_cpu_seconds_per_request
    own = (
        usage.classic_cpu_seconds_per_request
        if arm == "classic"
        else usage.ensemble_cpu_seconds_per_request
    )
    if router is None or own is None:
        return None
    apps = config.apps
    if arm == "classic":
        where = apps.router if usage.classic_in_router else apps.classic
        processes = [("router", apps.router, router), ("classic", where, own)]
    else:
        processes = [("router", apps.router, router), ("ensemble", apps.ensemble, own)]
    u = config.utilisation
    vcpu = sum(cpu / u for _, _, cpu in processes)
    gib = sum(cpu / u * size.memory_gib / size.cpu for _, size, cpu in processes)
    prices = config.prices
    return {
        "cpu_seconds": sum(cpu for _, _, cpu in processes),
        "cpu_seconds_by_process": {name: cpu for name, _, cpu in processes},
        "vcpu_seconds": vcpu,
        "gib_seconds": gib,
        "cost": vcpu * prices.active_vcpu_second + gib * prices.active_gib_second,
    }


def increase(classic_alone: StageBill | None, full: StageBill | None) -> float | None:
    """Relative increase of the cost per served request of `full` over `classic_alone`."""
    if classic_alone is None or full is None or classic_alone.per_request <= 0:
        return None
    return full.per_request / classic_alone.per_request - 1.0


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
            "rates, and the request charge, at the observed traffic (serving/evidence/cost.py)"
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
