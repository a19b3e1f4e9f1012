"""Test support shared by conftest and test modules: the isolated BentoML home, the training CLI,
a real `bentoml serve` subprocess (on loadtests.server.ServerProcess), a throwaway PostgreSQL and
nginx in front of replicas (loadtests.nginx.Nginx, re-exported).
Imported once (as tests.support), so the home is set once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from loadtests.common import ROOT, free_port, temp_dir
from loadtests.nginx import Nginx  # noqa: F401 (tests import it from here)
from loadtests.server import ServerProcess, bentoml_serve_command, isolated_home

HOME = Path(os.environ.get("TESTS_BENTOML_HOME") or temp_dir("bentoml-home-"))
os.environ["TESTS_BENTOML_HOME"] = str(HOME)
os.environ["BENTOML_HOME"] = str(HOME)
os.environ["BENTOML_DO_NOT_TRACK"] = "true"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ADMIN_TOKEN = "test-admin-token"


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
    Starting, readiness, stop, restart and wait_until are loadtests.server.ServerProcess's."""

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


class Postgres:
    """A throwaway PostgreSQL cluster on a loopback port (Debian's postgresql package), run as the
    postgres user; used when TEST_POSTGRES_URL is not already given."""

    def __init__(self):
        import glob

        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        self.bin = Path(binaries[-1]) if binaries else None
        self.dir: Path | None = None
        self.url: str | None = None

    @property
    def available(self) -> bool:
        return self.bin is not None and shutil.which("runuser") is not None

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=120
        )

    def start(self) -> str:
        self.dir = temp_dir("pg-")
        shutil.chown(self.dir, "postgres", "postgres")
        port = free_port()
        data = self.dir / "data"
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        self.port = port
        self._pg_ctl("-l", str(self.dir / "log"), "-w", "start", "-o", self._options())
        self._as_postgres(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(port), "serving")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/serving"
        return self.url

    def _options(self) -> str:
        return f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"

    def _pg_ctl(self, *args: str) -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), *args)

    def pause(self) -> None:
        """Stop the server (connections drop at once), keeping its data for `resume`."""
        self._pg_ctl("-m", "fast", "-w", "stop")

    def resume(self) -> None:
        self._pg_ctl("-l", str(self.dir / "log"), "-w", "start", "-o", self._options())

    def create_database(self) -> str:
        """A fresh, empty database on this cluster; its URL."""
        name = f"t_{uuid.uuid4().hex[:10]}"
        self._as_postgres(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), name)
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def stop(self) -> None:
        if self.dir is not None:
            subprocess.run(
                [
                    "runuser",
                    "-u",
                    "postgres",
                    "--",
                    str(self.bin / "pg_ctl"),
                    "-D",
                    str(self.dir / "data"),
                    "-m",
                    "immediate",
                    "stop",
                ],
                capture_output=True,
                timeout=60,
            )
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


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
