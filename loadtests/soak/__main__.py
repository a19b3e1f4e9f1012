"""Soak test: a fixed arrival rate for a long time; zero errors, no p99 drift, bounded RSS growth.

  python -m loadtests.soak --serve --bentoml-home /tmp/home --knee-rps 40 --fraction 0.7 -t 10m
  python -m loadtests.soak --host http://127.0.0.1:3000 --rate 28 --duration 10m [--server-pid PID]
  python -m loadtests.soak --reanalyze results/soak-20260101-120000 [--max-p99-drift 0.1 ...]

Locust (headless, loadtests/soak/locustfile.py) runs the load tests' user classes (default
RoutedUser: POST /api/classify) with `constant_throughput(rate / users)` per user, so the arrival
rate stays at --rate as long as latency is below users / rate seconds (default users = rate, i.e.
1 s of headroom). Every request is logged (start time, latency, ok); a wrong status or body is a
failure, as in the load tests. Every --sample-interval seconds the server's process tree is sampled
with psutil: RSS, open file descriptors, threads and CPU seconds per process (router / classic /
ensemble workers and the arbiter, named from their command lines) and the RSS total.

Analysis: loadtests/soak/analysis.py (windows, p99 drift, memory growth, verdict); exit code 0
pass, 1 fail, 2 usage error. Files: loadtests/soak/report.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from loadtests.harness.common import (
    ROOT,
    exit_on_sigterm,
    parse_duration,
    percentile,
    with_root_on_pythonpath,
)
from loadtests.harness.server import (
    ServerProcess,
    add_serve_arguments,
    add_target_arguments,
    serve_or_explain,
)
from loadtests.soak.analysis import analyze
from loadtests.soak.report import fmt, read_locust_totals, read_requests, write_outputs
from loadtests.soak.sampling import find_server_root, sample_tree

SOAK_LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
USER_CLASSES = (
    "RoutedUser",
    "ClassicDirectUser",
    "EnsembleDirectUser",
    "BatchUser",
    "FeedbackUser",
)


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
    """Users for a fixed-rate run: one task per user per second (1 s latency headroom), at least
    4."""
    return max(4, math.ceil(rate))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.soak",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:5]),
    )
    target = add_target_arguments(parser)
    target.add_argument(
        "--reanalyze",
        type=Path,
        metavar="DIR",
        help="recompute the analysis and report of an earlier soak directory (no load)",
    )
    add_serve_arguments(parser, train_quick=True)
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
    write_outputs(out, meta, samples, result)
    return _summarize(out, result)


def plan_run(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str]
) -> tuple[dict[str, Any], Path]:
    """The run's settings from the checked options (parser.error on a bad one), as the `config`
    of soak.json, and its output directory (created)."""
    try:
        rate = resolve_rate(args.rate, args.knee_rps, args.fraction)
        duration_s, window_s = parse_duration(args.duration), parse_duration(args.window)
    except ValueError as exc:
        parser.error(str(exc))
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    unknown = [c for c in classes if c not in USER_CLASSES]
    if unknown or not classes:
        parser.error(f"--classes: unknown {unknown}; choose from {', '.join(USER_CLASSES)}")
    name = args.name or f"soak-{datetime.now():%Y%m%d-%H%M%S}"
    out = (args.results / name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "name": name,
        "command": shlex.join(["python", "-m", "loadtests.soak", *argv]),
        "rate": rate,
        "rate_note": f" (= {args.fraction:g} x knee {args.knee_rps:g})" if args.knee_rps else "",
        "users": args.users or default_users(rate),
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
    return meta, out


def external_root(host: str, server_pid: int | None) -> int | None:
    """--host: the root pid of the server whose memory is sampled (--server-pid, else the process
    of ours listening on the host's port; None, with a warning, when there is none)."""
    tail = host.split("//")[-1]
    port = int(host.rsplit(":", 1)[1].split("/")[0]) if re.search(r":\d+", tail) else 80
    root_pid = server_pid or find_server_root(port)
    if root_pid is None:
        print(
            f"warning: no process of ours listens on port {port}; memory is not measured "
            "(pass --server-pid)",
            file=sys.stderr,
        )
    return root_pid


def locust_for(meta: dict[str, Any], host: str, out: Path) -> tuple[list[str], dict[str, str]]:
    """The Locust command and environment of the soak: constant throughput per user, every
    request logged to requests.csv."""
    from loadtests.locust import runner

    users, rate = meta["users"], meta["rate"]
    env = {
        **os.environ,
        "LOADTEST_OUTPUT_DIR": str(out),
        "SOAK_RATE_PER_USER": repr(rate / users),
        "SOAK_REQUESTS_CSV": str(out / "requests.csv"),
        "PYTHONPATH": with_root_on_pythonpath(os.environ),
    }
    command = runner.locust_command(
        host,
        users,
        max(1.0, users / 5),
        f"{meta['duration_s']:g}s",
        meta["classes"],
        out,
        ["--csv-full-history"],
        locustfile=SOAK_LOCUSTFILE,
    )
    return command, env


def stop_locust(locust: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM Locust (it writes its files), SIGKILL after `grace` seconds."""
    if locust.poll() is not None:
        return
    locust.terminate()
    try:
        locust.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        locust.kill()
        locust.wait()


def watch(
    locust: subprocess.Popen,
    root_pid: int | None,
    meta: Mapping[str, Any],
    out: Path,
    samples: list[dict[str, Any]],
    problems: list[str],
) -> None:
    """While Locust runs: sample the server's memory every sample interval, print progress every
    window; Ctrl-C stops Locust and keeps what ran."""
    began = next_sample = time.monotonic()
    next_report = began + meta["window_s"]
    gone = f"server process {root_pid} exited during the run"
    try:
        while locust.poll() is None:
            now = time.monotonic()
            if root_pid and now >= next_sample:
                sample = sample_tree(root_pid)
                if sample is not None:
                    samples.append(sample)
                elif gone not in problems:
                    problems.append(gone)
                next_sample += meta["sample_interval_s"]
            if now >= next_report:
                _progress(out, now - began, samples)
                next_report += meta["window_s"]
            time.sleep(0.25)
    except KeyboardInterrupt:
        problems.append("interrupted before the end")
        print("interrupted: stopping Locust, analysing what ran", file=sys.stderr)
    stop_locust(locust)
    if locust.returncode not in (0, None) and "interrupted before the end" not in problems:
        problems.append(f"locust exited with {locust.returncode} (see locust.log)")


def soak(
    args: argparse.Namespace,
    meta: dict[str, Any],
    out: Path,
    samples: list[dict[str, Any]],
    problems: list[str],
) -> int | None:
    """Start the server (--serve) or find it (--host), run Locust while sampling; 2 when the
    server cannot be started, else None. Everything started is stopped on the way out."""
    from loadtests.locust import runner

    server: ServerProcess | None = None
    locust: subprocess.Popen | None = None
    host = (args.host or "http://127.0.0.1:3000").rstrip("/")
    try:
        if args.serve:
            if (server := serve_or_explain(args, out, models_timeout=180)) is None:
                return 2
            host, root_pid = server.url, server.process.pid
        else:
            root_pid = external_root(host, args.server_pid)
        meta.update(host=host, server_pid=root_pid, models=runner._models(host))
        command, env = locust_for(meta, host, out)
        meta["locust_command"] = command
        rate, users = meta["rate"], meta["users"]
        print(
            f"soak: {rate:g} req/s ({users} users x {rate / users:.3g}/s, "
            f"{', '.join(meta['classes'])}) against {host} for {meta['duration_s']:g} s, "
            f"windows of {meta['window_s']:g} s -> {out}",
            flush=True,
        )
        (out / "requests.csv").write_text("")
        if root_pid and (first := sample_tree(root_pid)):
            samples.append(first)  # before load
        with open(out / "locust.log", "w") as log:
            locust = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
            watch(locust, root_pid, meta, out, samples, problems)
        if root_pid and (last := sample_tree(root_pid)):
            samples.append(last)
        if server is not None and server.process.poll() is not None:
            problems.append(
                f"the server exited during the run (code {server.process.returncode}); "
                f"see {server.log_path}"
            )
    finally:
        if locust is not None:
            stop_locust(locust, grace=0)
        if server is not None:
            meta["pids"] = _pids(samples)
            server.stop()
    return None


def _pids(samples: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """label -> pid of the server's processes in the last sample."""
    return {label: p["pid"] for label, p in (samples[-1]["processes"].items() if samples else [])}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.reanalyze:
        return reanalyze(args, argv)
    meta, out = plan_run(parser, args, argv)
    exit_on_sigterm()  # run the finally blocks: stop Locust and the server
    samples: list[dict[str, Any]] = []
    problems: list[str] = []
    if (code := soak(args, meta, out, samples, problems)) is not None:
        return code
    meta.setdefault("pids", _pids(samples))
    meta.update(finished=datetime.now().isoformat(timespec="seconds"), problems=problems)
    log = (out / "locust.log").read_text(errors="replace").splitlines()
    print("\n".join([line for line in log if line.strip()][-25:]))
    result = _analyze_dir(out, meta, samples, problems)
    write_outputs(out, meta, samples, result)
    return _summarize(out, result)


def _progress(out: Path, elapsed: float, samples: Sequence[Mapping[str, Any]]) -> None:
    """A line per window while the soak runs: requests and failures so far, the last window's p99,
    RSS."""
    requests, _ = read_requests(out / "requests.csv")
    recent = [ms for t, ms, _ in requests if requests and t >= requests[-1][0] - 60]
    failures = sum(1 for _, _, ok in requests if not ok)
    rss = samples[-1]["total_rss_mb"] if samples else None
    print(
        f"  [{elapsed:5.0f}s] {len(requests)} requests, {failures} failed, p99 last 60 s "
        f"{fmt(percentile(recent, 0.99))} ms, server RSS {fmt(rss, '.1f')} MB",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
