"""Side-by-side benchmark, one machine, one run: in-process models, BentoML, FastAPI, MLServer,
LitServe, Ray Serve, and this code against an earlier version of itself.

    python -m loadtests.benchmark [--duration 20s] [--users 16] [--levels 1,4,16,32]
                                  [--bentoml-home DIR | --train-quick] [--only a,b,c,d,e,f,g]
                                  [--before REF]

(a) raw in-process `predict_proba`, batch 1 and batch 64, classic and ensemble (a subprocess);
(b) BentoML's adaptive batching vs batching off on the ensemble's BentoML API
    (SERVING_ENSEMBLE_TRANSPORT=api on both servers; "off" is loadtests/nobatch_service.py, since
    BentoML 1.4 refuses max_batch_size=1), direct endpoint /api/v2/classify/ensemble;
(c) classic through the router (/api/classify + X-Model-Preference: classic) vs classic direct
    (/api/v1/classify/classic); both answered in the router process (SERVING_CLASSIC_LOCAL=true);
(d) a plain FastAPI + uvicorn server calling the same models in process
    (loadtests/baseline_fastapi.py);
(e) the routed ensemble (/api/classify + X-Model-Preference: ensemble: router -> ensemble service,
    encoded rows over the rows socket, coalesced, members on their fast paths) against
      - the same graph with the native member libraries (a second `bentoml serve service:Router`
        with SERVING_NATIVE_MEMBERS=1; every server not named *-native runs with the variable
        empty: fast paths),
      - the FastAPI baseline of (d), and
      - MLServer 1.7.1 with adaptive batching (max 64 rows, 20 ms window, parallel_workers 0)
        serving the same stored ensemble through the same model code (loadtests/mlserver/: a
        custom POST /classify/ensemble handler that validates like ours and goes through
        MLServer's batcher; its own venv .venv-mlserver from scripts/mlserver-venv.sh);
    and the routed classic against the FastAPI classic. Goal: routed ensemble goodput >= 2x
    MLServer's at the fixed load with p99 <= 110 ms and no errors (the report says met / not met);
(f) the frameworks with their own batching, every one serving the seven native members (not our
    compiled paths): MLServer (64 rows / 20 ms), LitServe 0.2.19 (`max_batch_size` 64,
    `batch_timeout` 20 ms; loadtests/litserve/, .venv-litserve), Ray Serve 2.60 (`@serve.batch`
    64 / 20 ms; loadtests/rayserve/, .venv-ray), FastAPI, and our routed graph on native members;
(g) server CPU per request, goodput and p99 of the routed and direct endpoints at every level, this
    checkout against the code at --before REF (served from a git worktree, same models), with the
    routed ensemble / routed classic CPU ratios against issue 16's targets (<= 4x at 1 user,
    <= 1.5x at 16).
A target whose venv is missing (scripts/baseline-venv.sh NAME) or, for (g)'s "before" rows, whose
--before is not given, is skipped with a note.

Every served configuration is driven by closed-loop Locust users (no think time, one distinct row
per request) at each --levels user count, --duration at the fixed load (--users) and half of it at
the other levels. Reported: goodput (successful responses/s) at a p99 budget — the highest goodput
among the levels tried whose p99 is within the budget (classic 100 ms, ensemble 500 ms) and errors
< 1 % — and p50/p95/p99/error % at the fixed load, with ratios; server CPU per request; the
ensemble's mean rows per batch (BentoML's and MLServer's); a latency vs throughput chart. Output:
results/benchmark-<timestamp>/ (report.md, results.json, latency.png, runs/, server logs,
mlserver/ settings). Locust runs on the same cores as the servers: compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from loadtests.common import (
    ROOT,
    exit_on_sigterm,
    free_port,
    git_commit,
    locust_stats_row,
    markdown_row,
    parse_duration,
    with_root_on_pythonpath,
)
from loadtests.runner import locust_command
from loadtests.server import ServerProcess, use_model_store
from models.fastpath import NATIVE_ENV

BENCH_LOCUSTFILE = ROOT / "loadtests" / "bench_locustfile.py"
BATCH_ROWS_SERIES = ("tabular_ensemble_batch_rows_sum", "tabular_ensemble_batch_rows_count")
"""Rows per ensemble predict call, as our service and the MLServer runtime both export them."""


@dataclass
class Target:
    key: str
    label: str
    server: str
    path: str
    model: str
    header: str = ""


TARGETS = [
    Target(
        "ensemble_batching",
        "ensemble direct (lean path; rows to the service over its socket, coalesced)",
        "bentoml",
        "/api/v2/classify/ensemble",
        "ensemble",
    ),
    Target(
        "ensemble_api",
        "ensemble direct through BentoML's API, adaptive batching (max 64)",
        "bentoml-api",
        "/api/v2/classify/ensemble",
        "ensemble",
    ),
    Target(
        "classic_routed",
        "classic via router (in router process)",
        "bentoml",
        "/api/classify",
        "classic",
        "X-Model-Preference: classic",
    ),
    Target(
        "classic_direct",
        "classic direct (lean path, answered in the router process)",
        "bentoml",
        "/api/v1/classify/classic",
        "classic",
    ),
    Target(
        "ensemble_nobatch",
        "ensemble direct through BentoML's API, batching off (max 1)",
        "bentoml-nobatch",
        "/api/v2/classify/ensemble",
        "ensemble",
    ),
    Target(
        "fastapi_classic",
        "classic, FastAPI + uvicorn baseline",
        "fastapi",
        "/classify/classic",
        "classic",
    ),
    Target(
        "fastapi_ensemble",
        "ensemble, FastAPI + uvicorn baseline",
        "fastapi",
        "/classify/ensemble",
        "ensemble",
    ),
    Target(
        "ensemble_routed",
        "ensemble via router (fast paths, adaptive batching)",
        "bentoml",
        "/api/classify",
        "ensemble",
        "X-Model-Preference: ensemble",
    ),
    Target(
        "ensemble_routed_native",
        "ensemble via router, native member libraries (SERVING_NATIVE_MEMBERS=1)",
        "bentoml-native",
        "/api/classify",
        "ensemble",
        "X-Model-Preference: ensemble",
    ),
    Target(
        "mlserver_ensemble",
        "ensemble, MLServer 1.7.1, adaptive batching (max 64, 20 ms)",
        "mlserver",
        "/classify/ensemble",
        "ensemble",
    ),
    # (f) the frameworks' own batching, each serving the seven native members
    Target(
        "mlserver_native",
        "MLServer 1.7.1, adaptive batching (64, 20 ms), native members",
        "mlserver-native",
        "/classify/ensemble",
        "ensemble",
    ),
    Target(
        "litserve_native",
        "LitServe 0.2.19, max_batch_size 64, batch_timeout 20 ms, native members",
        "litserve-native",
        "/classify/ensemble",
        "ensemble",
    ),
    Target(
        "rayserve_native",
        "Ray Serve 2.60, @serve.batch (64, 20 ms), native members",
        "rayserve-native",
        "/classify/ensemble",
        "ensemble",
    ),
    Target(
        "fastapi_ensemble_native",
        "FastAPI + uvicorn, ensemble in process, native members",
        "fastapi-native",
        "/classify/ensemble",
        "ensemble",
    ),
    # (g) the same endpoints served by the code at --before REF (a git worktree)
    Target(
        "classic_routed_before",
        "before: classic via router",
        "bentoml-before",
        "/api/classify",
        "classic",
        "X-Model-Preference: classic",
    ),
    Target(
        "ensemble_routed_before",
        "before: ensemble via router",
        "bentoml-before",
        "/api/classify",
        "ensemble",
        "X-Model-Preference: ensemble",
    ),
    Target(
        "classic_direct_before",
        "before: classic direct",
        "bentoml-before",
        "/api/v1/classify/classic",
        "classic",
    ),
    Target(
        "ensemble_direct_before",
        "before: ensemble direct",
        "bentoml-before",
        "/api/v2/classify/ensemble",
        "ensemble",
    ),
]
PARTS = {
    "b": {"ensemble_api", "ensemble_nobatch"},
    "c": {"classic_routed", "classic_direct"},
    "d": {
        "fastapi_classic",
        "fastapi_ensemble",
        "classic_routed",
        "classic_direct",
        "ensemble_batching",
    },
    "e": {
        "ensemble_routed",
        "ensemble_routed_native",
        "mlserver_ensemble",
        "fastapi_ensemble",
        "classic_routed",
        "fastapi_classic",
    },
    "f": {
        "ensemble_routed_native",
        "mlserver_native",
        "litserve_native",
        "rayserve_native",
        "fastapi_ensemble_native",
    },
    "g": {
        "classic_routed",
        "ensemble_routed",
        "classic_direct",
        "ensemble_batching",
        "classic_routed_before",
        "ensemble_routed_before",
        "classic_direct_before",
        "ensemble_direct_before",
    },
}
DEFAULT_PARTS = "a,b,c,d,e,f,g"
ROUTED_DIRECT = [  # part (g): (endpoint, model, key now, key before)
    ("routed `/api/classify` + header", "classic", "classic_routed", "classic_routed_before"),
    ("routed `/api/classify` + header", "ensemble", "ensemble_routed", "ensemble_routed_before"),
    ("direct `/api/v1/classify/classic`", "classic", "classic_direct", "classic_direct_before"),
    (
        "direct `/api/v2/classify/ensemble`",
        "ensemble",
        "ensemble_batching",
        "ensemble_direct_before",
    ),
]
CPU_TARGETS = {1: 4.0, 16: 1.5}
"""Part (g)'s goal (issue 16): routed ensemble server CPU per request at most this many times
routed classic's, by users."""
BASELINE_VENVS = {  # server -> (venv, script that creates it)
    "mlserver": (".venv-mlserver", "scripts/mlserver-venv.sh"),
    "mlserver-native": (".venv-mlserver", "scripts/mlserver-venv.sh"),
    "litserve-native": (".venv-litserve", "scripts/litserve-venv.sh"),
    "rayserve-native": (".venv-ray", "scripts/ray-venv.sh"),
}
COMPARISONS = [  # part, what, A, B (ratio = A / B)
    ("b", "ensemble (BentoML API): adaptive batching vs off", "ensemble_api", "ensemble_nobatch"),
    ("c", "classic: routed vs direct", "classic_routed", "classic_direct"),
    ("d", "classic: BentoML routed vs FastAPI baseline", "classic_routed", "fastapi_classic"),
    ("d", "classic: BentoML direct vs FastAPI baseline", "classic_direct", "fastapi_classic"),
    (
        "d",
        "ensemble: BentoML (batching) vs FastAPI baseline",
        "ensemble_batching",
        "fastapi_ensemble",
    ),
    (
        "e",
        "ensemble: routed vs MLServer (adaptive batching)",
        "ensemble_routed",
        "mlserver_ensemble",
    ),
    ("e", "ensemble: routed vs FastAPI baseline", "ensemble_routed", "fastapi_ensemble"),
    (
        "e",
        "ensemble: routed fast paths vs routed native",
        "ensemble_routed",
        "ensemble_routed_native",
    ),
    ("e", "classic: routed vs FastAPI baseline", "classic_routed", "fastapi_classic"),
    ("f", "native: LitServe vs MLServer", "litserve_native", "mlserver_native"),
    ("f", "native: Ray Serve vs MLServer", "rayserve_native", "mlserver_native"),
    ("f", "native: FastAPI vs MLServer", "fastapi_ensemble_native", "mlserver_native"),
    ("f", "native: routed BentoML vs MLServer", "ensemble_routed_native", "mlserver_native"),
    ("g", "routed ensemble: now vs before", "ensemble_routed", "ensemble_routed_before"),
    ("g", "direct ensemble: now vs before", "ensemble_batching", "ensemble_direct_before"),
    ("g", "direct classic: now vs before", "classic_direct", "classic_direct_before"),
    ("g", "routed classic: now vs before", "classic_routed", "classic_routed_before"),
    ("g", "ensemble: direct vs routed", "ensemble_batching", "ensemble_routed"),
]
E_TARGET = {"goodput_ratio": 2.0, "p99_ms": 110.0, "errors": 0}
"""Part (e)'s goal: routed ensemble goodput >= 2x MLServer's at the fixed load, with p99 <= 110 ms
and no errors."""
MLSERVER_VENV = ROOT / ".venv-mlserver"


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


# --------------------------------------------------------------------------- (a) in process
def inprocess(repeat_b1: int = 300, repeat_b64: int = 60, rows: int = 4096) -> dict[str, Any]:
    """Median and p99 ms per predict_proba call at batch 1 and 64, each call on rows not seen
    before."""
    import random

    import numpy as np

    from loadtests.payloads import RowGenerator
    from models import store

    out: dict[str, Any] = {"models": {}, "timings": []}
    for name in ("classic", "ensemble"):
        t = time.perf_counter()
        model, stored = store.load(f"{name}:latest")
        out["models"][name] = {
            "tag": str(stored.tag),
            "labels": dict(stored.info.labels),
            "load_s": round(time.perf_counter() - t, 2),
        }
        generator = RowGenerator(model.schema.model_dump(), random.Random(7))
        raw = generator.rows(rows)
        codes = model.schema.encode_rows(raw)
        encode = []
        for i in range(200):  # the router's validation + encoding of one request row
            t = time.perf_counter()
            model.schema.encode_rows(raw[i : i + 1], prefix="features")
            encode.append(time.perf_counter() - t)
        for batch, repeat in ((1, repeat_b1), (64, repeat_b64)):
            model.predict_proba(codes[:batch])  # warm-up
            samples = []
            for i in range(repeat):
                start = (i * batch) % (rows - batch)
                chunk = codes[start : start + batch]
                t = time.perf_counter()
                model.predict_proba(chunk)
                samples.append(time.perf_counter() - t)
            median = statistics.median(samples) * 1e3
            out["timings"].append(
                {
                    "model": name,
                    "batch": batch,
                    "calls": repeat,
                    "median_ms": round(median, 3),
                    "p99_ms": round(float(np.percentile(samples, 99)) * 1e3, 3),
                    "rows_per_s": round(batch / (median / 1e3), 1),
                }
            )
        out["timings"].append(
            {
                "model": name,
                "batch": "encode 1 row",
                "calls": 200,
                "median_ms": round(statistics.median(encode) * 1e3, 3),
                "p99_ms": round(float(np.percentile(encode, 99)) * 1e3, 3),
                "rows_per_s": None,
            }
        )
        del model
    return out


def run_inprocess(env: dict[str, str], out: Path) -> dict[str, Any]:
    path = out / "inprocess.json"
    result = subprocess.run(
        [sys.executable, "-m", "loadtests.benchmark", "--_inprocess", str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"in-process benchmark failed:\n{result.stderr[-3000:]}")
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- served
def warm_up(url: str, target: Target, n: int = 40) -> None:
    import random

    from loadtests.payloads import RowGenerator, fetch_models, schema_from_models

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


def measure(
    server: ServerProcess, target: Target, users: int, duration: float, out: Path, tag: str = ""
) -> Measurement:
    run_dir = out / "runs" / f"{target.key}-u{users}{tag}"
    run_dir.mkdir(parents=True, exist_ok=True)
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
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=duration + 120
        ).returncode
    cpu1, rusage1 = server.cpu_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    row = locust_stats_row(run_dir / "locust_stats.csv", target.path) if rc == 0 else None
    notes = [] if rc == 0 else [f"locust exit code {rc}"]
    if row is None:
        return Measurement(
            target.key,
            users,
            duration,
            0,
            0,
            0.0,
            0.0,
            None,
            None,
            None,
            None,
            0.0,
            notes or ["no stats"],
        )

    def num(key: str) -> float | None:
        value = row.get(key)
        return None if value in (None, "", "N/A") else float(value)

    requests, failures, rps = (
        int(num("Request Count") or 0),
        int(num("Failure Count") or 0),
        num("Requests/s") or 0.0,
    )
    failures_csv = run_dir / "locust_failures.csv"
    if failures and failures_csv.exists():
        with open(failures_csv, newline="") as f:
            notes += [f"{r['Occurrences']}x {r['Error'][:120]}" for r in csv.DictReader(f)][:3]
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
        num("50%"),
        num("95%"),
        num("99%"),
        round((cpu1 - cpu0) * 1e3 / requests, 2) if requests else None,
        round(client_cpu, 1),
        notes,
        round(mean_batch, 1) if mean_batch else None,
    )


def measure_alive(
    server: ServerProcess, target: Target, users: int, duration: float, out: Path, tag: str = ""
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


def _f(value: float | None, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}{unit}"


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "–"
    return f"{a / b:.2f}×"


def render(
    meta: dict[str, Any],
    inproc: dict[str, Any] | None,
    results: dict[str, list[Measurement]],
    budgets: dict[str, float],
    fixed_users: int,
) -> str:
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
    if meta.get("mlserver") or meta.get("skipped") or meta.get("native_env"):
        lines[-1] += "  "
        extra = []
        if meta.get("mlserver"):
            extra.append(f"MLServer {meta['mlserver']} (.venv-mlserver, loadtests/mlserver/)")
        if meta.get("skipped"):
            extra.append("skipped: " + ", ".join(f"{k} ({v})" for k, v in meta["skipped"].items()))
        if meta.get("native_env"):
            extra.append(
                "Member paths: " + "; ".join(f"{k}: {v}" for k, v in meta["native_env"].items())
            )
        lines.append(". ".join(extra) + ".")
    lines.append("")
    if inproc:
        lines += [
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
        lines.append("")
    targets = {t.key: t for t in TARGETS}
    summary: dict[str, dict[str, Any]] = {}
    for key, runs in results.items():
        budget = budgets[targets[key].model]
        best = best_under_budget(runs, budget)
        fixed = next((m for m in runs if m.users == fixed_users), None)
        summary[key] = {"best": best, "fixed": fixed, "budget": budget}
    if summary:
        lines += [
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
            t, best, fixed = targets[key], s["best"], s["fixed"]
            at_budget = f"{best.goodput:,.0f}/s ({best.users})" if best else "none within budget"
            if fixed:
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
            else:
                lines.append(f"| {t.label} | `{t.path}` | {at_budget} | – | – | – | – | – | – |")
        lines += [
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
        rows: list[tuple[list[str], str, str, str]] = []  # a pair listed by several parts: one row
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
        lines += [
            "",
            "Goodput ratio > 1: A serves more; latency / CPU ratio < 1: A is faster / cheaper.",
            "",
        ]
        lines += goal_e(summary, fixed_users)
        lines += section_f(summary, fixed_users)
        lines += section_g(results, meta)
        lines += [
            "### Every run",
            "",
            markdown_row(
                "configuration",
                "users",
                "s",
                "requests",
                "goodput",
                "p50",
                "p95",
                "p99",
                "errors",
                "server CPU ms/req",
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
                        f"{m.seconds:.0f}",
                        m.requests,
                        f"{m.goodput:,.1f}",
                        _f(m.p50_ms),
                        _f(m.p95_ms),
                        _f(m.p99_ms),
                        f"{m.error_rate:.2%}",
                        _f(m.server_cpu_ms_per_req, 2),
                        _f(m.ensemble_batch_rows, 1),
                        f"{m.client_cpu_s:.1f}",
                        "; ".join(m.notes),
                    )
                )
    return "\n".join(lines) + "\n"


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
    targets = {t.key: t for t in TARGETS}
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
                targets[key].label,
                f"{m.goodput:,.0f}/s",
                f"{_f(m.p50_ms)} ms",
                f"{_f(m.p99_ms)} ms",
                f"{m.error_rate:.2%}",
                _f(m.server_cpu_ms_per_req, 2),
                _f(m.ensemble_batch_rows, 1),
            )
        )
    return lines + [""]


TARGETS_F = [
    "ensemble_routed_native",
    "mlserver_native",
    "litserve_native",
    "rayserve_native",
    "fastapi_ensemble_native",
]


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


def tree_env(server: ServerProcess, var: str) -> list[str | None]:
    """`var` as each process of the server's tree sees it (None: unset or unreadable)."""
    from loadtests.server import descendants

    values = []
    for pid in descendants(server.process.pid) if server.process else []:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            values.append(None)
            continue
        found = [
            e.split(b"=", 1)[1].decode(errors="replace")
            for e in environ
            if e.startswith(var.encode() + b"=")
        ]
        values.append(found[0] if found else None)
    return values


def mlserver_version() -> str | None:
    found = sorted(MLSERVER_VENV.glob("lib/python*/site-packages/mlserver-*.dist-info"))
    return found[0].name.split("-")[1] if found else None


def chart(results: dict[str, list[Measurement]], budgets: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = {t.key: t for t in TARGETS}
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    for ax, model in zip(axes, ("classic", "ensemble"), strict=True):
        for key, runs in results.items():
            if targets[key].model != model:
                continue
            runs = sorted((m for m in runs if m.p99_ms is not None), key=lambda m: m.users)
            if not runs:
                continue
            x = [m.goodput for m in runs]
            (line,) = ax.plot(
                x, [m.p99_ms for m in runs], marker="o", label=f"{targets[key].label} (p99)"
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


# --------------------------------------------------------------------------- servers
SERVERS = [
    "bentoml",
    "bentoml-api",
    "bentoml-nobatch",
    "bentoml-native",
    "bentoml-before",
    "fastapi",
    "fastapi-native",
    "mlserver",
    "mlserver-native",
    "litserve-native",
    "rayserve-native",
]
"""Every server a target can name, in start order. `*-native`: SERVING_NATIVE_MEMBERS=1 (the
seven members through their own libraries); every other server runs the fast paths."""


def make_server(
    name: str, out: Path, env: dict[str, str], before_tree: Path | None = None
) -> ServerProcess:
    """The (not yet started) server of that name (SERVERS)."""
    native = name.endswith("-native")
    server_env = dict(env, **{NATIVE_ENV: "1" if native else ""})
    port = free_port()
    home = ["--bentoml-home", env["BENTOML_HOME"]] if env.get("BENTOML_HOME") else []
    if name.startswith("fastapi"):
        command = [sys.executable, "-m", "loadtests.baseline_fastapi", "--port", str(port)]
        return ServerProcess(command, port, server_env, out / f"{name}.log", name)
    if name.startswith("mlserver"):  # .venv-mlserver's `mlserver start`, the ensemble only
        command = [sys.executable, "-m", "loadtests.mlserver.launch", "--port", str(port)]
        command += ["--workdir", str(out / name)]
        return ServerProcess(
            command, port, server_env, out / f"{name}.log", name, models=("ensemble",)
        )
    if name in ("litserve-native", "rayserve-native"):  # their own venvs (BASELINE_VENVS)
        from loadtests.mlserver.launch import server_env as baseline_env

        venv, _ = BASELINE_VENVS[name]
        module = "loadtests.litserve.app" if name.startswith("lit") else "loadtests.rayserve.app"
        command = [str(ROOT / venv / "bin" / "python"), "-m", module, "--port", str(port), *home]
        if name.startswith("lit"):
            command += ["--workdir", str(out / name)]
        full_env = baseline_env(server_env)
        full_env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        return ServerProcess(
            command, port, full_env, out / f"{name}.log", name, models=("ensemble",)
        )
    server_env = {
        k: v
        for k, v in server_env.items()
        if k in ("BENTOML_HOME", "BENTOML_DO_NOT_TRACK", "TF_CPP_MIN_LOG_LEVEL", NATIVE_ENV)
    }
    service = "service:Router"
    if name == "bentoml-nobatch":  # SERVING_ENSEMBLE_MAX_BATCH_SIZE=1 is rejected by BentoML 1.4
        service = "loadtests.nobatch_service:Router"
    if name in ("bentoml-api", "bentoml-nobatch"):  # part b: BentoML's own batching, so its API
        server_env["SERVING_ENSEMBLE_TRANSPORT"] = "api"
    flags = before_tree / "config" / "flags.yaml" if before_tree is not None else None
    server = ServerProcess.bentoml(out, env=server_env, flags=flags, name=name, service=service)
    if before_tree is not None:  # the code at --before, from its own checkout (and flag file)
        server.cwd = before_tree
        server.env.pop("PYTHONPATH", None)
    return server


def worktree(ref: str, path: Path) -> Path:
    """A detached git worktree of `ref` at `path` (removed by `remove_worktree`)."""
    subprocess.run(
        ["git", "worktree", "add", "--detach", "--force", str(path), ref],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return path


def remove_worktree(path: Path) -> None:
    subprocess.run(
        ["git", "worktree", "remove", "--force", str(path)],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.benchmark", description=__doc__.splitlines()[0]
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
    parser.add_argument("--_inprocess", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    exit_on_sigterm()  # run the finally blocks: stop the servers
    if args._inprocess:
        args._inprocess.write_text(json.dumps(inprocess(), indent=2))
        return 0

    started = time.monotonic()
    env = dict(os.environ, BENTOML_DO_NOT_TRACK="true", TF_CPP_MIN_LOG_LEVEL="3")
    if env.get(NATIVE_ENV):
        print(
            f"note: {NATIVE_ENV}={env[NATIVE_ENV]} in the environment is ignored: every "
            "configuration uses the fast paths except ensemble_routed_native (part e), which sets "
            "it to 1",
            flush=True,
        )
    env[NATIVE_ENV] = ""  # the fast paths everywhere (empty = not forced); bentoml-native sets "1"
    if not use_model_store(env, args.bentoml_home, args.train_quick, "benchmark-home-"):
        return 2

    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    if unknown := parts - set(PARTS) - {"a"}:
        print(
            f"unknown part(s) {sorted(unknown)}; parts are a, {', '.join(PARTS)}",
            file=sys.stderr,
        )
        return 2
    try:
        duration = parse_duration(args.duration)
        ladder = (
            parse_duration(args.ladder_duration) if args.ladder_duration else max(5.0, duration / 2)
        )
    except ValueError as exc:
        parser.error(str(exc))
    levels = sorted({int(x) for x in args.levels.split(",") if x.strip()} | {args.users})
    budgets = {"classic": args.budget_classic_ms, "ensemble": args.budget_ensemble_ms}
    out = (args.results / f"benchmark-{datetime.now():%Y%m%d-%H%M%S}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    wanted = set().union(*(PARTS[p] for p in parts if p in PARTS))
    targets = [t for t in TARGETS if t.key in wanted]
    skipped: dict[str, str] = {}
    for server_name, (venv, script) in BASELINE_VENVS.items():
        if not (ROOT / venv / "bin" / "python").exists():
            for t in targets:
                if t.server == server_name:
                    skipped[t.key] = f"{venv} missing: bash {script}"
    if not args.before:
        for t in targets:
            if t.server == "bentoml-before":
                skipped[t.key] = "no --before REF"
    if skipped:
        targets = [t for t in targets if t.key not in skipped]
        print(f"note: skipping {', '.join(f'{k} ({v})' for k, v in skipped.items())}", flush=True)
    servers = [s for s in SERVERS if any(t.server == s for t in targets)]
    estimate = (
        args.repeat * sum(len(levels) * 3 + (len(levels) - 1) * ladder + duration for _ in targets)
        + 45 * len(servers)
        + ("a" in parts) * 40
    )
    print(
        f"benchmark -> {out}\n  parts {sorted(parts)}, levels {levels}, "
        f"{duration:.0f}s at {args.users} users, {ladder:.0f}s elsewhere; "
        f"about {estimate / 60:.1f} min",
        flush=True,
    )

    meta: dict[str, Any] = {
        "started": datetime.now().isoformat(timespec="seconds"),
        "command": "python -m loadtests.benchmark "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}",
        "levels": levels,
        "duration_s": duration,
        "ladder_s": ladder,
        "budgets_ms": budgets,
        "bentoml_home": env.get("BENTOML_HOME", "~/bentoml"),
        "load_average_start": [round(x, 1) for x in os.getloadavg()],
    }
    if skipped:
        meta["skipped"] = skipped
    if any(name.startswith("mlserver") for name in servers):
        meta["mlserver"] = mlserver_version()
    if args.before:
        meta["before"] = args.before
    meta["commit"] = git_commit()

    inproc = None
    if "a" in parts:
        print("(a) in-process predict_proba ...", flush=True)
        inproc = run_inprocess(env, out)
        meta["models"] = ", ".join(
            f"{m['tag']} ({m['labels'].get('profile', '?')})" for m in inproc["models"].values()
        )
    results: dict[str, list[Measurement]] = {t.key: [] for t in targets}
    every_round: dict[str, list[Measurement]] = {}
    running: dict[str, ServerProcess] = {}
    try:
        for name in servers:  # all up at once: levels then alternate between them, so a busy moment
            # of a shared machine does not land on one configuration only
            before_tree = None
            if name == "bentoml-before":
                before_tree = worktree(args.before, out / "before-tree")
                meta["before_commit"] = git_commit(before_tree)
            server = make_server(name, out, env, before_tree)
            print(f"starting {name} ...", flush=True)
            t0 = time.monotonic()
            running[name] = server.start_retrying()
            if not server.wait_models(120):
                print(f"  {name}: a model is not ready; see {server.log_path}", flush=True)
            print(f"  ready in {time.monotonic() - t0:.0f}s at {server.url}", flush=True)
            if name.startswith(
                "bentoml"
            ):  # the variable must reach the ensemble worker (a grandchild)
                seen = tree_env(server, NATIVE_ENV)
                meta.setdefault("native_env", {})[name] = (
                    f"{NATIVE_ENV}={server.env.get(NATIVE_ENV)!r} in "
                    f"{seen.count(server.env.get(NATIVE_ENV))}/{len(seen)} processes"
                )
                print(f"  {meta['native_env'][name]}", flush=True)
        if "models" not in meta and running:  # no part (a): the tags the servers report
            with contextlib.suppress(OSError, ValueError):
                from loadtests.payloads import fetch_models

                served = fetch_models(next(iter(running.values())).url, timeout=30)
                meta["models"] = ", ".join(
                    str(v.get("tag"))
                    for v in served.values()
                    if isinstance(v, dict) and v.get("tag")
                )
        for target in targets:
            warm_up(running[target.server].url, target)
        for users in levels:
            rounds: dict[str, list[Measurement]] = {t.key: [] for t in targets}
            for round_ in range(args.repeat):  # rounds alternate the targets again
                for target in targets:
                    m = measure_alive(
                        running[target.server],
                        target,
                        users,
                        duration if users == args.users else ladder,
                        out,
                        f"-r{round_ + 1}" if args.repeat > 1 else "",
                    )
                    rounds[target.key].append(m)
                    print(
                        f"  {target.key:<22} {users:>3} users: {m.goodput:8.1f}/s  "
                        f"p50 {_f(m.p50_ms):>5}  p99 {_f(m.p99_ms):>6} ms  "
                        f"errors {m.error_rate:.2%}  "
                        f"server CPU {_f(m.server_cpu_ms_per_req, 2)} ms/req"
                        + (f"  {m.ensemble_batch_rows} rows/batch" if m.ensemble_batch_rows else "")
                        + (f"  {m.notes}" if m.notes else ""),
                        flush=True,
                    )
            for key, runs in rounds.items():
                results[key].append(median_run(runs))
                every_round.setdefault(key, []).extend(runs)
    finally:
        for server in running.values():
            server.stop()
        if (out / "before-tree").exists():
            remove_worktree(out / "before-tree")
    if "models" not in meta:
        meta["models"] = "?"
    meta["elapsed_s"] = round(time.monotonic() - started)
    meta["load_average_end"] = [round(x, 1) for x in os.getloadavg()]

    report = render(meta, inproc, results, budgets, args.users)
    report += f"\nChart: latency.png. Elapsed {meta['elapsed_s']} s.\n"
    (out / "report.md").write_text(report)
    (out / "results.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "inprocess": inproc,
                "served": {k: [asdict(m) for m in v] for k, v in results.items()},
                "rounds": {k: [asdict(m) for m in v] for k, v in every_round.items()},
            },
            indent=2,
        )
    )
    if results:
        chart(results, budgets, out / "latency.png")
    print()
    print(report)
    print(f"written: {out}/report.md, results.json, latency.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
