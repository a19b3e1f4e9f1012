"""Measuring one target at one load: a closed-loop Locust run against a started server, the
server's CPU over the run (its whole process tree, from /proc), the ensemble's rows per batch
(from /metrics) and what went wrong; several rounds folded into one figure by their median."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import resource
import statistics
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from loadtests.benchmark.plan import Target
from loadtests.harness.common import ROOT, locust_stats_row, with_root_on_pythonpath
from loadtests.locust.runner import locust_command

BENCH_LOCUSTFILE = ROOT / "loadtests" / "locust" / "bench_locustfile.py"
BATCH_ROWS_SERIES = ("tabular_ensemble_batch_rows_sum", "tabular_ensemble_batch_rows_count")
"""Rows per ensemble predict call, as our service and the MLServer runtime both export them."""


class Served(Protocol):
    """What measure() needs of a server: a ServerProcess, or a replicas Deployment."""

    name: str
    url: str

    @property
    def process(self) -> Any: ...

    def cpu_seconds(self) -> float: ...

    def alive(self) -> bool: ...

    def restart(self, timeout: float = ...) -> Any: ...

    def wait_models(self, timeout: float = ...) -> bool: ...


@dataclass
class Measurement:
    target: str
    users: int
    seconds: float
    requests: int
    failures: int
    rps: float
    goodput: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    server_cpu_ms_per_req: float | None
    client_cpu_s: float
    notes: list[str] = field(default_factory=list)
    ensemble_batch_rows: float | None = None

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 1.0


def _fmt_duration(seconds: float) -> str:
    return f"{max(1, round(seconds))}s"


def warm_up(url: str, target: Target, n: int = 40) -> None:
    import random

    from loadtests.locust.payloads import RowGenerator, fetch_models, schema_from_models

    generator = RowGenerator(schema_from_models(fetch_models(url)), random.Random(1))
    headers = {"Content-Type": "application/json"}
    if target.header:
        k, v = target.header.split(":", 1)
        headers[k.strip()] = v.strip()
    for _ in range(n):
        request = urllib.request.Request(
            url + target.path,
            data=json.dumps({"features": generator.row()}).encode(),
            headers=headers,
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            response.read()


class Monitor:
    """Around a run against the BentoML graph: the ensemble's batch-size histogram from /metrics
    before and after, and (only after a run with failures) what /api/models says about the arms.

    /api/models is not polled during the run: it lists the model store synchronously in the router's
    event loop (about 0.3 s per call here), so polling it would stall the traffic being measured."""

    def __init__(self, url: str):
        self.url = url
        self.problems: dict[str, int] = {}
        self.batch0 = self._batch_rows()
        self.batch1: tuple[float, float] | None = None

    def _batch_rows(self) -> tuple[float, float] | None:
        text = None
        for _ in range(3):
            try:
                with urllib.request.urlopen(self.url + "/metrics", timeout=30) as response:  # noqa: S310
                    text = response.read().decode()
                break
            except Exception as exc:  # a loaded server: try again shortly
                self.problems[f"/metrics: {type(exc).__name__}"] = (
                    self.problems.get(f"/metrics: {type(exc).__name__}", 0) + 1
                )
                time.sleep(1)
        if text is None:
            return None
        values = {}
        for line in text.splitlines():
            if line.startswith(BATCH_ROWS_SERIES):
                key, value = line.rsplit(" ", 1)
                values[key.split("{")[0]] = values.get(key.split("{")[0], 0.0) + float(value)
        if BATCH_ROWS_SERIES[1] not in values:
            return None
        return values.get(BATCH_ROWS_SERIES[0], 0.0), values[BATCH_ROWS_SERIES[1]]

    def arm_errors(self) -> None:
        """Record what /api/models reports as not ready (call after a run with failures)."""
        try:
            with urllib.request.urlopen(self.url + "/api/models", timeout=30) as response:  # noqa: S310
                models = json.loads(response.read())
        except (OSError, ValueError) as exc:
            self.problems[f"/api/models unreachable: {type(exc).__name__}"] = 1
            return
        for name in ("classic", "ensemble"):
            entry = models.get(name) or {}
            error = entry.get("error") or entry.get("last_error")
            if entry and (not entry.get("ready", True) or error):
                problem = (
                    f"after the run /api/models says {name} ready={entry.get('ready')}: "
                    f"{str(error)[:160]}"
                )
                self.problems[problem] = 1

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *_exc) -> None:
        self.batch1 = self._batch_rows()

    def mean_batch(self) -> float | None:
        if not self.batch0 or not self.batch1 or self.batch1[1] <= self.batch0[1]:
            return None
        return (self.batch1[0] - self.batch0[0]) / (self.batch1[1] - self.batch0[1])


def _locust_env(target: Target, users: int, run_dir: Path) -> dict[str, str]:
    """The bench locustfile's environment: the endpoint, header and model of `target`, a seed per
    level, the run directory for Locust's files."""
    env = {
        **os.environ,
        "LOADTEST_BENCH_PATH": target.path,
        "LOADTEST_BENCH_NAME": target.path,
        "LOADTEST_BENCH_HEADER": target.header,
        "LOADTEST_BENCH_MODEL": target.model,
        "LOADTEST_SEED": str(1000 + users),
        "LOADTEST_OUTPUT_DIR": str(run_dir),
        "PYTHONPATH": with_root_on_pythonpath(os.environ),
    }
    env.pop("LOADTEST_SHAPE", None)
    return env


def _failure_notes(run_dir: Path, failures: int) -> list[str]:
    """The three most frequent failures Locust recorded (none when there were none)."""
    failures_csv = run_dir / "locust_failures.csv"
    if not failures or not failures_csv.exists():
        return []
    with open(failures_csv, newline="") as f:
        return [f"{r['Occurrences']}x {r['Error'][:120]}" for r in csv.DictReader(f)][:3]


def _number(row: dict[str, str], key: str) -> float | None:
    value = row.get(key)
    return None if value in (None, "", "N/A") else float(value)


def measure(
    server: Served, target: Target, users: int, duration: float, out: Path, tag: str = ""
) -> Measurement:
    """One Locust run of `users` closed-loop users for `duration` seconds against `target` on
    `server`; its files in out/runs/<target>-u<users><tag>/."""
    run_dir = out / "runs" / f"{target.key}-u{users}{tag}"
    run_dir.mkdir(parents=True, exist_ok=True)
    command = locust_command(
        server.url,
        users,
        float(users),
        _fmt_duration(duration),
        [],
        run_dir,
        extra=["--reset-stats"],
        locustfile=BENCH_LOCUSTFILE,
    )
    cpu0, rusage0 = server.cpu_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    monitor = Monitor(server.url) if not target.server.startswith("fastapi") else None
    with open(run_dir / "locust.log", "w") as log, monitor or contextlib.nullcontext():
        rc = subprocess.run(
            command,
            cwd=ROOT,
            env=_locust_env(target, users, run_dir),
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=duration + 120,
        ).returncode
    cpu1, rusage1 = server.cpu_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    row = locust_stats_row(run_dir / "locust_stats.csv", target.path) if rc == 0 else None
    notes = [] if rc == 0 else [f"locust exit code {rc}"]
    if row is None:
        empty = (0, 0, 0.0, 0.0, None, None, None, None, 0.0)
        return Measurement(target.key, users, duration, *empty, notes or ["no stats"])
    requests = int(_number(row, "Request Count") or 0)
    failures = int(_number(row, "Failure Count") or 0)
    rps = _number(row, "Requests/s") or 0.0
    notes += _failure_notes(run_dir, failures)
    client_cpu = (rusage1.ru_utime - rusage0.ru_utime) + (rusage1.ru_stime - rusage0.ru_stime)
    mean_batch = monitor.mean_batch() if monitor and target.model == "ensemble" else None
    if monitor and failures:
        monitor.arm_errors()
    if monitor and monitor.problems:
        notes += list(monitor.problems)[:3]
    return Measurement(
        target.key,
        users,
        duration,
        requests,
        failures,
        round(rps, 1),
        round(rps * (1 - failures / requests), 1) if requests else 0.0,
        _number(row, "50%"),
        _number(row, "95%"),
        _number(row, "99%"),
        round((cpu1 - cpu0) * 1e3 / requests, 2) if requests else None,
        round(client_cpu, 1),
        notes,
        round(mean_batch, 1) if mean_batch else None,
    )


def measure_alive(
    server: Served, target: Target, users: int, duration: float, out: Path, tag: str = ""
) -> Measurement:
    """measure(), restarting the server first if it died (a shared machine: someone may kill it) and
    measuring again once if it died during the run; restarts are noted in the result."""
    notes = []
    for attempt in range(2):
        if not server.alive():
            code = server.process.poll() if server.process else None
            print(f"  {server.name} is down (exit code {code}); restarting it", flush=True)
            notes.append(f"{server.name} restarted (was down, exit code {code})")
            server.restart()
            server.wait_models(120)
            warm_up(server.url, target)
        m = measure(server, target, users, duration, out, tag)
        if server.alive() or attempt == 1:
            m.notes = notes + m.notes
            return m
        notes.append(f"{server.name} died during the run; measured again")
    raise AssertionError("unreachable")


def median_run(runs: list[Measurement]) -> Measurement:
    """One figure per (target, users) from several rounds: each figure's median (requests and
    failures summed), so one busy moment of a shared machine does not decide a ratio."""
    if len(runs) == 1:
        return runs[0]

    def med(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    notes = [f"median of {len(runs)} rounds"]
    for m in runs:
        notes += [n for n in m.notes if n not in notes]
    return Measurement(
        runs[0].target,
        runs[0].users,
        sum(m.seconds for m in runs),
        sum(m.requests for m in runs),
        sum(m.failures for m in runs),
        med(m.rps for m in runs),
        med(m.goodput for m in runs),
        med(m.p50_ms for m in runs),
        med(m.p95_ms for m in runs),
        med(m.p99_ms for m in runs),
        med(m.server_cpu_ms_per_req for m in runs),
        sum(m.client_cpu_s for m in runs),
        notes,
        med(m.ensemble_batch_rows for m in runs),
    )


# --------------------------------------------------------------------------- report
def best_under_budget(runs: list[Measurement], budget_ms: float) -> Measurement | None:
    ok = [m for m in runs if m.p99_ms is not None and m.p99_ms <= budget_ms and m.error_rate < 0.01]
    return max(ok, key=lambda m: m.goodput) if ok else None
