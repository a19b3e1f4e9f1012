"""Goodput at 1 vs 2 router workers, and through nginx with 3 replicas vs 1, side by side.

One run on one machine (not in CI; about 6 minutes on 2 cores with the defaults):

    python -m loadtests.replicas [--users 16] [--duration 10s] [--rounds 2] [--only a,b,c,d]
                                 [--model classic|ensemble] [--bentoml-home DIR | --train-quick]

Configurations (every one a `bentoml serve service:Router` graph: router + classic + ensemble):

(a) 1 replica, 1 router worker, direct; state in its own SQLite file;
(b) 1 replica, 2 router workers (SERVING_ROUTER_WORKERS=2: each worker is a replica of its own),
    direct; both workers share one SQLite file;
(c) 1 replica behind nginx (loadtests/nginx.py: round robin, retries), state in PostgreSQL;
(d) 3 replicas behind nginx, each a full graph, sharing one PostgreSQL database.

(c) and (d) get a throwaway PostgreSQL cluster each (Debian's package, on loopback; as the postgres
user when we are root), so that d/c changes only the number of replicas, and each cluster's CPU is
charged to its own configuration. c/a is therefore the cost of the multi-replica deployment shape
for one replica: the nginx hop plus PostgreSQL instead of SQLite (off the hot path but for the
preference reads, once per user per SERVING_PREFERENCE_TTL_S).

Load: the benchmark's closed-loop Locust user (loadtests/bench_locustfile.py: no think time, one
distinct row per request, so no cache hits, and a user id from the 10,000-user population) on
`POST /api/classify` with `X-Model-Preference: classic` (answered in the router process: the router
is what workers and replicas multiply; `--model ensemble` for the ensemble arm), `--users` users for
`--duration` per configuration and round. Every deployment is up at once and the rounds alternate
the order (a b c d, then d c b a, ...), so a busy moment of a shared machine does not land on one
configuration only; a deployment found dead is restarted and measured again (noted).

Reported per configuration (the median over rounds): goodput (successful responses/s), p50/p95/p99,
error %, server CPU per request (every process of the deployment: graphs, nginx, PostgreSQL; as the
benchmark measures it, /proc CPU time over the Locust run divided by the requests counted) with the
nginx and PostgreSQL shares, Locust's CPU; and the ratios b/a, c/a, d/c. Output:
results/replicas-<timestamp>/ (report.md, results.json, runs/, server and nginx logs). Locust runs
on the same cores as the servers: compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from loadtests.benchmark import Measurement, Target, measure_alive, warm_up
from loadtests.common import (
    ROOT,
    exit_on_sigterm,
    free_port,
    git_commit,
    markdown_row,
    parse_duration,
    temp_dir,
)
from loadtests.nginx import Nginx, nginx_binary
from loadtests.server import ServerProcess, descendants, use_model_store

ROUTED_PATH = "/api/classify"


@dataclass(frozen=True)
class Config:
    key: str
    name: str
    label: str
    replicas: int = 1
    workers: int = 1
    nginx: bool = False
    postgres: bool = False

    @property
    def store(self) -> str:
        return "PostgreSQL" if self.postgres else "SQLite"

    @property
    def shape(self) -> str:
        return f"{self.replicas} × {self.workers} worker{'s' if self.workers > 1 else ''}"


CONFIGS = [
    Config("a", "direct-1w", "1 replica, 1 router worker, direct"),
    Config("b", "direct-2w", "1 replica, 2 router workers, direct", workers=2),
    Config("c", "nginx-1", "1 replica behind nginx", nginx=True, postgres=True),
    Config("d", "nginx-3", "3 replicas behind nginx", replicas=3, nginx=True, postgres=True),
]
CONFIG_BY_KEY = {c.key: c for c in CONFIGS}
RATIOS = [  # A, B, what (ratio = A / B)
    ("b", "a", "2 router workers vs 1 (direct, SQLite)"),
    ("c", "a", "behind nginx vs direct (1 replica; PostgreSQL vs SQLite state)"),
    ("d", "c", "3 replicas vs 1 (behind nginx, shared PostgreSQL)"),
]


def parse_only(text: str) -> list[Config]:
    """The configurations named in --only ("a,b,c,d" or their names), in the canonical order."""
    by_name = {**CONFIG_BY_KEY, **{c.name: c for c in CONFIGS}}
    wanted = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not wanted:
        raise ValueError("--only: name at least one configuration (a, b, c, d)")
    unknown = [w for w in wanted if w not in by_name]
    if unknown:
        raise ValueError(
            f"--only: unknown configuration(s) {unknown}; choose from "
            + ", ".join(f"{c.key} ({c.name})" for c in CONFIGS)
        )
    keys = {by_name[w].key for w in wanted}
    return [c for c in CONFIGS if c.key in keys]


def round_order(configs: list[Config], round_index: int) -> list[Config]:
    """a b c d in even rounds, d c b a in odd ones (ABBA: a slow drift of the machine's load
    lands on every configuration alike)."""
    return list(configs) if round_index % 2 == 0 else list(reversed(configs))


# --------------------------------------------------------------------------- PostgreSQL
def postgres_binaries() -> Path | None:
    """Debian's PostgreSQL binaries (the newest version installed), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def postgres_available() -> str | None:
    """None when a throwaway PostgreSQL can be started here, else why not."""
    if postgres_binaries() is None:
        return "PostgreSQL is not installed (/usr/lib/postgresql/*/bin)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser (PostgreSQL refuses to run as root)"
    return None


class Postgres:
    """A throwaway PostgreSQL cluster on a loopback port holding one database, `serving`; run as
    the postgres user when we are root (PostgreSQL refuses root), else as ourselves. Its data dir
    is a temp dir, removed by stop()."""

    def __init__(self) -> None:
        self.bin = postgres_binaries()
        self.dir: Path | None = None
        self.port = 0
        self.url: str | None = None

    def _run(self, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        result = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {result.stdout}{result.stderr}")

    def start(self) -> str:
        if self.bin is None:
            raise RuntimeError(postgres_available())
        self.dir = temp_dir("replicas-pg-")
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        data = self.dir / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
            "-o",
            options,
        )
        self._run(
            str(self.bin / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "serving",
        )
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/serving"
        return self.url

    def pid(self) -> int | None:
        """The postmaster's pid (its backends are its children)."""
        try:
            return int((self.dir / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError, TypeError):
            return None

    def cpu_seconds(self) -> float:
        from loadtests.server import tree_cpu_seconds

        pid = self.pid()
        return tree_cpu_seconds(pid) if pid else 0.0

    def stop(self) -> None:
        if self.dir is None:
            return
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "stop")
        except (RuntimeError, subprocess.SubprocessError) as exc:
            print(f"  PostgreSQL stop: {exc}", file=sys.stderr)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None


# --------------------------------------------------------------------------- deployments
class Deployment:
    """One configuration's processes: `replicas` graphs (ServerProcess.bentoml), nginx in front if
    asked, a PostgreSQL of its own if asked. Looks like a ServerProcess to the benchmark's
    measure()/measure_alive(): url (the front), name, process, alive(), restart(), wait_models(),
    cpu_seconds() (every process of the deployment)."""

    def __init__(self, config: Config, out: Path, base_env: dict[str, str], admin_token: str):
        self.config, self.out, self.base_env = config, out, base_env
        self.admin_token = admin_token
        self.name = f"({config.key}) {config.name}"
        self.servers: list[ServerProcess] = []
        self.nginx: Nginx | None = None
        self.postgres: Postgres | None = Postgres() if config.postgres else None
        self.seen: dict[str, Any] = {}

    # -- what measure() uses
    @property
    def url(self) -> str:
        return self.nginx.url if self.nginx else self.servers[0].url

    @property
    def process(self) -> subprocess.Popen | None:
        return self.servers[0].process if self.servers else None

    def cpu_parts(self) -> dict[str, float]:
        """CPU seconds so far: the graphs', nginx's and PostgreSQL's."""
        return {
            "graphs": sum(s.cpu_seconds() for s in self.servers),
            "nginx": self.nginx.cpu_seconds() if self.nginx else 0.0,
            "postgres": self.postgres.cpu_seconds() if self.postgres else 0.0,
        }

    def cpu_seconds(self) -> float:
        return sum(self.cpu_parts().values())

    def alive(self) -> bool:
        return (
            bool(self.servers)
            and all(s.alive() for s in self.servers)
            and (self.nginx is None or self.nginx.alive())
        )

    def wait_models(self, timeout: float = 120) -> bool:
        return all(s.wait_models(timeout) for s in self.servers)

    def restart(self, timeout: float = 300) -> Deployment:
        """Restart what died: a dead graph (same port: nginx keeps its upstreams), a dead nginx."""
        for server in self.servers:
            if not server.alive():
                server.restart(timeout=timeout)
        if self.nginx is not None and not self.nginx.alive():
            self.nginx.stop()
            self.nginx.start()
        return self

    # -- life cycle
    def start(self, timeout: float = 300) -> Deployment:
        config = self.config
        env = {
            k: v
            for k, v in self.base_env.items()
            if k in ("BENTOML_HOME", "BENTOML_DO_NOT_TRACK", "TF_CPP_MIN_LOG_LEVEL")
        }
        env["SERVING_ROUTER_WORKERS"] = str(config.workers)
        env["SERVING_ADMIN_TOKEN"] = self.admin_token
        if self.postgres is not None:
            env["SERVING_STATE_URL"] = self.postgres.start()
        for i in range(1, config.replicas + 1):
            name = f"{config.key}-{config.name}" + (f"-r{i}" if config.replicas > 1 else "")
            replica_env = dict(env)
            if config.workers == 1:  # with several workers, each names itself (hostname-pid)
                replica_env["SERVING_REPLICA_ID"] = f"{config.key}-r{i}"
            self.servers.append(ServerProcess.bentoml(self.out, env=replica_env, name=name))
        errors: list[BaseException] = []

        def start_one(server: ServerProcess) -> None:
            try:
                server.start_retrying(timeout=timeout)
                if not server.wait_models(timeout=180):
                    print(f"  {server.name}: a model is not ready; see {server.log_path}")
            except BaseException as exc:  # re-raised below
                errors.append(exc)

        threads = [threading.Thread(target=start_one, args=(s,)) for s in self.servers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        if config.nginx:
            upstreams = [f"127.0.0.1:{s.port}" for s in self.servers]
            self.nginx = Nginx(upstreams, workdir=self.out / f"{config.key}-nginx").start()
        return self

    def processes(self) -> dict[str, int]:
        """How many processes each part runs (the graphs' trees, nginx master + workers)."""
        out = {"graphs": sum(len(descendants(s.process.pid)) for s in self.servers if s.process)}
        if self.nginx and self.nginx.process:
            out["nginx"] = len(descendants(self.nginx.process.pid))
        if self.postgres and self.postgres.pid():
            out["postgres"] = len(descendants(self.postgres.pid()))
        return out

    def probe_replicas(self, calls: int) -> dict[str, Any]:
        """GET /api/status `calls` times through the front: which replicas answered, which one
        leads the rollout controller (the lease holder in the shared store)."""
        answered: dict[str, int] = {}
        leaders: set[str] = set()
        for _ in range(calls):
            request = urllib.request.Request(
                self.url + "/api/status", headers={"Authorization": f"Bearer {self.admin_token}"}
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                    status = json.loads(response.read())
            except (urllib.error.URLError, OSError, ValueError) as exc:
                answered[f"error: {type(exc).__name__}"] = (
                    answered.get(f"error: {type(exc).__name__}", 0) + 1
                )
                continue
            replica = str(status.get("replica"))
            answered[replica] = answered.get(replica, 0) + 1
            leader = (status.get("controller") or {}).get("leader")
            if leader:
                leaders.add(str(leader))
        return {"replicas_answering": answered, "leaders": sorted(leaders)}

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for server in self.servers:
            server.stop()
        if self.postgres is not None:
            self.postgres.stop()


# --------------------------------------------------------------------------- summary and report
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


def _f(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a and b else "–"


def render(meta: dict[str, Any], runs: dict[str, list[Run]]) -> str:
    """The markdown report: the side-by-side table, the ratios, every run."""
    summary = {key: summarize(r) for key, r in runs.items() if r}
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
    if summary:
        lines += [
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
        ratio_rows = [(a, b, what) for a, b, what in RATIOS if a in summary and b in summary]
        if ratio_rows:
            lines += [
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
    if meta.get("deployments"):
        lines += [
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
    lines += [
        "",
        "## Every run",
        "",
        markdown_row(
            "configuration",
            "round",
            "s",
            "requests",
            "goodput",
            "p50",
            "p95",
            "p99",
            "errors",
            "server CPU ms/req",
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
                    f"{m.seconds:.0f}",
                    m.requests,
                    f"{m.goodput:,.1f}",
                    _f(m.p50_ms),
                    _f(m.p95_ms),
                    _f(m.p99_ms),
                    f"{m.error_rate:.2%}",
                    _f(m.server_cpu_ms_per_req, 2),
                    " / ".join(_f(cpu.get(p), 2) for p in ("graphs", "nginx", "postgres")),
                    "; ".join(m.notes),
                )
            )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.replicas",
        description=__doc__.splitlines()[0],
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()  # run the finally block: stop every server, nginx and PostgreSQL
    started = time.monotonic()
    env = dict(os.environ, BENTOML_DO_NOT_TRACK="true", TF_CPP_MIN_LOG_LEVEL="3")
    if not use_model_store(env, args.bentoml_home, args.train_quick, "replicas-home-"):
        return 2

    configs, skipped = list(args.configs), {}
    why_not = postgres_available() or (None if nginx_binary() else "nginx is not installed")
    if why_not:
        for config in [c for c in configs if c.nginx or c.postgres]:
            skipped[config.key] = why_not
        configs = [c for c in configs if c.key not in skipped]
        print(f"note: skipping {', '.join(skipped)}: {why_not}", flush=True)
    if not configs:
        print("nothing to run", file=sys.stderr)
        return 2

    header = f"X-Model-Preference: {args.model}"
    out = (args.results / f"replicas-{datetime.now():%Y%m%d-%H%M%S}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    graphs = sum(c.replicas for c in configs)
    estimate = 60 * graphs + args.rounds * len(configs) * (args.duration_s + 10)
    print(
        f"replicas -> {out}\n  configurations {', '.join(c.key for c in configs)}; "
        f"{args.users} users, {args.duration_s:.0f}s each, {args.rounds} round(s); "
        f"about {estimate / 60:.1f} min on 2 busy cores",
        flush=True,
    )
    meta: dict[str, Any] = {
        "started": datetime.now().isoformat(timespec="seconds"),
        "command": "python -m loadtests.replicas "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}",
        "users": args.users,
        "duration_s": args.duration_s,
        "rounds": args.rounds,
        "header": header,
        "bentoml_home": env.get("BENTOML_HOME", "~/bentoml"),
        "commit": git_commit(),
        "load_average_start": [round(x, 1) for x in os.getloadavg()],
        "skipped": skipped,
        "deployments": {},
    }
    admin_token = secrets.token_urlsafe(24)
    deployments: dict[str, Deployment] = {}
    runs: dict[str, list[Run]] = {c.key: [] for c in configs}
    try:
        for config in configs:  # all up at once: the rounds then alternate between them
            print(f"starting ({config.key}) {config.label} ...", flush=True)
            t0 = time.monotonic()
            deployment = deployments[config.key] = Deployment(config, out, env, admin_token)
            deployment.start()
            print(f"  ready in {time.monotonic() - t0:.0f}s at {deployment.url}", flush=True)
        for key, deployment in deployments.items():
            target = Target(key, deployment.name, key, ROUTED_PATH, args.model, header)
            warm_up(deployment.url, target, n=40 * deployment.config.replicas)
            meta["deployments"][key] = {
                "processes": deployment.processes(),
                **deployment.probe_replicas(calls=4 * deployment.config.replicas),
            }
            print(f"  ({key}) {meta['deployments'][key]}", flush=True)
        if "models" not in meta:
            from loadtests.payloads import fetch_models

            served = fetch_models(next(iter(deployments.values())).url, timeout=30)
            meta["models"] = ", ".join(
                str(v.get("tag")) for v in served.values() if isinstance(v, dict) and v.get("tag")
            )
        for round_index in range(args.rounds):
            for config in round_order(configs, round_index):
                deployment = deployments[config.key]
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
                    part: round((cpu1[part] - cpu0[part]) * 1e3 / m.requests, 2)
                    if m.requests
                    else None
                    for part in cpu0
                }
                runs[config.key].append(Run(config.key, round_index + 1, m, parts))
                print(
                    f"  round {round_index + 1} ({config.key}) {config.name:<10} "
                    f"{m.goodput:8.1f}/s  p50 {_f(m.p50_ms):>4}  p95 {_f(m.p95_ms):>4}  "
                    f"p99 {_f(m.p99_ms):>5} ms  errors {m.error_rate:.2%}  "
                    f"server CPU {_f(m.server_cpu_ms_per_req, 2)} ms/req {parts}"
                    + (f"  {m.notes}" if m.notes else ""),
                    flush=True,
                )
    finally:
        for deployment in deployments.values():
            deployment.stop()
    meta["elapsed_s"] = round(time.monotonic() - started)
    meta["load_average_end"] = [round(x, 1) for x in os.getloadavg()]

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
    print()
    print(report)
    print(f"written: {out}/report.md, results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
