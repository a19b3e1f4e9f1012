"""`python -m loadtests run SCENARIO`: Locust headless against a server, results in results/<run>/.

    python -m loadtests run mixed --users 20 --duration 60s --host http://127.0.0.1:3000
    python -m loadtests run step --users 64 --duration 3m --serve --check
    python -m loadtests run routed -u 8 --duration 30s --serve --bentoml-home /tmp/h --train-quick

Writes <results>/<YYYYmmdd-HHMMSS>-<scenario>/ with Locust's CSVs (locust_stats.csv,
locust_stats_history.csv, locust_failures.csv, locust_exceptions.csv), report.html, locust.log,
run.json (what ran, against what), answers.json (which model answered, fallback/cache shares,
stickiness), shape.json (per phase/step figures; the knee for `step`), and with --serve the
server's log.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from loadtests.harness.common import ROOT, exit_on_sigterm, git_commit, with_root_on_pythonpath
from loadtests.harness.server import (
    ServerProcess,
    add_serve_arguments,
    add_target_arguments,
    serve_or_explain,
)

LOCUSTFILE = ROOT / "loadtests" / "locust" / "locustfile.py"
SLO_FILE = ROOT / "loadtests" / "locust" / "slo.yaml"
ALL_USERS = ["RoutedUser", "ClassicDirectUser", "EnsembleDirectUser", "BatchUser", "FeedbackUser"]
LOAD_USERS = ["RoutedUser", "ClassicDirectUser", "EnsembleDirectUser", "BatchUser"]

SCENARIOS: dict[str, tuple[list[str], str, str]] = {
    "classic": (["ClassicDirectUser"], "steady", "the classic service directly"),
    "ensemble": (["EnsembleDirectUser"], "steady", "the ensemble service directly"),
    "routed": (["RoutedUser"], "steady", "routed traffic from 10,000 users (sticky split)"),
    "batch": (["BatchUser"], "steady", "batches of 8-32 rows"),
    "feedback": (
        ["FeedbackUser"],
        "steady",
        "classify + feedback (skipped while the endpoint is missing)",
    ),
    "mixed": (
        ALL_USERS,
        "steady",
        "every user class by weight (routed 6: classic 2: ensemble 1: batch 1: feedback 1)",
    ),
    "step": (LOAD_USERS, "step", "add users step by step until the SLO breaks: the knee"),
    "spike": (LOAD_USERS, "spike", "baseline, a sudden spike to --users, recovery"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "scenario",
        choices=sorted(SCENARIOS),
        help="; ".join(f"{k}: {v[2]}" for k, v in SCENARIOS.items()),
    )
    parser.add_argument(
        "--users", "-u", type=int, default=10, help="peak concurrent Locust users (default 10)"
    )
    parser.add_argument(
        "--duration",
        "-t",
        default="60s",
        help="run time, Locust syntax: 60s, 2m, 1m30s (default 60s)",
    )
    parser.add_argument(
        "--spawn-rate", "-r", type=float, help="users started per second (default: all within 5 s)"
    )
    add_target_arguments(parser)
    add_serve_arguments(parser, train_quick=True)
    parser.add_argument("--classes", help="comma-separated user classes instead of the scenario's")
    parser.add_argument(
        "--wait",
        default=os.environ.get("LOADTEST_WAIT", "0.1-0.5"),
        help="think time between a user's requests in seconds: '0.1-0.5' (default) or '0'",
    )
    parser.add_argument(
        "--step-users", type=int, help="step: users added per step (default users/8)"
    )
    parser.add_argument("--step-seconds", type=float, help="step: seconds per step (default 10)")
    parser.add_argument(
        "--step-p95-ms", type=float, help="step: p95 budget that defines the knee (default 1000)"
    )
    parser.add_argument(
        "--results", type=Path, default=ROOT / "results", help="parent of the run directory"
    )
    parser.add_argument("--name", help="run directory name (default <timestamp>-<scenario>)")
    parser.add_argument(
        "--check", action="store_true", help="run the SLO gate on the result; its exit code is ours"
    )
    parser.add_argument("--slo", type=Path, default=SLO_FILE, help="SLO file for --check")
    parser.add_argument("locust_args", nargs="*", help="after --: extra Locust arguments")


def _models(host: str) -> dict:
    try:
        with urllib.request.urlopen(host.rstrip("/") + "/api/models", timeout=10) as response:  # noqa: S310
            models = json.loads(response.read())
        return {
            name: {k: m.get(k) for k in ("tag", "ready", "degraded")} for name, m in models.items()
        }
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def locust_command(
    host: str,
    users: int,
    spawn_rate: float,
    duration: str,
    classes: list[str],
    out: Path,
    extra: list[str] = (),
    locustfile: Path = LOCUSTFILE,
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(locustfile),
        "--headless",
        "--host",
        host,
        "--users",
        str(users),
        "--spawn-rate",
        f"{spawn_rate:g}",
        "--run-time",
        duration,
        "--csv",
        str(out / "locust"),
        "--html",
        str(out / "report.html"),
        "--only-summary",
        "--exit-code-on-error",
        "0",
        "--stop-timeout",
        "5",
        "--loglevel",
        "WARNING",
        *extra,
        *classes,
    ]


def _locust_env(args: argparse.Namespace, shape: str, out: Path) -> dict[str, str]:
    """The locustfile's environment: output dir, think time, shape and the step shape's knobs."""
    env = {
        **os.environ,
        "LOADTEST_OUTPUT_DIR": str(out),
        "LOADTEST_WAIT": args.wait,
        "LOADTEST_SHAPE": shape,
        "PYTHONPATH": with_root_on_pythonpath(os.environ),
    }
    for option, var in (
        (args.step_users, "LOADTEST_STEP_USERS"),
        (args.step_seconds, "LOADTEST_STEP_SECONDS"),
        (args.step_p95_ms, "LOADTEST_STEP_P95_MS"),
    ):
        if option is not None:
            env[var] = str(option)
    return env


def _tee(command: list[str], env: dict[str, str], log_path: Path) -> int:
    """Run Locust, its output both printed and kept in `log_path`; its exit code."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            log.write(line)
        return process.wait()


def _stop(server: ServerProcess | None, meta: dict[str, Any]) -> None:
    """Stop the server --serve started, noting in `meta` if it had exited during the run."""
    if server is None:
        return
    if server.process is not None and server.process.poll() is not None:
        meta["server_exit_code"] = server.process.returncode
        print(
            "warning: the server exited during the run "
            f"(code {server.process.returncode}); see {server.log_path}",
            file=sys.stderr,
        )
    server.stop()


def run(args: argparse.Namespace) -> int:
    classes, shape, _ = SCENARIOS[args.scenario]
    if args.classes:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    spawn_rate = args.spawn_rate or max(1.0, args.users / 5)
    name = args.name or f"{datetime.now():%Y%m%d-%H%M%S}-{args.scenario}"
    out = (args.results / name).resolve()
    server: ServerProcess | None = None
    exit_on_sigterm()  # run the finally block: stop the server
    host = args.host or "http://127.0.0.1:3000"
    if args.serve:
        if (server := serve_or_explain(args, out, models_timeout=120)) is None:
            return 2
        host = server.url
    out.mkdir(parents=True, exist_ok=True)
    command = locust_command(
        host, args.users, spawn_rate, args.duration, classes, out, args.locust_args
    )
    meta: dict[str, Any] = {
        "scenario": args.scenario,
        "user_classes": classes,
        "shape": shape,
        "users": args.users,
        "spawn_rate": spawn_rate,
        "duration": args.duration,
        "wait": args.wait,
        "host": host,
        "served_by_runner": bool(server),
        "server_env": args.server_env,
        "commit": git_commit(),
        "command": command,
        "started": datetime.now().isoformat(timespec="seconds"),
    }
    print(
        f"running {args.scenario} ({', '.join(classes)}; shape {shape}) against {host}: "
        f"{args.users} users for {args.duration} -> {out}",
        flush=True,
    )
    started = time.monotonic()
    try:
        meta["models"] = _models(host)
        rc = _tee(command, _locust_env(args, shape, out), out / "locust.log")
    finally:
        _stop(server, meta)
    meta["locust_exit_code"] = rc
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    meta["finished"] = datetime.now().isoformat(timespec="seconds")
    (out / "run.json").write_text(json.dumps(meta, indent=2))
    print(f"results: {out}", flush=True)
    if rc != 0:
        print(f"locust exited with {rc}", file=sys.stderr)
        return rc
    if (out / "skipped.json").exists():
        print(json.loads((out / "skipped.json").read_text())["reason"])
    if args.check:
        from loadtests.locust import slo

        return slo.check(out, args.slo)
    return 0
