"""The replica benchmark's report: one configuration's rounds summarized (medians; errors over
every request), report.md rendered from them."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from loadtests.benchmark.measure import Measurement
from loadtests.benchmark.report import RUN_COLUMNS, run_cells
from loadtests.harness.common import fmt as _f
from loadtests.harness.common import markdown_row
from loadtests.harness.common import ratio as _ratio
from loadtests.replicas.deployment import CONFIG_BY_KEY, RATIOS, ROUTED_PATH


@dataclass
class Run:
    """One Locust run of one configuration: the benchmark's Measurement and where the server CPU
    went (ms per request)."""

    config: str
    round: int
    measurement: Measurement
    cpu_ms_per_req: dict[str, float | None]


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(runs: list[Run]) -> dict[str, Any]:
    """One configuration over its rounds: the median goodput, percentiles and CPU per request;
    errors over every request."""
    ms = [r.measurement for r in runs]
    requests = sum(m.requests for m in ms)
    failures = sum(m.failures for m in ms)
    parts = sorted({k for r in runs for k in r.cpu_ms_per_req})
    return {
        "rounds": len(runs),
        "requests": requests,
        "failures": failures,
        "error_rate": failures / requests if requests else None,
        "goodput": _median([m.goodput for m in ms]),
        "p50_ms": _median([m.p50_ms for m in ms]),
        "p95_ms": _median([m.p95_ms for m in ms]),
        "p99_ms": _median([m.p99_ms for m in ms]),
        "server_cpu_ms_per_req": _median([m.server_cpu_ms_per_req for m in ms]),
        "cpu_parts_ms_per_req": {
            p: _median([r.cpu_ms_per_req.get(p) for r in runs]) for p in parts
        },
        "client_cpu_s": _median([m.client_cpu_s for m in ms]),
        "notes": [n for m in ms for n in m.notes],
    }


def render(meta: dict[str, Any], runs: dict[str, list[Run]]) -> str:
    """The markdown report: the side-by-side table, the ratios, every run."""
    summary = {key: summarize(r) for key, r in runs.items() if r}
    lines = _header(meta)
    if summary:
        lines += _summary_table(summary) + _ratio_table(summary)
    lines += _deployments(meta) + _every_run(runs)
    return "\n".join(lines) + "\n"


def _header(meta: dict[str, Any]) -> list[str]:
    lines = [
        f"# Router workers and replicas {meta['started']}",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; load average (1/5/15 min) {meta['load_average_start']} at "
        f"start, {meta.get('load_average_end')} at end; models {meta.get('models', '?')}; "
        f"commit {meta.get('commit') or '?'}  ",
        f"Load: {meta['users']} closed-loop Locust users (no think time, distinct rows, user ids "
        f"from a 10,000-user population) on `POST {ROUTED_PATH}` + `{meta['header']}`, "
        f"{meta['duration_s']:.0f} s per configuration and round, {meta['rounds']} round(s) in "
        "alternating order; figures are the median over rounds. Everything (servers, nginx, "
        "PostgreSQL, Locust) shares the same cores: compare ratios, not absolutes.",
        "",
    ]
    if meta.get("skipped"):
        lines += [
            "Skipped: " + "; ".join(f"({k}) {why}" for k, why in meta["skipped"].items()),
            "",
        ]
    return lines


def _summary_table(summary: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        markdown_row(
            "configuration",
            "replicas × router workers",
            "front",
            "state",
            "goodput",
            "p50",
            "p95",
            "p99",
            "errors",
            "server CPU ms/req",
            "of which nginx / PostgreSQL",
            "Locust CPU s",
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, s in summary.items():
        config = CONFIG_BY_KEY[key]
        cpu = s["cpu_parts_ms_per_req"]
        shares = (
            f"{_f(cpu.get('nginx'), 2)} / {_f(cpu.get('postgres'), 2)}"
            if config.nginx or config.postgres
            else "–"
        )
        lines.append(
            markdown_row(
                f"({key}) {config.label}",
                config.shape,
                "nginx" if config.nginx else "direct",
                config.store,
                f"{_f(s['goodput'])}/s",
                f"{_f(s['p50_ms'])} ms",
                f"{_f(s['p95_ms'])} ms",
                f"{_f(s['p99_ms'])} ms",
                "–" if s["error_rate"] is None else f"{s['error_rate']:.2%}",
                _f(s["server_cpu_ms_per_req"], 2),
                shares,
                _f(s["client_cpu_s"], 1),
            )
        )
    return lines


def _ratio_table(summary: dict[str, dict[str, Any]]) -> list[str]:
    ratio_rows = [(a, b, what) for a, b, what in RATIOS if a in summary and b in summary]
    if not ratio_rows:
        return []
    lines = [
        "",
        "Ratios (A / B): goodput > 1 means A serves more; latency and CPU < 1 mean A is "
        "faster / cheaper.",
        "",
        markdown_row("A / B", "comparison", "goodput", "p50", "p95", "p99", "CPU/req"),
        "|---|---|---|---|---|---|---|",
    ]
    for a, b, what in ratio_rows:
        sa, sb = summary[a], summary[b]
        lines.append(
            markdown_row(
                f"{a}/{b}",
                what,
                *(_ratio(sa[k], sb[k]) for k in ("goodput", "p50_ms", "p95_ms", "p99_ms")),
                _ratio(sa["server_cpu_ms_per_req"], sb["server_cpu_ms_per_req"]),
            )
        )
    return lines


def _deployments(meta: dict[str, Any]) -> list[str]:
    if not meta.get("deployments"):
        return []
    lines = [
        "",
        "Deployments (processes; which replicas answered /api/status through the "
        "front, and the controller's leader):",
        "",
    ]
    for key, info in meta["deployments"].items():
        lines.append(
            f"- ({key}) processes {info.get('processes')}; replicas answering "
            f"{info.get('replicas_answering')}; leader {info.get('leaders')}"
        )
    return lines


def _every_run(runs: dict[str, list[Run]]) -> list[str]:
    lines = [
        "",
        "## Every run",
        "",
        markdown_row(
            "configuration",
            "round",
            *RUN_COLUMNS,
            "graphs / nginx / PostgreSQL",
            "notes",
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, key_runs in runs.items():
        for run in key_runs:
            m = run.measurement
            cpu = run.cpu_ms_per_req
            lines.append(
                markdown_row(
                    f"({key}) {CONFIG_BY_KEY[key].name}",
                    run.round,
                    *run_cells(m),
                    " / ".join(_f(cpu.get(p), 2) for p in ("graphs", "nginx", "postgres")),
                    "; ".join(m.notes),
                )
            )
    return lines
