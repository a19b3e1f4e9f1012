"""The replica benchmark's configurations and their deployments: `replicas` router graphs
(`bentoml serve service:Router`), nginx in front if asked, a PostgreSQL of their own if asked."""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.harness.nginx import Nginx
from loadtests.harness.postgres import Postgres
from loadtests.harness.process import descendants
from loadtests.harness.server import ServerProcess

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
