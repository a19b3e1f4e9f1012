"""Test support shared by conftest and test modules: the isolated BentoML home, the training CLI,
a real `bentoml serve` subprocess (on loadtests.harness.server.ServerProcess), a throwaway
PostgreSQL (loadtests.harness.postgres) and nginx in front of replicas (loadtests.harness.nginx,
re-exported).
Imported once (as tests.support), so the home is set once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NoReturn

import pytest

from loadtests.harness.common import ROOT, free_port, temp_dir
from loadtests.harness.nginx import Nginx  # noqa: F401 (tests import it from here)
from loadtests.harness.postgres import Postgres as HarnessPostgres
from loadtests.harness.server import ServerProcess, bentoml_serve_command, isolated_home

HOME = Path(os.environ.get("TESTS_BENTOML_HOME") or temp_dir("bentoml-home-"))
os.environ["TESTS_BENTOML_HOME"] = str(HOME)
os.environ["BENTOML_HOME"] = str(HOME)
os.environ["BENTOML_DO_NOT_TRACK"] = "true"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ADMIN_TOKEN = "test-admin-token"


def require_infrastructure(reason: str) -> NoReturn:
    """A test whose infrastructure (PostgreSQL, nginx, Chromium, Docker) is missing: skipped on a
    developer's machine, FAILED under CI (`CI` set and not "false"/"0"), where .ci/run installs it
    all, so a broken set-up can never pass as a run of skipped tests."""
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"missing infrastructure under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def run_module(
    module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run `python -m MODULE ARGS...` from the repository's root, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_training(
    *args: str, home: Path = HOME, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run the real CLI (`python -m training ...`) against a BentoML home."""
    return run_module(
        "training", *args, env={**os.environ, "BENTOML_HOME": str(home)}, timeout=timeout
    )


class Server(ServerProcess):
    """A real `bentoml serve` subprocess (the router graph by default) on a loopback port, set up
    for the tests: its workdir holds flags.yaml (from `flags`, else config/flags.yaml; a server
    started again on the same workdir keeps its flags and state), state.db, serve.log and its own
    BentoML home over the test store's models and bentos (unless `env` names a BENTOML_HOME).
    Starting, readiness, stop, restart and wait_until are
    loadtests.harness.server.ServerProcess's."""

    stop_timeout = 20

    def __init__(
        self,
        env: dict[str, str],
        flags: dict | None = None,
        workdir: Path | None = None,
        target: str = "service:Router",
    ):
        self.target = target  # a service ("service:Classic") or a built Bento tag
        self.workdir = workdir or temp_dir("serve-")
        self.flags_path = self.workdir / "flags.yaml"
        if flags is not None:
            import yaml

            self.flags_path.write_text(yaml.safe_dump(flags))
        elif not self.flags_path.exists():
            shutil.copy(ROOT / "config" / "flags.yaml", self.flags_path)
        # Each server gets its own BentoML home (the store's models and bentos linked in): `bentoml
        # serve` clears $BENTOML_HOME/prometheus_multiproc_dir at start, which would wipe the
        # metrics of another server running on the same home.
        own_home = self.workdir / "bentoml-home"
        if "BENTOML_HOME" not in env:
            own_home = isolated_home(own_home, HOME, parts=("models", "bentos"))
        port = free_port()
        full_env = {
            **os.environ,
            "SERVING_FLAGS_PATH": str(self.flags_path),
            "SERVING_ADMIN_TOKEN": ADMIN_TOKEN,
            "SERVING_HEALTH_POLL_S": "0.5",
            "SERVING_FLAGS_POLL_S": "0.2",
            "SERVING_STATE_URL": f"sqlite:///{self.workdir / 'state.db'}",
            "BENTOML_HOME": str(own_home),
            **env,
        }
        super().__init__(
            bentoml_serve_command(target, port),
            port,
            full_env,
            self.workdir / "serve.log",
            name="bentoml serve",
        )

    def start(self, timeout: float = 90) -> Server:
        super().start(timeout)
        return self


class Postgres(HarnessPostgres):
    """The test suite's throwaway PostgreSQL (loadtests.harness.postgres): fsync off and an
    immediate stop, for speed; used when TEST_POSTGRES_URL is not already given."""

    def __init__(self) -> None:
        super().__init__(durable=False)


class WebhookReceiver:
    """A local HTTP receiver for the decision webhook on a free loopback port: keeps every JSON body
    it is sent."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def actions(self) -> list[str]:
        return [m["decision"]["action"] for m in self.received]

    def close(self) -> None:
        self.server.shutdown()


def clone_version(tag: str, corrupt: bool = False) -> str:
    """A new stored version of the model `tag` with the same files (or a broken weights/estimator
    file)."""
    import bentoml

    source = bentoml.models.get(tag)
    name = source.tag.name
    with bentoml.models.create(
        name, labels={**source.info.labels, "clone": "true"}, metadata=source.info.metadata
    ) as target:
        for item in Path(source.path).iterdir():
            if item.name == "model.yaml":
                continue
            copy = shutil.copytree if item.is_dir() else shutil.copy2
            copy(item, Path(target.path) / item.name)
        if corrupt:
            broken = Path(target.path) / (
                "weights.json" if name == "ensemble" else "estimator.joblib"
            )
            broken.write_text("{not valid")
    return target.tag.version
