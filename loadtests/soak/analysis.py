"""The soak test's analysis: pure functions of the request log and the memory samples.

Unit-tested in tests/loadtests/test_soak_analysis.py on synthetic data.

* Windows of --window seconds from the first request: requests, failures, req/s, p50/p95/p99/max
  (nearest rank over every request that *started* in the window). A trailing window shorter than
  90 % of --window is shown but not used for drift.
* Window 0 is warm-up (spawning, caches, lazy imports): excluded from drift; the memory baseline is
  the last sample at or before its end.
* p99 drift = late / early - 1, where early = the median of the per-window p99 of the first k full
  windows after warm-up and late = the median of the last k full windows, k = min(3, n // 2) for n
  full windows after warm-up (disjoint sets). Medians of three, because a single window's p99 on a
  shared machine is noisy.
* Memory growth = last sample - baseline, per process and for the total; slope = least-squares fit
  (MB/min) over the samples from the baseline on.
* Verdict: PASS iff no failed request (the request log and Locust's own totals both count), p99
  drift < --max-p99-drift and total RSS growth <= --max-rss-growth-mb. One-sided: a soak looks for
  latency that creeps up; a p99 that falls (a neighbour on the shared machine went quiet) is
  reported but passes. Warnings (not failing): achieved rate under 90 % of the target, a server
  process that appeared, vanished or restarted, fd growth >= 20 or thread growth >= 10 in a
  process.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from statistics import median
from typing import Any

import numpy as np

from loadtests.harness.common import percentile

FULL_WINDOW_FRACTION = 0.9
DRIFT_WINDOWS = 3
RATE_SHORTFALL = 0.9
FD_GROWTH_WARNING = 20
THREAD_GROWTH_WARNING = 10

RequestRecord = tuple[float, float, bool]  # (start, seconds from the first request; latency ms; ok)


def window_stats(
    requests: Sequence[RequestRecord], window_s: float, duration_s: float | None = None
) -> list[dict[str, Any]]:
    """Per-window figures for requests given as (start s from the run start, latency ms, ok).

    Windows are [i*window_s, (i+1)*window_s) up to `duration_s` (default: the last request); each
    has requests, failures, rps, p50/p95/p99/max ms and `full` (at least 90 % of window_s long)."""
    if window_s <= 0:
        raise ValueError("window_s must be positive")
    end = duration_s if duration_s is not None else max((t for t, _, _ in requests), default=0.0)
    end = max(end, max((t for t, _, _ in requests), default=0.0))
    count = max(1, math.ceil(end / window_s - 1e-9))
    buckets: list[list[RequestRecord]] = [[] for _ in range(count)]
    for record in requests:
        index = min(count - 1, max(0, int(record[0] // window_s)))
        buckets[index].append(record)
    windows = []
    for i, bucket in enumerate(buckets):
        start = i * window_s
        seconds = min(window_s, end - start) if end > start else window_s
        latencies = [ms for _, ms, _ in bucket]
        windows.append(
            {
                "index": i,
                "start_s": round(start, 3),
                "end_s": round(start + seconds, 3),
                "seconds": round(seconds, 3),
                "full": seconds >= FULL_WINDOW_FRACTION * window_s,
                "requests": len(bucket),
                "failures": sum(1 for _, _, ok in bucket if not ok),
                "rps": round(len(bucket) / seconds, 2) if seconds > 0 else None,
                "p50_ms": percentile(latencies, 0.50),
                "p95_ms": percentile(latencies, 0.95),
                "p99_ms": percentile(latencies, 0.99),
                "max_ms": max(latencies) if latencies else None,
            }
        )
    return windows


def p99_drift(
    windows: Sequence[Mapping[str, Any]], warmup_windows: int = 1, k: int = DRIFT_WINDOWS
) -> dict[str, Any]:
    """p99 drift between the start and the end of the run (after warm-up).

    Uses the full windows with requests after the first `warmup_windows`: early = median p99 of the
    first k', late = median p99 of the last k', k' = min(k, n // 2) (disjoint), drift = late / early
    - 1. With fewer than two such windows, drift is None (the run is too short to judge)."""
    usable = [
        w
        for w in windows
        if w["index"] >= warmup_windows and w.get("full", True) and w.get("p99_ms") is not None
    ]
    used_k = min(k, len(usable) // 2)
    result: dict[str, Any] = {
        "definition": f"median p99 of the last {used_k} vs the first {used_k} full windows after "
        f"{warmup_windows} warm-up window(s)",
        "k": used_k,
        "early_windows": [],
        "late_windows": [],
        "early_p99_ms": None,
        "late_p99_ms": None,
        "drift": None,
    }
    if used_k < 1:
        return result
    early, late = usable[:used_k], usable[-used_k:]
    early_p99 = float(median(w["p99_ms"] for w in early))
    late_p99 = float(median(w["p99_ms"] for w in late))
    result.update(
        early_windows=[w["index"] for w in early],
        late_windows=[w["index"] for w in late],
        early_p99_ms=early_p99,
        late_p99_ms=late_p99,
        drift=(late_p99 / early_p99 - 1) if early_p99 > 0 else None,
    )
    return result


def metric_series(
    samples: Sequence[Mapping[str, Any]], metric: str = "rss_mb"
) -> dict[str, list[tuple[float, float]]]:
    """{label: [(t_s, value), ...]} for every process in `samples`, plus 'total' (the sum per
    sample).

    A sample is {"t_s": seconds from the run start, "processes": {label: {metric: value, ...}}}."""
    series: dict[str, list[tuple[float, float]]] = {"total": []}
    for sample in samples:
        values = {
            label: proc[metric]
            for label, proc in sample["processes"].items()
            if proc.get(metric) is not None
        }
        for label, value in values.items():
            series.setdefault(label, []).append((float(sample["t_s"]), float(value)))
        if values:
            series["total"].append((float(sample["t_s"]), float(sum(values.values()))))
    return series


def slope_per_min(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (t seconds, value) points, in value per minute (None under 3
    points)."""
    if len(points) < 3:
        return None
    t = np.array([p[0] for p in points], dtype=float)
    v = np.array([p[1] for p in points], dtype=float)
    if np.ptp(t) == 0:
        return None
    return float(np.polyfit(t / 60.0, v, 1)[0])


def series_growth(
    points: Sequence[tuple[float, float]], baseline_t: float
) -> dict[str, Any] | None:
    """Baseline (the last point at or before `baseline_t`, else the first), last value, growth =
    last - baseline, the fitted slope per minute from the baseline on, and the value before load
    (the last point with t < 0, if any)."""
    if not points:
        return None
    points = sorted(points)
    before = [p for p in points if p[0] <= baseline_t]
    base = before[-1] if before else points[0]
    last = points[-1]
    idle = [p for p in points if p[0] < 0]
    return {
        "before_load": idle[-1][1] if idle else None,
        "baseline_t_s": base[0],
        "baseline": base[1],
        "last_t_s": last[0],
        "last": last[1],
        "growth": last[1] - base[1],
        "slope_per_min": slope_per_min([p for p in points if p[0] >= base[0]]),
        "max": max(p[1] for p in points if p[0] >= base[0]),
    }


def growth_by_process(
    samples: Sequence[Mapping[str, Any]], baseline_t: float, metric: str = "rss_mb"
) -> dict[str, dict[str, Any]]:
    """series_growth of `metric` for every process label and the total."""
    return {
        label: growth
        for label, points in metric_series(samples, metric).items()
        if (growth := series_growth(points, baseline_t)) is not None
    }


def process_changes(samples: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Server processes that appeared, vanished or changed pid (a restarted worker) between
    samples."""
    changes: list[dict[str, Any]] = []
    previous: dict[str, int] | None = None
    for sample in samples:
        current = {label: proc["pid"] for label, proc in sample["processes"].items()}
        if previous is not None:
            for label in sorted(set(previous) | set(current)):
                old, new = previous.get(label), current.get(label)
                if old != new:
                    kind = "appeared" if old is None else "vanished" if new is None else "restarted"
                    changes.append(
                        {
                            "t_s": sample["t_s"],
                            "process": label,
                            "change": kind,
                            "old_pid": old,
                            "new_pid": new,
                        }
                    )
        previous = current
    return changes


def verdict(
    failures: int,
    drift: float | None,
    rss_growth_mb: float | None,
    *,
    max_p99_drift: float,
    max_rss_growth_mb: float,
    rss_slope_mb_min: float | None = None,
    requests: int | None = None,
    problems: Sequence[str] = (),
) -> dict[str, Any]:
    """PASS iff zero failures, drift < max_p99_drift (one-sided: a faster end passes) and rss
    growth <= max_rss_growth_mb (an unmeasured figure, no requests at all or any of `problems`
    fails)."""
    checks = [
        {"check": "failed requests", "value": failures, "limit": "0", "passed": failures == 0},
        {
            "check": "p99 drift",
            "value": None if drift is None else round(drift, 4),
            "limit": f"< {max_p99_drift:g}",
            "passed": drift is not None and drift < max_p99_drift,
            **(
                {"detail": "not measured: too few full windows after warm-up"}
                if drift is None
                else {}
            ),
        },
        {
            "check": "RSS growth, total (MB)",
            "value": None if rss_growth_mb is None else round(rss_growth_mb, 1),
            "limit": f"<= {max_rss_growth_mb:g}",
            "passed": rss_growth_mb is not None and rss_growth_mb <= max_rss_growth_mb,
            **(
                {"detail": "not measured: no server process sampled"}
                if rss_growth_mb is None
                else {
                    "detail": f"slope {rss_slope_mb_min:+.2f} MB/min"
                    if rss_slope_mb_min is not None
                    else "slope n/a"
                }
            ),
        },
    ]
    if requests is not None:
        checks.insert(
            0, {"check": "requests sent", "value": requests, "limit": "> 0", "passed": requests > 0}
        )
    for problem in problems:
        checks.append({"check": problem, "value": None, "limit": "-", "passed": False})
    return {"passed": all(c["passed"] for c in checks), "checks": checks}


def analyze(
    requests: Sequence[RequestRecord],
    samples: Sequence[Mapping[str, Any]],
    *,
    window_s: float,
    duration_s: float | None,
    max_p99_drift: float,
    max_rss_growth_mb: float,
    target_rps: float | None = None,
    locust_failures: int | None = None,
    problems: Sequence[str] = (),
) -> dict[str, Any]:
    """Everything the report needs from the request log and the memory samples (t relative to the
    first request): windows, drift, memory/fd/thread growth, process changes, warnings, verdict."""
    windows = window_stats(requests, window_s, duration_s)
    baseline_t = windows[0]["end_s"]
    for window in windows:  # the total RSS at each window's end (last sample within it)
        inside = [
            s for s in samples if s["t_s"] <= window["end_s"] and s.get("total_rss_mb") is not None
        ]
        window["rss_total_mb"] = round(inside[-1]["total_rss_mb"], 1) if inside else None
    drift = p99_drift(windows)
    rss = growth_by_process(samples, baseline_t, "rss_mb")
    fds = growth_by_process(samples, baseline_t, "fds")
    threads = growth_by_process(samples, baseline_t, "threads")
    changes = process_changes(samples)
    log_failures = sum(1 for _, _, ok in requests if not ok)
    failures = max(log_failures, locust_failures or 0)
    after_warmup = [w for w in windows[1:] if w["full"]]
    achieved = (
        (sum(w["requests"] for w in after_warmup) / sum(w["seconds"] for w in after_warmup))
        if after_warmup
        else None
    )
    warnings = _warnings(target_rps, achieved, changes, fds, threads, log_failures, locust_failures)
    total = rss.get("total")
    return {
        "requests": len(requests),
        "failures": failures,
        "failures_request_log": log_failures,
        "failures_locust": locust_failures,
        "target_rps": target_rps,
        "achieved_rps_after_warmup": None if achieved is None else round(achieved, 2),
        "window_s": window_s,
        "max_p99_drift": max_p99_drift,
        "max_rss_growth_mb": max_rss_growth_mb,
        "memory_baseline_t_s": baseline_t,
        "windows": windows,
        "p99_drift": drift,
        "rss_mb": rss,
        "fds": fds,
        "threads": threads,
        "process_changes": changes,
        "warnings": warnings,
        "verdict": verdict(
            failures,
            drift["drift"],
            total["growth"] if total else None,
            max_p99_drift=max_p99_drift,
            max_rss_growth_mb=max_rss_growth_mb,
            rss_slope_mb_min=total["slope_per_min"] if total else None,
            requests=len(requests),
            problems=problems,
        ),
    }


def _warnings(
    target_rps: float | None,
    achieved: float | None,
    changes: Sequence[Mapping[str, Any]],
    fds: Mapping[str, Mapping[str, Any]],
    threads: Mapping[str, Mapping[str, Any]],
    log_failures: int,
    locust_failures: int | None,
) -> list[str]:
    """What the verdict does not fail on but a reader should know: a rate shortfall, restarted
    processes, fd and thread growth, request log and Locust disagreeing on failures."""
    warnings: list[str] = []
    if target_rps and achieved is not None and achieved < RATE_SHORTFALL * target_rps:
        warnings.append(
            f"achieved {achieved:.1f} req/s after warm-up, under {RATE_SHORTFALL:.0%} of the "
            f"target {target_rps:g}: the server (or Locust) could not keep up; add --users or "
            "lower --rate"
        )
    for change in changes:
        warnings.append(
            f"process {change['process']} {change['change']} at t={change['t_s']:.0f}s "
            f"(pid {change['old_pid']} -> {change['new_pid']})"
        )
    for figures, what, limit in (
        (fds, "open fds", FD_GROWTH_WARNING),
        (threads, "threads", THREAD_GROWTH_WARNING),
    ):
        for label, growth in figures.items():
            if label != "total" and growth["growth"] >= limit:
                warnings.append(
                    f"{label}: {what} grew by {growth['growth']:.0f} "
                    f"({growth['baseline']:.0f} -> {growth['last']:.0f})"
                )
    if locust_failures is not None and locust_failures != log_failures:
        warnings.append(
            f"failures: request log {log_failures}, Locust's totals {locust_failures} "
            "(the larger counts)"
        )
    return warnings
