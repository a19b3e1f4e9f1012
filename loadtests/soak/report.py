"""The soak run's directory: reads the request log and Locust's CSVs, writes the report.

Writes results/soak-<YYYYmmdd-HHMMSS>/: report.md (per-window table, memory per process, verdict,
the command), soak.json (config, windows, every memory sample, the analysis), soak.png (p99 per
window, RSS over time); next to requests.csv (the request log), Locust's CSVs (locust_stats.csv,
locust_stats_history.csv with --csv-full-history, locust_failures.csv, locust_exceptions.csv),
report.html, locust.log and with --serve the server's log.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loadtests.harness.common import locust_stats_row, markdown_row
from loadtests.soak.analysis import RequestRecord, metric_series


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
    row = locust_stats_row(stats_csv, "Aggregated") if stats_csv.exists() else None
    if row is None:
        return None
    return {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"])}


def fmt(value: Any, spec: str = ".0f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def render_report(meta: Mapping[str, Any], result: Mapping[str, Any]) -> str:
    """report.md: verdict, command, per-window table, memory per process, definitions."""
    lines = _summary(meta, result) + _verdict(meta, result) + _windows(result)
    lines += _memory(meta, result) + _definitions(meta, result)
    return "\n".join(lines)


def _summary(meta: Mapping[str, Any], result: Mapping[str, Any]) -> list[str]:
    """The run in a few lines: pass/fail, command, target and achieved rate, server."""
    v = result["verdict"]
    reanalysed = (
        [
            f"- reanalysed (window {meta['window_s']:g} s, max drift {meta['max_p99_drift']:g}, "
            f"max RSS growth {meta['max_rss_growth_mb']:g} MB): `{meta['reanalyzed']}`"
        ]
        if meta.get("reanalyzed")
        else []
    )
    per_user = meta["rate"] / meta["users"]
    server = "started by the soak" if meta.get("served") else "external"
    lines = [
        f"# Soak test {meta['name']}: {'PASS' if v['passed'] else 'FAIL'}",
        "",
        f"- command: `{meta['command']}`",
        *reanalysed,
        f"- target: {meta['rate']:g} req/s{meta.get('rate_note', '')} from {meta['users']} Locust "
        f"users ({', '.join(meta['classes'])}; constant_throughput {per_user:.3g}/s each)",
        f"- achieved after warm-up: {fmt(result['achieved_rps_after_warmup'], '.1f')} req/s; "
        f"{result['requests']} requests, {result['failures']} failed",
        f"- duration {meta['duration_s']:g} s, windows of {result['window_s']:g} s "
        f"(window 0 = warm-up), memory sampled every {meta['sample_interval_s']:g} s",
        f"- server: {meta['host']} ({server}; root pid {meta.get('server_pid') or 'unknown'}); "
        f"started {meta.get('started')}, finished {meta.get('finished')}",
    ]
    return lines


def _verdict(meta: Mapping[str, Any], result: Mapping[str, Any]) -> list[str]:
    """Each check against its limit, then the warnings and the most frequent failures."""
    v, drift = result["verdict"], result["p99_drift"]
    lines = [
        "",
        "## Verdict",
        "",
        markdown_row("check", "value", "limit", "result"),
        markdown_row("---", "---", "---", "---"),
    ]
    for check in v["checks"]:
        value = check["value"]
        if check["check"] == "p99 drift" and value is not None:
            value = (
                f"{value:+.1%} (p99 {drift['early_p99_ms']:.0f} ms in windows "
                f"{drift['early_windows']} -> {drift['late_p99_ms']:.0f} ms in windows "
                f"{drift['late_windows']})"
            )
        detail = f" ({check['detail']})" if check.get("detail") else ""
        lines.append(
            markdown_row(
                check["check"],
                f"{fmt(value, '')}{detail}",
                check["limit"],
                "ok" if check["passed"] else "**FAIL**",
            )
        )
    if result["warnings"]:
        lines += ["", "Warnings:", ""] + [f"- {w}" for w in result["warnings"]]
    if meta.get("failure_reasons"):
        lines += ["", "Most frequent failures:", ""] + [
            f"- {n} x {reason}" for reason, n in meta["failure_reasons"]
        ]
    return lines


def _windows(result: Mapping[str, Any]) -> list[str]:
    drift = result["p99_drift"]
    lines: list[str] = []
    lines += [
        "",
        "## Windows",
        "",
        markdown_row(
            "window",
            "from-to (s)",
            "requests",
            "req/s",
            "failures",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "RSS total MB",
            "note",
        ),
        markdown_row("---:", "---", *["---:"] * 8, "---"),
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
            markdown_row(
                w["index"],
                f"{w['start_s']:.0f}-{w['end_s']:.0f}",
                w["requests"],
                fmt(w["rps"], ".1f"),
                w["failures"],
                fmt(w["p50_ms"]),
                fmt(w["p95_ms"]),
                fmt(w["p99_ms"]),
                fmt(w["max_ms"]),
                fmt(w.get("rss_total_mb"), ".1f"),
                ", ".join(notes),
            )
        )
    return lines


def _memory(meta: Mapping[str, Any], result: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    lines += [
        "",
        "## Memory per process (baseline: last sample at or before "
        f"t = {result['memory_baseline_t_s']:.0f} s)",
        "",
        markdown_row(
            "process",
            "pid",
            "RSS before load MB",
            "baseline MB",
            "last MB",
            "growth MB",
            "slope MB/min",
            "max MB",
            "fds base -> last",
            "threads base -> last",
        ),
        markdown_row("---", *["---:"] * 7, "---", "---"),
    ]
    pids = meta.get("pids", {})
    labels = [label for label in result["rss_mb"] if label != "total"] + ["total"]
    for label in labels:
        rss = result["rss_mb"][label]
        fds, threads = result["fds"].get(label), result["threads"].get(label)
        lines.append(
            markdown_row(
                "**total**" if label == "total" else label,
                pids.get(label, ""),
                fmt(rss["before_load"], ".1f"),
                f"{rss['baseline']:.1f}",
                f"{rss['last']:.1f}",
                f"{rss['growth']:+.1f}",
                fmt(rss["slope_per_min"], "+.2f"),
                f"{rss['max']:.1f}",
                f"{fmt(fds and fds['baseline'])} -> {fmt(fds and fds['last'])}",
                f"{fmt(threads and threads['baseline'])} -> {fmt(threads and threads['last'])}",
            )
        )
    return lines


def _definitions(meta: Mapping[str, Any], result: Mapping[str, Any]) -> list[str]:
    drift = result["p99_drift"]
    lines: list[str] = []
    lines += [
        "",
        "## Definitions",
        "",
        "- Windows start at the first request; a request belongs to the window it started in; "
        "percentiles are nearest-rank over all its requests (failed ones too). "
        "Window 0 is warm-up.",
        f"- p99 drift = late / early - 1: {drift['definition']} (k = min(3, n // 2); a single "
        "window's p99 is noisy on a shared machine).",
        "- RSS growth = last sample - baseline (the last sample at or before the end of window 0), "
        "summed over the server's process tree; shared pages count once per process, so the total "
        "overstates the real footprint but its growth is what a leak moves. Slope = least-squares "
        "fit over the samples from the baseline on (on a run of a few minutes it mostly shows the "
        "end of warm-up; over 10 minutes a leak shows as a steady slope).",
        "- Failed requests: wrong status, non-JSON or wrong body "
        "(loadtests/locust/payloads.py checks), "
        "connection errors, timeouts; counted from the request log and Locust's totals (the "
        "larger).",
        "",
        "## Files",
        "",
        "soak.json (config, windows, memory samples, analysis), soak.png (p99 per window, RSS over "
        "time), requests.csv (start_epoch_s, response_ms, name, ok, error per request), "
        "locust_stats.csv / locust_stats_history.csv (--csv-full-history) / locust_failures.csv / "
        "locust_exceptions.csv, report.html, locust.log"
        + (", server.log" if meta.get("served") else "")
        + ".",
        "",
    ]
    return lines


def plot(
    result: Mapping[str, Any], samples: Sequence[Mapping[str, Any]], path: Path, title: str = ""
) -> None:
    """soak.png: latency percentiles per window (top) and RSS per process and total over time
    (bottom)."""
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
            f"RSS total growth {total['growth']:+.1f} MB, "
            f"slope {fmt(total['slope_per_min'], '+.2f')} MB/min"
        )
    bottom.set_xlabel("seconds since the first request")
    bottom.set_ylabel("RSS - baseline (MB)")
    bottom.legend(fontsize=8, ncol=2)
    bottom.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(
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
