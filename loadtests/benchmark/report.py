"""The benchmark's report: markdown (report.md) from the measurements, and the latency vs
throughput chart (latency.png). Pure formatting: nothing here starts or measures anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loadtests.benchmark.measure import Measurement, best_under_budget
from loadtests.benchmark.plan import (
    COMPARISONS,
    CPU_TARGETS,
    E_TARGET,
    ROUTED_DIRECT,
    TARGETS,
    TARGETS_F,
)
from loadtests.harness.common import fmt as _f
from loadtests.harness.common import markdown_row
from loadtests.harness.common import ratio as _ratio

TARGET_BY_KEY = {t.key: t for t in TARGETS}
Summary = dict[str, dict[str, Any]]
"""target key -> {"best": the run with the most goodput within budget, "fixed": the run at the
fixed load, "budget": the p99 budget}."""


RUN_COLUMNS = ("s", "requests", "goodput", "p50", "p95", "p99", "errors", "server CPU ms/req")
"""The columns every-run table gives each Measurement (run_cells), here and in replicas/."""


def run_cells(m: Measurement) -> list[str]:
    """One run's RUN_COLUMNS cells."""
    return [
        f"{m.seconds:.0f}",
        str(m.requests),
        f"{m.goodput:,.1f}",
        _f(m.p50_ms),
        _f(m.p95_ms),
        _f(m.p99_ms),
        f"{m.error_rate:.2%}",
        _f(m.server_cpu_ms_per_req, 2),
    ]


def render(
    meta: dict[str, Any],
    inproc: dict[str, Any] | None,
    results: dict[str, list[Measurement]],
    budgets: dict[str, float],
    fixed_users: int,
) -> str:
    """report.md: the run's header, part (a), then the served tables, ratios and verdicts."""
    lines = _header(meta, fixed_users) + _inprocess_section(inproc)
    summary = summarize(results, budgets, fixed_users)
    if summary:
        lines += _served_table(summary, budgets, fixed_users)
        lines += _ratio_table(summary, fixed_users)
        lines += goal_e(summary, fixed_users)
        lines += section_f(summary, fixed_users)
        lines += section_g(results, meta)
        lines += _every_run(results)
    return "\n".join(lines) + "\n"


def summarize(
    results: dict[str, list[Measurement]], budgets: dict[str, float], fixed_users: int
) -> Summary:
    """Per target: its best run within the p99 budget and its run at the fixed load."""
    summary: Summary = {}
    for key, runs in results.items():
        budget = budgets[TARGET_BY_KEY[key].model]
        fixed = next((m for m in runs if m.users == fixed_users), None)
        summary[key] = {"best": best_under_budget(runs, budget), "fixed": fixed, "budget": budget}
    return summary


def _header(meta: dict[str, Any], fixed_users: int) -> list[str]:
    lines = [
        f"# Benchmark {meta['started']}",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; load average (1/5/15 min) {meta['load_average_start']} at "
        f"start, {meta.get('load_average_end')} at end; models {meta['models']}; "
        f"commit {meta.get('commit') or '?'}  ",
        f"Load: closed-loop Locust users (no think time, distinct rows), levels {meta['levels']}, "
        f"{meta['duration_s']:.0f} s at the fixed load ({fixed_users} users), "
        f"{meta['ladder_s']:.0f} s at the other levels. Locust shares the cores with the servers: "
        "compare ratios, not absolutes.",
    ]
    extra = []
    if meta.get("mlserver"):
        extra.append(f"MLServer {meta['mlserver']} (.venv-mlserver, loadtests/baselines/mlserver/)")
    if meta.get("skipped"):
        extra.append("skipped: " + ", ".join(f"{k} ({v})" for k, v in meta["skipped"].items()))
    if meta.get("native_env"):
        extra.append(
            "Member paths: " + "; ".join(f"{k}: {v}" for k, v in meta["native_env"].items())
        )
    if extra:
        lines[-1] += "  "
        lines.append(". ".join(extra) + ".")
    return lines + [""]


def _inprocess_section(inproc: dict[str, Any] | None) -> list[str]:
    if not inproc:
        return []
    lines = [
        "## (a) In-process `predict_proba` (one thread, no HTTP)",
        "",
        "| model | batch | median ms/call | p99 ms/call | rows/s |",
        "|---|---|---|---|---|",
    ]
    for t in inproc["timings"]:
        lines.append(
            markdown_row(
                t["model"],
                t["batch"],
                f"{t['median_ms']:.3f}",
                f"{t['p99_ms']:.3f}",
                _f(t["rows_per_s"]),
            )
        )
    tm = {(t["model"], t["batch"]): t for t in inproc["timings"]}
    if ("classic", 1) in tm and ("ensemble", 1) in tm:
        per_call = {
            b: _ratio(tm["ensemble", b]["median_ms"], tm["classic", b]["median_ms"])
            for b in (1, 64)
        }
        by_batching = {
            m: _ratio(tm[m, 64]["rows_per_s"], tm[m, 1]["rows_per_s"])
            for m in ("classic", "ensemble")
        }
        lines += [
            "",
            f"Ensemble / classic time per call: batch 1 {per_call[1]}, "
            f"batch 64 {per_call[64]}. Rows/s gained by batching 64 rows: "
            f"classic {by_batching['classic']}, ensemble {by_batching['ensemble']}.",
        ]
    return lines + [""]


def _served_table(summary: Summary, budgets: dict[str, float], fixed_users: int) -> list[str]:
    lines = [
        f"## Served: goodput at the p99 budget, latency at {fixed_users} users",
        "",
        f"Budget: p99 ≤ {budgets['classic']:.0f} ms (classic), "
        f"≤ {budgets['ensemble']:.0f} ms (ensemble), errors < 1 %. "
        "Goodput = successful responses/s.",
        "",
        markdown_row(
            "configuration",
            "endpoint",
            "goodput @ p99 budget (users)",
            f"goodput @{fixed_users}",
            "p50",
            "p95",
            "p99",
            "errors",
            "server CPU ms/req",
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, s in summary.items():
        t, best, fixed = TARGET_BY_KEY[key], s["best"], s["fixed"]
        at_budget = f"{best.goodput:,.0f}/s ({best.users})" if best else "none within budget"
        if fixed is None:
            lines.append(f"| {t.label} | `{t.path}` | {at_budget} | – | – | – | – | – | – |")
            continue
        lines.append(
            markdown_row(
                t.label,
                f"`{t.path}`{' + header' if t.header else ''}",
                at_budget,
                f"{fixed.goodput:,.0f}/s",
                f"{_f(fixed.p50_ms)} ms",
                f"{_f(fixed.p95_ms)} ms",
                f"{_f(fixed.p99_ms)} ms",
                f"{fixed.error_rate:.2%}",
                _f(fixed.server_cpu_ms_per_req, 2),
            )
        )
    return lines


def _ratio_table(summary: Summary, fixed_users: int) -> list[str]:
    """A / B for every comparison whose both targets ran; a pair several parts list: one row."""
    lines = [
        "",
        "### Ratios (A / B)",
        "",
        markdown_row(
            "part",
            "comparison",
            "goodput @ budget",
            f"goodput @{fixed_users}",
            f"p50 @{fixed_users}",
            f"p99 @{fixed_users}",
            "server CPU/req",
        ),
        "|---|---|---|---|---|---|---|",
    ]
    rows: list[tuple[list[str], str, str, str]] = []
    for part, what, a, b in COMPARISONS:
        if a not in summary or b not in summary:
            continue
        same = next((r for r in rows if r[2:] == (a, b)), None)
        if same:
            same[0].append(part)
        else:
            rows.append(([part], what, a, b))
    for row_parts, what, a, b in rows:
        sa, sb = summary[a], summary[b]
        fa, fb = sa["fixed"], sb["fixed"]
        best_a = sa["best"].goodput if sa["best"] else None
        best_b = sb["best"].goodput if sb["best"] else None
        lines.append(
            markdown_row(
                f"({', '.join(row_parts)})",
                what,
                _ratio(best_a, best_b),
                _ratio(fa and fa.goodput, fb and fb.goodput),
                _ratio(fa and fa.p50_ms, fb and fb.p50_ms),
                _ratio(fa and fa.p99_ms, fb and fb.p99_ms),
                _ratio(fa and fa.server_cpu_ms_per_req, fb and fb.server_cpu_ms_per_req),
            )
        )
    return lines + [
        "",
        "Goodput ratio > 1: A serves more; latency / CPU ratio < 1: A is faster / cheaper.",
        "",
    ]


def _every_run(results: dict[str, list[Measurement]]) -> list[str]:
    lines = [
        "### Every run",
        "",
        markdown_row(
            "configuration",
            "users",
            *RUN_COLUMNS,
            "ensemble rows/batch",
            "Locust CPU s",
            "notes",
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, runs in results.items():
        for m in runs:
            lines.append(
                markdown_row(
                    key,
                    m.users,
                    *run_cells(m),
                    _f(m.ensemble_batch_rows, 1),
                    f"{m.client_cpu_s:.1f}",
                    "; ".join(m.notes),
                )
            )
    return lines


def goal_e(summary: dict[str, dict[str, Any]], fixed_users: int) -> list[str]:
    """Part (e)'s verdict: routed ensemble vs MLServer (and FastAPI, the native graph) at the fixed
    load."""
    routed = (summary.get("ensemble_routed") or {}).get("fixed")
    if routed is None:
        return []

    def describe(key: str, label: str) -> str:
        m = (summary.get(key) or {}).get("fixed")
        if m is None:
            return f"{label.rstrip(':')}: not run"
        batch = f", {m.ensemble_batch_rows:.1f} rows/batch" if m.ensemble_batch_rows else ""
        return (
            f"{label} {m.goodput:,.0f}/s, "
            f"p50 {_f(m.p50_ms)} / p95 {_f(m.p95_ms)} / p99 {_f(m.p99_ms)} ms, "
            f"{m.failures} error(s) ({m.error_rate:.2%}){batch}"
        )

    lines = [
        f"### (e) Routed ensemble vs MLServer, FastAPI and the native graph at {fixed_users} users",
        "",
        "- " + describe("ensemble_routed", "routed ensemble (fast paths):"),
        "- " + describe("mlserver_ensemble", "MLServer 1.7.1, adaptive batching:"),
        "- " + describe("fastapi_ensemble", "FastAPI + uvicorn:"),
        "- " + describe("ensemble_routed_native", "routed ensemble, native members:"),
        "",
    ]
    mls = (summary.get("mlserver_ensemble") or {}).get("fixed")
    if mls is not None and mls.goodput:
        ratio = routed.goodput / mls.goodput
        met = (
            ratio >= E_TARGET["goodput_ratio"]
            and routed.p99_ms is not None
            and routed.p99_ms <= E_TARGET["p99_ms"]
            and routed.failures <= E_TARGET["errors"]
        )
        lines += [
            f"Goodput routed / MLServer: **{ratio:.2f}×** at p99 {_f(routed.p99_ms)} ms "
            f"(routed) vs {_f(mls.p99_ms)} ms (MLServer), {routed.failures} routed error(s). "
            f"Goal ≥ {E_TARGET['goodput_ratio']:.0f}× at p99 ≤ {E_TARGET['p99_ms']:.0f} ms with "
            f"{E_TARGET['errors']} errors: **{'met' if met else 'not met'}**.",
            "",
        ]
    else:
        lines += [
            "Goodput routed / MLServer: – (MLServer not run: create .venv-mlserver with "
            "scripts/mlserver-venv.sh).",
            "",
        ]
    return lines


def section_f(summary: dict[str, dict[str, Any]], fixed_users: int) -> list[str]:
    """Part (f): the frameworks' own batching, every one serving the seven native members."""
    keys = [k for k in TARGETS_F if k in summary and summary[k]["fixed"] is not None]
    if not keys:
        return []
    lines = [
        f"### (f) Frameworks with their own batching, native members, {fixed_users} users",
        "",
        markdown_row("server", "goodput", "p50", "p99", "errors", "CPU ms/req", "rows/batch"),
        "|---|---|---|---|---|---|---|",
    ]
    for key in sorted(keys, key=lambda k: -summary[k]["fixed"].goodput):
        m = summary[key]["fixed"]
        lines.append(
            markdown_row(
                TARGET_BY_KEY[key].label,
                f"{m.goodput:,.0f}/s",
                f"{_f(m.p50_ms)} ms",
                f"{_f(m.p99_ms)} ms",
                f"{m.error_rate:.2%}",
                _f(m.server_cpu_ms_per_req, 2),
                _f(m.ensemble_batch_rows, 1),
            )
        )
    return lines + [""]


def section_g(results: dict[str, list[Measurement]], meta: dict[str, Any]) -> list[str]:
    """Part (g): routed and direct endpoints at each level, now and --before, with the CPU
    ratios of the routed ensemble to routed classic against CPU_TARGETS."""
    by = {(k, m.users): m for k, runs in results.items() for m in runs}
    levels = sorted({m.users for runs in results.values() for m in runs})
    if not any(now in results for _, _, now, _ in ROUTED_DIRECT):
        return []
    before = meta.get("before")
    lines = [
        "### (g) Routed and direct endpoints: goodput, p99, server CPU per request",
        "",
        f"Now: this checkout; before: `{before}` ({meta.get('before_commit') or '?'}), served "
        "the same way from a worktree."
        if before
        else "Before: not run (no --before REF).",
        "",
        markdown_row(
            "endpoint",
            "model",
            *[f"{u} user{'s' if u > 1 else ''}: {w}" for u in levels for w in ("now", "before")],
        ),
        "|---|---|" + "---|" * (2 * len(levels)),
    ]

    def cell(m: Measurement | None) -> str:
        if m is None:
            return "–"
        return f"{m.goodput:,.0f}/s, p99 {_f(m.p99_ms)} ms, {_f(m.server_cpu_ms_per_req, 2)} ms CPU"

    for endpoint, model, now, then in ROUTED_DIRECT:
        cells = [cell(by.get((k, u))) for u in levels for k in (now, then)]
        lines.append(markdown_row(endpoint, model, *cells))
    lines += ["", "Routed ensemble / routed classic server CPU per request:", ""]
    for u in levels:
        target = CPU_TARGETS.get(u)
        parts = []
        for label, e, c in (
            ("now", "ensemble_routed", "classic_routed"),
            ("before", "ensemble_routed_before", "classic_routed_before"),
        ):
            me, mc = by.get((e, u)), by.get((c, u))
            if me and mc and me.server_cpu_ms_per_req and mc.server_cpu_ms_per_req:
                ratio = me.server_cpu_ms_per_req / mc.server_cpu_ms_per_req
                met = (
                    ""
                    if target is None or label != "now"
                    else (f" (target ≤ {target:g}×: **{'met' if ratio <= target else 'not met'}**)")
                )
                parts.append(
                    f"{label} {ratio:.2f}× ({me.server_cpu_ms_per_req:.2f} / "
                    f"{mc.server_cpu_ms_per_req:.2f} ms){met}"
                )
        if parts:
            lines.append(f"- {u} user{'s' if u > 1 else ''}: " + "; ".join(parts))
    return lines + [""]


def chart(results: dict[str, list[Measurement]], budgets: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    for ax, model in zip(axes, ("classic", "ensemble"), strict=True):
        for key, runs in results.items():
            if TARGET_BY_KEY[key].model != model:
                continue
            runs = sorted((m for m in runs if m.p99_ms is not None), key=lambda m: m.users)
            if not runs:
                continue
            x = [m.goodput for m in runs]
            (line,) = ax.plot(
                x, [m.p99_ms for m in runs], marker="o", label=f"{TARGET_BY_KEY[key].label} (p99)"
            )
            ax.plot(
                x,
                [m.p50_ms for m in runs],
                marker=".",
                linestyle="--",
                color=line.get_color(),
                alpha=0.6,
            )
            for m in runs:
                ax.annotate(
                    str(m.users),
                    (m.goodput, m.p99_ms),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=7,
                )
        ax.axhline(
            budgets[model], color="grey", linestyle=":", label=f"p99 budget {budgets[model]:.0f} ms"
        )
        ax.set_yscale("log")
        ax.set_xlabel("goodput (successful responses/s)")
        ax.set_ylabel("latency (ms): p99 solid, p50 dashed")
        ax.set_title(f"{model}: latency vs throughput (labels = users)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
