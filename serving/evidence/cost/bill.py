"""The bill itself: each app's usage and price per second at one ensemble share (scale-to-zero
apps up only while traffic keeps them up), the deployment's bill per second, month and served
request, the work one prediction costs, and the increase of one bill over another. The
definition is in `serving.evidence.cost`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from serving.config.delivery import AppSize, CostConfig, PriceTable
from serving.evidence.cost.usage import Usage


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
