"""`python -m loadtests.benchmark`: the side-by-side benchmark's CLI (see the package's docstring).
Plan the targets, start their servers, measure every level in alternating rounds, write the
report."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import loadtests.benchmark as package
from loadtests.benchmark.inprocess import run_inprocess
from loadtests.benchmark.measure import Measurement, measure_alive, median_run, warm_up
from loadtests.benchmark.plan import (
    DEFAULT_PARTS,
    PART_NAMES,
    Target,
    select_targets,
    servers_for,
    unknown_parts,
)
from loadtests.benchmark.report import chart, render
from loadtests.benchmark.servers import mlserver_version, start_servers, stop_servers
from loadtests.harness.common import (
    ROOT,
    exit_on_sigterm,
    fmt,
    load_average,
    parse_duration,
    run_facts,
)
from loadtests.harness.server import ServerProcess, use_model_store
from models.fastpath import NATIVE_ENV


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.benchmark", description=package.__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--duration", default="20s", help="run time at the fixed load (default 20s)"
    )
    parser.add_argument(
        "--ladder-duration", help="run time at the other levels (default half of --duration)"
    )
    parser.add_argument(
        "--users", type=int, default=16, help="the fixed load, in closed-loop users (default 16)"
    )
    parser.add_argument(
        "--levels",
        default="1,4,16,32",
        help="user counts tried (default 1,4,16,32; --users is added)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds per level (the targets alternate again each round); the report gives each "
        "figure's median over the rounds (default 1)",
    )
    parser.add_argument("--budget-classic-ms", type=float, default=100.0)
    parser.add_argument("--budget-ensemble-ms", type=float, default=500.0)
    parser.add_argument(
        "--only", default=DEFAULT_PARTS, help=f"parts to run (default {DEFAULT_PARTS})"
    )
    parser.add_argument(
        "--bentoml-home",
        type=Path,
        help="model store to benchmark (default: $BENTOML_HOME or ~/bentoml)",
    )
    parser.add_argument(
        "--train-quick",
        action="store_true",
        help="if the store has no models, train quick ones into a temp store",
    )
    parser.add_argument(
        "--before",
        metavar="REF",
        help="part g: also serve the code at this git ref (a worktree) for before/after rows",
    )
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options, checked: args.parts, args.duration_s, args.ladder_s, args.level_list,
    args.budgets."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.parts = {p.strip() for p in args.only.split(",") if p.strip()}
    if unknown := unknown_parts(args.parts):
        parser.error(f"unknown part(s) {sorted(unknown)}; parts are {', '.join(PART_NAMES)}")
    try:
        args.duration_s = parse_duration(args.duration)
        args.ladder_s = (
            parse_duration(args.ladder_duration)
            if args.ladder_duration
            else max(5.0, args.duration_s / 2)
        )
    except ValueError as exc:
        parser.error(str(exc))
    args.level_list = sorted({int(x) for x in args.levels.split(",") if x.strip()} | {args.users})
    args.budgets = {"classic": args.budget_classic_ms, "ensemble": args.budget_ensemble_ms}
    return args


def server_env() -> dict[str, str]:
    """This environment for the servers, with the fast paths everywhere (bentoml-native and the
    *-native baselines set SERVING_NATIVE_MEMBERS=1 themselves)."""
    env = dict(os.environ, BENTOML_DO_NOT_TRACK="true", TF_CPP_MIN_LOG_LEVEL="3")
    if env.get(NATIVE_ENV):
        print(
            f"note: {NATIVE_ENV}={env[NATIVE_ENV]} in the environment is ignored: every "
            "configuration uses the fast paths except the *-native ones, which set it to 1",
            flush=True,
        )
    env[NATIVE_ENV] = ""  # empty = not forced
    return env


def run_meta(
    args: argparse.Namespace, argv: list[str] | None, env: dict[str, str], servers: list[str]
) -> dict[str, Any]:
    """What the report's header says about the run (more is added as it goes)."""
    meta: dict[str, Any] = {
        **run_facts("python -m loadtests.benchmark", sys.argv[1:] if argv is None else argv),
        "levels": args.level_list,
        "duration_s": args.duration_s,
        "ladder_s": args.ladder_s,
        "budgets_ms": args.budgets,
        "bentoml_home": env.get("BENTOML_HOME", "~/bentoml"),
    }
    if any(name.startswith("mlserver") for name in servers):
        meta["mlserver"] = mlserver_version()
    if args.before:
        meta["before"] = args.before
    return meta


def served_models(running: dict[str, ServerProcess]) -> str:
    """The model tags the first server reports ("?" when it cannot tell)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        from loadtests.locust.payloads import fetch_models

        served = fetch_models(next(iter(running.values())).url, timeout=30)
        return ", ".join(
            str(v.get("tag")) for v in served.values() if isinstance(v, dict) and v.get("tag")
        )
    return "?"


def _progress(target: Target, users: int, m: Measurement) -> str:
    return (
        f"  {target.key:<22} {users:>3} users: {m.goodput:8.1f}/s  "
        f"p50 {fmt(m.p50_ms):>5}  p99 {fmt(m.p99_ms):>6} ms  errors {m.error_rate:.2%}  "
        f"server CPU {fmt(m.server_cpu_ms_per_req, 2)} ms/req"
        + (f"  {m.ensemble_batch_rows} rows/batch" if m.ensemble_batch_rows else "")
        + (f"  {m.notes}" if m.notes else "")
    )


def run_levels(
    args: argparse.Namespace,
    targets: list[Target],
    running: dict[str, ServerProcess],
    out: Path,
) -> tuple[dict[str, list[Measurement]], dict[str, list[Measurement]]]:
    """Every target at every level, args.repeat rounds that alternate the targets; per target the
    median of the rounds at each level, and every round's run."""
    results: dict[str, list[Measurement]] = {t.key: [] for t in targets}
    every_round: dict[str, list[Measurement]] = {}
    for target in targets:
        warm_up(running[target.server].url, target)
    for users in args.level_list:
        duration = args.duration_s if users == args.users else args.ladder_s
        rounds: dict[str, list[Measurement]] = {t.key: [] for t in targets}
        for round_ in range(args.repeat):
            tag = f"-r{round_ + 1}" if args.repeat > 1 else ""
            for target in targets:
                server = running[target.server]
                m = measure_alive(server, target, users, duration, out, tag)
                rounds[target.key].append(m)
                print(_progress(target, users, m), flush=True)
        for key, runs in rounds.items():
            results[key].append(median_run(runs))
            every_round.setdefault(key, []).extend(runs)
    return results, every_round


def write_outputs(
    out: Path,
    meta: dict[str, Any],
    inproc: dict[str, Any] | None,
    results: dict[str, list[Measurement]],
    every_round: dict[str, list[Measurement]],
    args: argparse.Namespace,
) -> str:
    """report.md, results.json and latency.png in `out`; the report's text."""
    report = render(meta, inproc, results, args.budgets, args.users)
    report += f"\nChart: latency.png. Elapsed {meta['elapsed_s']} s.\n"
    (out / "report.md").write_text(report)
    served = {k: [asdict(m) for m in v] for k, v in results.items()}
    rounds = {k: [asdict(m) for m in v] for k, v in every_round.items()}
    (out / "results.json").write_text(
        json.dumps(
            {"meta": meta, "inprocess": inproc, "served": served, "rounds": rounds}, indent=2
        )
    )
    if results:
        chart(results, args.budgets, out / "latency.png")
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()  # run the finally blocks: stop the servers
    started = time.monotonic()
    env = server_env()
    if not use_model_store(env, args.bentoml_home, args.train_quick, "benchmark-home-"):
        return 2
    out = (args.results / f"benchmark-{datetime.now():%Y%m%d-%H%M%S}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    targets, skipped = select_targets(args.parts, args.before)
    if skipped:
        print(f"note: skipping {', '.join(f'{k} ({v})' for k, v in skipped.items())}", flush=True)
    servers = servers_for(targets)
    levels = args.level_list
    per_target = len(levels) * 3 + (len(levels) - 1) * args.ladder_s + args.duration_s
    estimate = args.repeat * per_target * len(targets) + 45 * len(servers)
    estimate += 40 * ("a" in args.parts)
    print(
        f"benchmark -> {out}\n  parts {sorted(args.parts)}, levels {levels}, "
        f"{args.duration_s:.0f}s at {args.users} users, {args.ladder_s:.0f}s elsewhere; "
        f"about {estimate / 60:.1f} min",
        flush=True,
    )
    meta = run_meta(args, argv, env, servers)
    if skipped:
        meta["skipped"] = skipped
    inproc = None
    if "a" in args.parts:
        print("(a) in-process predict_proba ...", flush=True)
        inproc = run_inprocess(env, out)
        meta["models"] = ", ".join(
            f"{m['tag']} ({m['labels'].get('profile', '?')})" for m in inproc["models"].values()
        )
    running = start_servers(servers, out, env, args.before, meta)
    try:
        if "models" not in meta:  # no part (a): the tags the servers report
            meta["models"] = served_models(running) if running else "?"
        results, every_round = run_levels(args, targets, running, out)
    finally:
        stop_servers(running, out)
    meta["elapsed_s"] = round(time.monotonic() - started)
    meta["load_average_end"] = load_average()
    report = write_outputs(out, meta, inproc, results, every_round, args)
    print()
    print(report)
    print(f"written: {out}/report.md, results.json, latency.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
