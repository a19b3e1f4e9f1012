"""The deployment's bill per served request and per month, from what the router measures.

Pure: no clock, no I/O; `serving/delivery/live.py` feeds it and `go_no_go` reads its result.
Modules: `usage` (what the router measured), `bill` (apps and stages priced), `report` (the
stages, arms and traffic verdicts the evaluation report shows).

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

from serving.evidence.cost.bill import (
    AppBill,
    StageBill,
    app_bill,
    increase,
    missing_inputs,
    monthly_amount,
    stage_bill,
    work_per_request,
)
from serving.evidence.cost.report import cost_report, traffic_for_increase, verdict_at_traffic
from serving.evidence.cost.usage import CpuMeter, MeterReading, Usage, arm_cpu_per_served

__all__ = [
    "AppBill",
    "CpuMeter",
    "MeterReading",
    "StageBill",
    "Usage",
    "app_bill",
    "arm_cpu_per_served",
    "cost_report",
    "increase",
    "missing_inputs",
    "monthly_amount",
    "stage_bill",
    "traffic_for_increase",
    "verdict_at_traffic",
    "work_per_request",
]
