"""Soak test: a fixed arrival rate for a long time; zero errors, no p99 drift, bounded memory growth.

    python -m loadtests.soak --serve --bentoml-home /tmp/home --knee-rps 40 --fraction 0.7 --duration 10m
    python -m loadtests.soak --host http://127.0.0.1:3000 --rate 28 --duration 10m [--server-pid PID]
    python -m loadtests.soak --reanalyze results/soak-20260101-120000 [--max-p99-drift 0.1 ...]

Locust (headless, loadtests/soak_locustfile.py) runs the load tests' user classes (default
RoutedUser: POST /api/classify) with `constant_throughput(rate / users)` per user, so the arrival
rate stays at --rate as long as latency is below users / rate seconds (default users = rate, i.e.
1 s of headroom). Every request is logged (start time, latency, ok); a wrong status or body is a
failure, as in the load tests. Every --sample-interval seconds the server's process tree is sampled
with psutil: RSS, open file descriptors, threads and CPU seconds per process (router / classic /
ensemble workers and the arbiter, named from their command lines) and the RSS total.

Analysis (pure functions below, unit-tested in tests/loadtests/test_soak_analysis.py):

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
  reported but passes. Exit code 0 pass, 1 fail, 2 usage error. Warnings (not failing): achieved
  rate under 90 % of the target, a server process that appeared, vanished or restarted, fd growth
  >= 20 or thread growth >= 10 in a process.

Writes results/soak-<YYYYmmdd-HHMMSS>/: report.md (per-window table, memory per process, verdict,
the command), soak.json (config, windows, every memory sample, the analysis), soak.png (p99 per
window, RSS over time), requests.csv (the request log), Locust's CSVs (locust_stats.csv,
locust_stats_history.csv with --csv-full-history, locust_failures.csv, locust_exceptions.csv),
report.html, locust.log and with --serve the server's log.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

from loadtests.server import ROOT

SOAK_LOCUSTFILE = ROOT / "loadtests" / "soak_locustfile.py"
USER_CLASSES = (
    "RoutedUser",
    "ClassicDirectUser",
    "EnsembleDirectUser",
    "BatchUser",
    "FeedbackUser",
)
WORKER_MODULE = "_bentoml_impl.worker.service"
FULL_WINDOW_FRACTION = 0.9
DRIFT_WINDOWS = 3
RATE_SHORTFALL = 0.9
FD_GROWTH_WARNING = 20
THREAD_GROWTH_WARNING = 10

RequestRecord = tuple[float, float, bool]  # (start, seconds from the first request; latency ms; ok)


# --------------------------------------------------------------------------- options
def parse_duration(text: str | float) -> float:
    """Seconds in '10m', '90s', '1m30s', '1h', '600' (plain numbers are seconds)."""
    if isinstance(text, int | float):
        return float(text)
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", text)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != text.replace(" ", ""):
        raise ValueError(f"not a duration: {text!r} (use e.g. 10m, 90s, 1m30s)")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def resolve_rate(rate: float | None, knee_rps: float | None, fraction: float = 0.7) -> float:
    """The target arrival rate: --rate, or --knee-rps x --fraction."""
    if rate is not None and knee_rps is not None:
        raise ValueError("give --rate or --knee-rps, not both")
    if rate is None and knee_rps is None:
        raise ValueError("give --rate R or --knee-rps X [--fraction 0.7]")
    value = rate if rate is not None else knee_rps * fraction
    if not value > 0:
        raise ValueError(f"the rate must be positive (got {value:g})")
    return float(value)


def default_users(rate: float) -> int:
    """Users for a fixed-rate run: one task per user per second (1 s latency headroom), at least 4."""
    return max(4, math.ceil(rate))


# --------------------------------------------------------------------------- processes
def process_role(cmdline: Sequence[str], name: str = "") -> str:
    """A stable label for a server process from its command line: 'router#1', 'classic#1' (BentoML
    service workers, by --service-name and --worker-id), 'arbiter' (`bentoml serve`), else its name."""
    args = list(cmdline)
    if WORKER_MODULE in args:
        service = (
            args[args.index("--service-name") + 1] if "--service-name" in args[:-1] else "service"
        )
        worker = args[args.index("--worker-id") + 1] if "--worker-id" in args[:-1] else "?"
        return f"{service}#{worker}"
    if "bentoml" in args and "serve" in args:
        return "arbiter"
    if "-c" in args:  # a helper started by multiprocessing/joblib: name it by what it imports
        code = " ".join(args[args.index("-c") + 1 :])
        for helper in ("resource_tracker", "semaphore_tracker", "loky", "multiprocessing"):
            if helper in code:
                return helper
    return name or (Path(args[0]).name if args else "process")


def label_processes(processes: Iterable[tuple[int, str]]) -> dict[int, str]:
    """pid -> label for (pid, role) pairs; repeated roles get '~2', '~3' in pid order."""
    labels: dict[int, str] = {}
    seen: dict[str, int] = {}
    for pid, role in sorted(processes):
        seen[role] = seen.get(role, 0) + 1
        labels[pid] = role if seen[role] == 1 else f"{role}~{seen[role]}"
    return labels


# --------------------------------------------------------------------------- analysis (pure)
def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank q-quantile (0..1) of `values` (None when empty)."""
    if len(values) == 0:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return float(ordered[rank - 1])


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
    """{label: [(t_s, value), ...]} for every process in `samples`, plus 'total' (the sum per sample).

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
    """Least-squares slope of (t seconds, value) points, in value per minute (None under 3 points)."""
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
    """Server processes that appeared, vanished or changed pid (a restarted worker) between samples."""
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
    growth <= max_rss_growth_mb (an unmeasured figure, no requests at all or any of `problems` fails)."""
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
    warnings = []
    if target_rps and achieved is not None and achieved < RATE_SHORTFALL * target_rps:
        warnings.append(
            f"achieved {achieved:.1f} req/s after warm-up, under {RATE_SHORTFALL:.0%} of the target "
            f"{target_rps:g}: the server (or Locust) could not keep up; add --users or lower --rate"
        )
    for change in changes:
        warnings.append(
            f"process {change['process']} {change['change']} at t={change['t_s']:.0f}s "
            f"(pid {change['old_pid']} -> {change['new_pid']})"
        )
    for label, growth in fds.items():
        if label != "total" and growth["growth"] >= FD_GROWTH_WARNING:
            warnings.append(
                f"{label}: open fds grew by {growth['growth']:.0f} ({growth['baseline']:.0f} -> {growth['last']:.0f})"
            )
    for label, growth in threads.items():
        if label != "total" and growth["growth"] >= THREAD_GROWTH_WARNING:
            warnings.append(
                f"{label}: threads grew by {growth['growth']:.0f} ({growth['baseline']:.0f} -> {growth['last']:.0f})"
            )
    if locust_failures is not None and locust_failures != log_failures:
        warnings.append(
            f"failures: request log {log_failures}, Locust's totals {locust_failures} (the larger counts)"
        )
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


# --------------------------------------------------------------------------- files
def read_requests(path: Path) -> tuple[list[RequestRecord], float | None]:
    """The request log as records relative to the first request's start, and that start (epoch)."""
    rows: list[tuple[float, float, bool]] = []
    if path.exists():
        with open(path, newline="") as f:
            for row in csv.reader(f):
                try:
                    rows.append((float(row[0]), float(row[1]), row[3] == "1"))
                except (ValueError, IndexError):
                    continue  # a header or a line cut by a kill
    if not rows:
        return [], None
    t0 = min(r[0] for r in rows)
    return sorted((t - t0, ms, ok) for t, ms, ok in rows), t0


def read_failure_reasons(path: Path, limit: int = 10) -> list[tuple[str, int]]:
    """The most frequent failure messages in the request log."""
    counts: dict[str, int] = {}
    if path.exists():
        with open(path, newline="") as f:
            for row in csv.reader(f):
                if len(row) >= 5 and row[3] == "0":
                    key = f"{row[2]}: {row[4]}"
                    counts[key] = counts.get(key, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])[:limit]


def read_locust_totals(stats_csv: Path) -> dict[str, int] | None:
    """Request and failure counts of the Aggregated row of Locust's *_stats.csv."""
    if not stats_csv.exists():
        return None
    with open(stats_csv, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("Name") == "Aggregated":
                return {
                    "requests": int(row["Request Count"]),
                    "failures": int(row["Failure Count"]),
                }
    return None


def _fmt(value: Any, spec: str = ".0f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def render_report(meta: Mapping[str, Any], result: Mapping[str, Any]) -> str:
    """report.md: verdict, command, per-window table, memory per process, definitions."""
    v = result["verdict"]
    drift = result["p99_drift"]
    lines = [
        f"# Soak test {meta['name']}: {'PASS' if v['passed'] else 'FAIL'}",
        "",
        f"- command: `{meta['command']}`",
        *(
            [
                f"- reanalysed (window {meta['window_s']:g} s, max drift {meta['max_p99_drift']:g}, max RSS growth "
                f"{meta['max_rss_growth_mb']:g} MB): `{meta['reanalyzed']}`"
            ]
            if meta.get("reanalyzed")
            else []
        ),
        f"- target: {meta['rate']:g} req/s{meta.get('rate_note', '')} from {meta['users']} Locust users "
        f"({', '.join(meta['classes'])}; constant_throughput {meta['rate'] / meta['users']:.3g}/s each)",
        f"- achieved after warm-up: {_fmt(result['achieved_rps_after_warmup'], '.1f')} req/s; "
        f"{result['requests']} requests, {result['failures']} failed",
        f"- duration {meta['duration_s']:g} s, windows of {result['window_s']:g} s (window 0 = warm-up), "
        f"memory sampled every {meta['sample_interval_s']:g} s",
        f"- server: {meta['host']} ({'started by the soak' if meta.get('served') else 'external'}; "
        f"root pid {meta.get('server_pid') or 'unknown'}); started {meta.get('started')}, finished {meta.get('finished')}",
        "",
        "## Verdict",
        "",
        "| check | value | limit | result |",
        "| --- | --- | --- | --- |",
    ]
    for check in v["checks"]:
        value = check["value"]
        if check["check"] == "p99 drift" and value is not None:
            value = (
                f"{value:+.1%} (p99 {drift['early_p99_ms']:.0f} ms in windows {drift['early_windows']} -> "
                f"{drift['late_p99_ms']:.0f} ms in windows {drift['late_windows']})"
            )
        detail = f" ({check['detail']})" if check.get("detail") else ""
        lines.append(
            f"| {check['check']} | {_fmt(value, '')}{detail} | {check['limit']} | "
            f"{'ok' if check['passed'] else '**FAIL**'} |"
        )
    if result["warnings"]:
        lines += ["", "Warnings:", ""] + [f"- {w}" for w in result["warnings"]]
    if meta.get("failure_reasons"):
        lines += ["", "Most frequent failures:", ""] + [
            f"- {n} x {reason}" for reason, n in meta["failure_reasons"]
        ]
    lines += [
        "",
        "## Windows",
        "",
        "| window | from-to (s) | requests | req/s | failures | p50 ms | p95 ms | p99 ms | max ms | RSS total MB | note |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for w in result["windows"]:
        notes = []
        if w["index"] == 0:
            notes.append("warm-up")
        if not w["full"]:
            notes.append("short: not in drift")
        if w["index"] in drift["early_windows"]:
            notes.append("early")
        if w["index"] in drift["late_windows"]:
            notes.append("late")
        lines.append(
            f"| {w['index']} | {w['start_s']:.0f}-{w['end_s']:.0f} | {w['requests']} | {_fmt(w['rps'], '.1f')} | "
            f"{w['failures']} | {_fmt(w['p50_ms'])} | {_fmt(w['p95_ms'])} | {_fmt(w['p99_ms'])} | "
            f"{_fmt(w['max_ms'])} | {_fmt(w.get('rss_total_mb'), '.1f')} | {', '.join(notes)} |"
        )
    lines += [
        "",
        f"## Memory per process (baseline: last sample at or before t = {result['memory_baseline_t_s']:.0f} s)",
        "",
        "| process | pid | RSS before load MB | baseline MB | last MB | growth MB | slope MB/min | max MB | fds base -> last | threads base -> last |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    pids = meta.get("pids", {})
    labels = [label for label in result["rss_mb"] if label != "total"] + ["total"]
    for label in labels:
        rss = result["rss_mb"][label]
        fds, threads = result["fds"].get(label), result["threads"].get(label)
        lines.append(
            f"| {'**total**' if label == 'total' else label} | {pids.get(label, '')} | {_fmt(rss['before_load'], '.1f')} | "
            f"{rss['baseline']:.1f} | {rss['last']:.1f} | {rss['growth']:+.1f} | {_fmt(rss['slope_per_min'], '+.2f')} | "
            f"{rss['max']:.1f} | {_fmt(fds and fds['baseline'])} -> {_fmt(fds and fds['last'])} | "
            f"{_fmt(threads and threads['baseline'])} -> {_fmt(threads and threads['last'])} |"
        )
    lines += [
        "",
        "## Definitions",
        "",
        "- Windows start at the first request; a request belongs to the window it started in; percentiles are "
        "nearest-rank over all its requests (failed ones too). Window 0 is warm-up.",
        f"- p99 drift = late / early - 1: {drift['definition']} (k = min(3, n // 2); a single window's p99 is noisy "
        "on a shared machine).",
        "- RSS growth = last sample - baseline (the last sample at or before the end of window 0), summed over the "
        "server's process tree; shared pages count once per process, so the total overstates the real footprint but "
        "its growth is what a leak moves. Slope = least-squares fit over the samples from the baseline on (on a run of a "
        "few minutes it mostly shows the end of warm-up; over 10 minutes a leak shows as a steady slope).",
        "- Failed requests: wrong status, non-JSON or wrong body (loadtests/payloads.py checks), connection errors, "
        "timeouts; counted from the request log and Locust's totals (the larger).",
        "",
        "## Files",
        "",
        "soak.json (config, windows, memory samples, analysis), soak.png (p99 per window, RSS over time), requests.csv "
        "(start_epoch_s, response_ms, name, ok, error per request), locust_stats.csv / locust_stats_history.csv "
        "(--csv-full-history) / locust_failures.csv / locust_exceptions.csv, report.html, locust.log"
        + (", server.log" if meta.get("served") else "")
        + ".",
        "",
    ]
    return "\n".join(lines)


def plot(
    result: Mapping[str, Any], samples: Sequence[Mapping[str, Any]], path: Path, title: str = ""
) -> None:
    """soak.png: latency percentiles per window (top) and RSS per process and total over time (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = [w for w in result["windows"] if w["p99_ms"] is not None]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8), sharex=True)
    mids = [(w["start_s"] + w["end_s"]) / 2 for w in windows]
    for key, style in (("p50_ms", ":"), ("p95_ms", "--"), ("p99_ms", "-")):
        top.plot(mids, [w[key] for w in windows], style, marker="o", label=key.replace("_ms", ""))
    if result["windows"]:
        top.axvspan(
            result["windows"][0]["start_s"],
            result["windows"][0]["end_s"],
            color="grey",
            alpha=0.15,
            label="warm-up",
        )
    drift = result["p99_drift"]
    if drift["drift"] is not None:
        for which, color in (("early", "tab:green"), ("late", "tab:red")):
            top.axhline(
                drift[f"{which}_p99_ms"],
                color=color,
                alpha=0.5,
                linewidth=1,
                label=f"{which} p99 median {drift[f'{which}_p99_ms']:.0f} ms",
            )
        top.set_title(f"p99 drift {drift['drift']:+.1%}")
    top.set_ylabel("latency per window (ms)")
    top.legend(fontsize=8)
    top.grid(alpha=0.3)

    growth = result["rss_mb"]
    for label, points in metric_series(samples, "rss_mb").items():
        if points and label in growth:  # relative to the baseline: a few MB of drift stay visible
            base = growth[label]["baseline"]
            bottom.plot(
                [p[0] for p in points],
                [p[1] - base for p in points],
                linewidth=2.5 if label == "total" else 1.2,
                label=f"{label} ({base:.0f} MB at baseline)",
            )
    bottom.axvline(
        result["memory_baseline_t_s"], color="grey", linestyle="--", linewidth=1, label="baseline"
    )
    if result.get("max_rss_growth_mb") is not None:
        bottom.axhline(
            result["max_rss_growth_mb"],
            color="tab:red",
            alpha=0.5,
            linewidth=1,
            label="bound (total)",
        )
    total = growth.get("total")
    if total:
        bottom.set_title(
            f"RSS total growth {total['growth']:+.1f} MB, slope {_fmt(total['slope_per_min'], '+.2f')} MB/min"
        )
    bottom.set_xlabel("seconds since the first request")
    bottom.set_ylabel("RSS - baseline (MB)")
    bottom.legend(fontsize=8, ncol=2)
    bottom.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- sampling
def find_server_root(port: int) -> int | None:
    """The top-most process of ours listening on `port` (BentoML's arbiter owns the sockets)."""
    import psutil

    try:
        listeners = {
            c.pid
            for c in psutil.net_connections(kind="tcp")
            if c.pid and c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
        }
    except (psutil.AccessDenied, OSError):
        return None
    for pid in sorted(listeners):
        try:
            if not any(p.pid in listeners for p in psutil.Process(pid).parents()):
                return pid
        except psutil.NoSuchProcess:
            continue
    return None


def sample_tree(root_pid: int) -> dict[str, Any] | None:
    """One memory sample of `root_pid` and its descendants (None when the root is gone)."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    rows = []
    for proc in procs:
        try:
            with proc.oneshot():
                cpu = proc.cpu_times()
                rows.append(
                    (
                        proc.pid,
                        process_role(proc.cmdline(), proc.name()),
                        {
                            "pid": proc.pid,
                            "rss_mb": round(proc.memory_info().rss / 2**20, 2),
                            "fds": proc.num_fds(),
                            "threads": proc.num_threads(),
                            "cpu_s": round(cpu.user + cpu.system, 2),
                        },
                    )
                )
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    labels = label_processes((pid, role) for pid, role, _ in rows)
    processes = {labels[pid]: info for pid, _, info in rows}
    return {
        "epoch": round(time.time(), 3),
        "processes": processes,
        "total_rss_mb": round(sum(p["rss_mb"] for p in processes.values()), 2),
    }


# --------------------------------------------------------------------------- run
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.soak",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:5]),
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--host", help="URL of a running server (default http://127.0.0.1:3000)")
    target.add_argument(
        "--serve", action="store_true", help="start `bentoml serve service:Router` for the run"
    )
    target.add_argument(
        "--reanalyze",
        type=Path,
        metavar="DIR",
        help="recompute the analysis and report of an earlier soak directory (no load)",
    )
    parser.add_argument(
        "--bentoml-home", type=Path, help="with --serve: the model store to serve from"
    )
    parser.add_argument(
        "--flags",
        type=Path,
        help="with --serve: flag file to start from (default config/flags.yaml)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --serve: server env",
    )
    parser.add_argument(
        "--server-pid",
        type=int,
        help="with --host: the server's root pid (default: who listens on the port)",
    )
    parser.add_argument("--rate", type=float, help="target arrival rate, requests/s")
    parser.add_argument(
        "--knee-rps",
        type=float,
        help="instead of --rate: the knee's req/s (python -m loadtests run step)",
    )
    parser.add_argument(
        "--fraction",
        type=float,
        default=0.7,
        help="with --knee-rps: the rate is this fraction of it (0.7)",
    )
    parser.add_argument(
        "--duration", "-t", default="10m", help="run time: 10m (default), 90s, 1m30s"
    )
    parser.add_argument(
        "--window", default="60s", help="window length for percentiles/drift (default 60s)"
    )
    parser.add_argument(
        "--users", "-u", type=int, help="Locust users (default: ceil(rate), at least 4)"
    )
    parser.add_argument(
        "--classes", default="RoutedUser", help="comma-separated user classes (default RoutedUser)"
    )
    parser.add_argument(
        "--max-p99-drift", type=float, default=0.10, help="fail when |p99 drift| >= this (0.10)"
    )
    parser.add_argument(
        "--max-rss-growth-mb", type=float, default=50.0, help="fail when total RSS grows more (50)"
    )
    parser.add_argument(
        "--sample-interval", type=float, default=5.0, help="seconds between memory samples (5)"
    )
    parser.add_argument(
        "--results", type=Path, default=ROOT / "results", help="parent of the run directory"
    )
    parser.add_argument("--name", help="run directory name (default soak-<timestamp>)")
    return parser


def _write_outputs(
    out: Path, meta: dict[str, Any], samples: list[dict[str, Any]], result: dict[str, Any]
) -> None:
    meta = {**meta, "failure_reasons": read_failure_reasons(out / "requests.csv")}
    (out / "soak.json").write_text(
        json.dumps({"config": meta, "analysis": result, "samples": samples}, indent=1)
    )
    (out / "report.md").write_text(render_report(meta, result))
    try:
        plot(
            result,
            samples,
            out / "soak.png",
            title=f"soak {meta['name']}: {meta['rate']:g} req/s, "
            f"{'PASS' if result['verdict']['passed'] else 'FAIL'}",
        )
    except Exception as exc:  # a chart problem must not lose the verdict
        print(f"warning: no chart ({type(exc).__name__}: {exc})", file=sys.stderr)


def _summarize(out: Path, result: Mapping[str, Any]) -> int:
    v = result["verdict"]
    for check in v["checks"]:
        print(
            f"  {'ok  ' if check['passed'] else 'FAIL'} {check['check']}: {check['value']} "
            f"(limit {check['limit']}){' - ' + check['detail'] if check.get('detail') else ''}"
        )
    for warning in result["warnings"]:
        print(f"  warning: {warning}")
    print(f"soak: {'PASS' if v['passed'] else 'FAIL'} - report {out / 'report.md'}", flush=True)
    return 0 if v["passed"] else 1


def _analyze_dir(
    out: Path, meta: dict[str, Any], samples: list[dict[str, Any]], problems: Sequence[str] = ()
) -> dict[str, Any]:
    requests, t0 = read_requests(out / "requests.csv")
    t0 = t0 if t0 is not None else (samples[0]["epoch"] if samples else time.time())
    for sample in samples:
        sample["t_s"] = round(sample["epoch"] - t0, 3)
    totals = read_locust_totals(out / "locust_stats.csv")
    return analyze(
        requests,
        samples,
        window_s=meta["window_s"],
        duration_s=meta["duration_s"],
        max_p99_drift=meta["max_p99_drift"],
        max_rss_growth_mb=meta["max_rss_growth_mb"],
        target_rps=meta["rate"],
        locust_failures=totals["failures"] if totals else None,
        problems=problems,
    )


def reanalyze(args: argparse.Namespace, argv: Sequence[str]) -> int:
    out = args.reanalyze.resolve()
    data = json.loads((out / "soak.json").read_text())
    meta, samples = data["config"], data["samples"]
    given = {a.split("=", 1)[0] for a in argv}  # only the options given override the run's own
    if "--max-p99-drift" in given:
        meta["max_p99_drift"] = args.max_p99_drift
    if "--max-rss-growth-mb" in given:
        meta["max_rss_growth_mb"] = args.max_rss_growth_mb
    if "--window" in given:
        meta["window_s"] = parse_duration(args.window)
    meta["reanalyzed"] = shlex.join(
        ["python", "-m", "loadtests.soak", *argv]
    )  # its options stay for the next one
    result = _analyze_dir(out, meta, samples, meta.get("problems", []))
    _write_outputs(out, meta, samples, result)
    return _summarize(out, result)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.reanalyze:
        return reanalyze(args, argv)
    try:
        rate = resolve_rate(args.rate, args.knee_rps, args.fraction)
        duration_s, window_s = parse_duration(args.duration), parse_duration(args.window)
    except ValueError as exc:
        parser.error(str(exc))
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    unknown = [c for c in classes if c not in USER_CLASSES]
    if unknown or not classes:
        parser.error(f"--classes: unknown {unknown}; choose from {', '.join(USER_CLASSES)}")
    users = args.users or default_users(rate)
    name = args.name or f"soak-{datetime.now():%Y%m%d-%H%M%S}"
    out = (args.results / name).resolve()
    out.mkdir(parents=True, exist_ok=True)

    from loadtests import runner
    from loadtests.server import ServerProcess, store_has_models

    signal.signal(
        signal.SIGTERM, lambda *_: sys.exit(143)
    )  # run the finally blocks: stop Locust and the server
    server: ServerProcess | None = None
    host = (args.host or "http://127.0.0.1:3000").rstrip("/")
    problems: list[str] = []
    samples: list[dict[str, Any]] = []
    locust: subprocess.Popen | None = None
    meta: dict[str, Any] = {
        "name": name,
        "command": shlex.join(["python", "-m", "loadtests.soak", *argv]),
        "rate": rate,
        "rate_note": f" (= {args.fraction:g} x knee {args.knee_rps:g})" if args.knee_rps else "",
        "users": users,
        "classes": classes,
        "duration_s": duration_s,
        "window_s": window_s,
        "sample_interval_s": args.sample_interval,
        "max_p99_drift": args.max_p99_drift,
        "max_rss_growth_mb": args.max_rss_growth_mb,
        "served": bool(args.serve),
        "server_env": args.server_env,
        "started": datetime.now().isoformat(timespec="seconds"),
    }
    try:
        if args.serve:
            overrides: dict[str, str] = {}
            if args.bentoml_home:
                overrides["BENTOML_HOME"] = str(args.bentoml_home.resolve())
            if not store_has_models({**os.environ, **overrides}):
                print(
                    "no classic/ensemble models in the store: train them (python -m training) or pass --bentoml-home",
                    file=sys.stderr,
                )
                return 2
            for item in args.server_env:
                key, sep, value = item.partition("=")
                if not sep:
                    parser.error(f"--server-env {item!r}: expected KEY=VALUE")
                overrides[key] = value
            server = ServerProcess.bentoml(out, env=overrides, flags=args.flags, name="server")
            print(
                f"starting bentoml serve on {server.url} (log: {server.log_path}) ...", flush=True
            )
            server.start_retrying()
            if not server.wait_models(timeout=180):
                print(
                    "warning: /api/models did not report both models ready within 180 s",
                    file=sys.stderr,
                )
            host, root_pid = server.url, server.process.pid
        else:
            port = (
                int(host.rsplit(":", 1)[1].split("/")[0])
                if re.search(r":\d+", host.split("//")[-1])
                else 80
            )
            root_pid = args.server_pid or find_server_root(port)
            if root_pid is None:
                print(
                    f"warning: no process of ours listens on port {port}; memory is not measured "
                    "(pass --server-pid)",
                    file=sys.stderr,
                )
        meta.update(host=host, server_pid=root_pid, models=runner._models(host))

        env = {
            **os.environ,
            "LOADTEST_OUTPUT_DIR": str(out),
            "SOAK_RATE_PER_USER": repr(rate / users),
            "SOAK_REQUESTS_CSV": str(out / "requests.csv"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        (out / "requests.csv").write_text("")
        command = runner.locust_command(
            host,
            users,
            max(1.0, users / 5),
            f"{duration_s:g}s",
            classes,
            out,
            ["--csv-full-history"],
            locustfile=SOAK_LOCUSTFILE,
        )
        meta["locust_command"] = command
        print(
            f"soak: {rate:g} req/s ({users} users x {rate / users:.3g}/s, {', '.join(classes)}) against {host} for "
            f"{duration_s:g} s, windows of {window_s:g} s -> {out}",
            flush=True,
        )
        if root_pid and (first := sample_tree(root_pid)):
            samples.append(first)  # before load
        with open(out / "locust.log", "w") as log:
            locust = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
            next_sample, next_report, began = (
                time.monotonic(),
                time.monotonic() + window_s,
                time.monotonic(),
            )
            try:
                while locust.poll() is None:
                    now = time.monotonic()
                    if root_pid and now >= next_sample:
                        sample = sample_tree(root_pid)
                        if sample is None:
                            if f"server process {root_pid} exited during the run" not in problems:
                                problems.append(f"server process {root_pid} exited during the run")
                        else:
                            samples.append(sample)
                        next_sample += args.sample_interval
                    if now >= next_report:
                        _progress(out, now - began, samples)
                        next_report += window_s
                    time.sleep(0.25)
            except KeyboardInterrupt:
                problems.append("interrupted before the end")
                print("interrupted: stopping Locust, analysing what ran", file=sys.stderr)
            if locust.poll() is None:
                locust.terminate()
                try:
                    locust.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    locust.kill()
                    locust.wait()
            if locust.returncode not in (0, None) and "interrupted before the end" not in problems:
                problems.append(f"locust exited with {locust.returncode} (see locust.log)")
        if root_pid and (last := sample_tree(root_pid)):
            samples.append(last)
        if server is not None and server.process.poll() is not None:
            problems.append(
                f"the server exited during the run (code {server.process.returncode}); see {server.log_path}"
            )
    finally:
        if locust is not None and locust.poll() is None:
            locust.kill()
            locust.wait()
        if server is not None:
            pids = {
                label: p["pid"]
                for label, p in (samples[-1]["processes"].items() if samples else [])
            }
            meta["pids"] = pids
            server.stop()
    meta.setdefault(
        "pids",
        {label: p["pid"] for label, p in (samples[-1]["processes"].items() if samples else [])},
    )
    meta.update(finished=datetime.now().isoformat(timespec="seconds"), problems=problems)
    summary = [
        line
        for line in (out / "locust.log").read_text(errors="replace").splitlines()
        if line.strip()
    ]
    print("\n".join(summary[-25:]))
    result = _analyze_dir(out, meta, samples, problems)
    _write_outputs(out, meta, samples, result)
    return _summarize(out, result)


def _progress(out: Path, elapsed: float, samples: Sequence[Mapping[str, Any]]) -> None:
    """A line per window while the soak runs: requests and failures so far, the last window's p99, RSS."""
    requests, _ = read_requests(out / "requests.csv")
    recent = [ms for t, ms, _ in requests if requests and t >= requests[-1][0] - 60]
    failures = sum(1 for _, _, ok in requests if not ok)
    rss = samples[-1]["total_rss_mb"] if samples else None
    print(
        f"  [{elapsed:5.0f}s] {len(requests)} requests, {failures} failed, p99 last 60 s "
        f"{_fmt(percentile(recent, 0.99))} ms, server RSS {_fmt(rss, '.1f')} MB",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
