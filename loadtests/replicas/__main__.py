"""`python -m loadtests.replicas`: goodput at 1 vs 2 router workers, and through nginx with 3
replicas vs 1, side by side (see the package's docstring)."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from loadtests.benchmark.measure import Measurement, measure_alive, warm_up
from loadtests.benchmark.plan import Target
from loadtests.harness.common import (
    ROOT,
    exit_on_sigterm,
    fmt,
    load_average,
    parse_duration,
    run_facts,
)
from loadtests.harness.nginx import nginx_binary
from loadtests.harness.postgres import postgres_available
from loadtests.harness.server import use_model_store
from loadtests.locust.payloads import fetch_models
from loadtests.replicas import __doc__ as package_doc
from loadtests.replicas.deployment import (
    CONFIGS,
    ROUTED_PATH,
    Config,
    Deployment,
    parse_only,
    round_order,
)
from loadtests.replicas.report import Run, render, summarize


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.replicas",
        description=(package_doc or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="configurations: " + "; ".join(f"{c.key} ({c.name}): {c.label}" for c in CONFIGS),
    )
    parser.add_argument(
        "--users", "-u", type=int, default=16, help="closed-loop Locust users (default 16)"
    )
    parser.add_argument(
        "--duration",
        "-t",
        default="10s",
        help="run time per configuration and round, e.g. 10s, 1m (default 10s)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds over every configuration, alternating order (default 2)",
    )
    parser.add_argument(
        "--only",
        default="a,b,c,d",
        help="configurations to run, by letter or name (default a,b,c,d)",
    )
    parser.add_argument(
        "--model",
        choices=("classic", "ensemble"),
        default="classic",
        help="X-Model-Preference of the routed calls (default classic: answered in the router)",
    )
    parser.add_argument(
        "--bentoml-home", type=Path, help="model store (default: $BENTOML_HOME or ~/bentoml)"
    )
    parser.add_argument(
        "--train-quick",
        action="store_true",
        help="if the store has no models, train quick ones into a temp store",
    )
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options, checked: --only resolved to args.configs, --duration to args.duration_s."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.configs = parse_only(args.only)
        args.duration_s = parse_duration(args.duration)
    except ValueError as exc:
        parser.error(str(exc))
    if args.users < 1:
        parser.error("--users must be at least 1")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.duration_s < 3:
        parser.error("--duration must be at least 3 s")
    return args


def runnable(configs: list[Config]) -> tuple[list[Config], dict[str, str]]:
    """The configurations this machine can run, and the ones skipped with why (nginx or
    PostgreSQL missing)."""
    why_not = postgres_available() or (None if nginx_binary() else "nginx is not installed")
    if not why_not:
        return list(configs), {}
    skipped = {c.key: why_not for c in configs if c.nginx or c.postgres}
    if skipped:
        print(f"note: skipping {', '.join(skipped)}: {why_not}", flush=True)
    return [c for c in configs if c.key not in skipped], skipped


def run_meta(
    args: argparse.Namespace, argv: list[str] | None, env: dict[str, str], skipped: dict[str, str]
) -> dict[str, Any]:
    return {
        **run_facts("python -m loadtests.replicas", sys.argv[1:] if argv is None else argv),
        "users": args.users,
        "duration_s": args.duration_s,
        "rounds": args.rounds,
        "header": f"X-Model-Preference: {args.model}",
        "bentoml_home": env.get("BENTOML_HOME", "~/bentoml"),
        "skipped": skipped,
        "deployments": {},
    }


def start_deployments(
    configs: list[Config],
    out: Path,
    env: dict[str, str],
    deployments: dict[str, Deployment],
    meta: dict[str, Any],
    model: str,
) -> None:
    """Start every configuration (all up at once: the rounds then alternate between them), warm
    each up and record its processes and which replicas answer; into `deployments` as they start,
    so the caller's finally block stops what did."""
    admin_token = secrets.token_urlsafe(24)
    for config in configs:
        print(f"starting ({config.key}) {config.label} ...", flush=True)
        t0 = time.monotonic()
        deployment = deployments[config.key] = Deployment(config, out, env, admin_token)
        deployment.start()
        print(f"  ready in {time.monotonic() - t0:.0f}s at {deployment.url}", flush=True)
    for key, deployment in deployments.items():
        target = Target(key, deployment.name, key, ROUTED_PATH, model, meta["header"])
        warm_up(deployment.url, target, n=40 * deployment.config.replicas)
        meta["deployments"][key] = {
            "processes": deployment.processes(),
            **deployment.probe_replicas(calls=4 * deployment.config.replicas),
        }
        print(f"  ({key}) {meta['deployments'][key]}", flush=True)
    served = fetch_models(next(iter(deployments.values())).url, timeout=30)
    meta["models"] = ", ".join(
        str(v.get("tag")) for v in served.values() if isinstance(v, dict) and v.get("tag")
    )


def _progress(run: Run, config: Config) -> str:
    m: Measurement = run.measurement
    return (
        f"  round {run.round} ({config.key}) {config.name:<10} "
        f"{m.goodput:8.1f}/s  p50 {fmt(m.p50_ms):>4}  p95 {fmt(m.p95_ms):>4}  "
        f"p99 {fmt(m.p99_ms):>5} ms  errors {m.error_rate:.2%}  "
        f"server CPU {fmt(m.server_cpu_ms_per_req, 2)} ms/req {run.cpu_ms_per_req}"
        + (f"  {m.notes}" if m.notes else "")
    )


def measure_round(
    args: argparse.Namespace, deployment: Deployment, round_index: int, out: Path, header: str
) -> Run:
    """One Locust run against one deployment; its server CPU split: graphs, nginx, PostgreSQL."""
    config = deployment.config
    target = Target(
        f"{config.key}-{config.name}-round{round_index + 1}",
        deployment.name,
        config.name,
        ROUTED_PATH,
        args.model,
        header,
    )
    cpu0 = deployment.cpu_parts()
    m = measure_alive(deployment, target, args.users, args.duration_s, out)
    cpu1 = deployment.cpu_parts()
    parts = {
        part: round((cpu1[part] - cpu0[part]) * 1e3 / m.requests, 2) if m.requests else None
        for part in cpu0
    }
    return Run(config.key, round_index + 1, m, parts)


def write_outputs(out: Path, meta: dict[str, Any], runs: dict[str, list[Run]]) -> str:
    report = render(meta, runs) + f"\nElapsed {meta['elapsed_s']} s.\n"
    (out / "report.md").write_text(report)
    (out / "results.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "runs": {k: [asdict(r) for r in v] for k, v in runs.items()},
                "summary": {k: summarize(v) for k, v in runs.items() if v},
            },
            indent=2,
        )
    )
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()  # run the finally block: stop every server, nginx and PostgreSQL
    started = time.monotonic()
    env = dict(os.environ, BENTOML_DO_NOT_TRACK="true", TF_CPP_MIN_LOG_LEVEL="3")
    if not use_model_store(env, args.bentoml_home, args.train_quick, "replicas-home-"):
        return 2
    configs, skipped = runnable(args.configs)
    if not configs:
        print("nothing to run", file=sys.stderr)
        return 2
    out = (args.results / f"replicas-{datetime.now():%Y%m%d-%H%M%S}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    estimate = 60 * sum(c.replicas for c in configs)
    estimate += args.rounds * len(configs) * (args.duration_s + 10)
    print(
        f"replicas -> {out}\n  configurations {', '.join(c.key for c in configs)}; "
        f"{args.users} users, {args.duration_s:.0f}s each, {args.rounds} round(s); "
        f"about {estimate / 60:.1f} min on 2 busy cores",
        flush=True,
    )
    meta = run_meta(args, argv, env, skipped)
    deployments: dict[str, Deployment] = {}
    runs: dict[str, list[Run]] = {c.key: [] for c in configs}
    try:
        start_deployments(configs, out, env, deployments, meta, args.model)
        for round_index in range(args.rounds):
            for config in round_order(configs, round_index):
                run = measure_round(args, deployments[config.key], round_index, out, meta["header"])
                runs[config.key].append(run)
                print(_progress(run, config), flush=True)
    finally:
        for deployment in deployments.values():
            deployment.stop()
    meta["elapsed_s"] = round(time.monotonic() - started)
    meta["load_average_end"] = load_average()
    report = write_outputs(out, meta, runs)
    print()
    print(report)
    print(f"written: {out}/report.md, results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
