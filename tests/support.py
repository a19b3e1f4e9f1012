"""Test support shared by conftest and test modules: the isolated BentoML home, the training CLI,
and a real `bentoml serve` subprocess. Imported once (as tests.support), so the home is set once.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOME = Path(os.environ.get("TESTS_BENTOML_HOME") or tempfile.mkdtemp(prefix="bentoml-home-"))
os.environ["TESTS_BENTOML_HOME"] = str(HOME)
os.environ["BENTOML_HOME"] = str(HOME)
os.environ["BENTOML_DO_NOT_TRACK"] = "true"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ADMIN_TOKEN = "test-admin-token"


def run_training(
    *args: str, home: Path = HOME, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run the real CLI (`python -m training ...`) against a BentoML home."""
    env = {**os.environ, "BENTOML_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real `bentoml serve` subprocess (the router graph by default) on a loopback port."""

    def __init__(
        self,
        env: dict[str, str],
        flags: dict | None = None,
        workdir: Path | None = None,
        target: str = "service:Router",
    ):
        self.target = target  # a service ("service:Classic") or a built Bento tag
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="serve-"))
        self.flags_path = self.workdir / "flags.yaml"
        if flags is not None:
            import yaml

            self.flags_path.write_text(yaml.safe_dump(flags))
        elif (
            not self.flags_path.exists()
        ):  # a restart in the same workdir keeps its flags and state
            shutil.copy(ROOT / "config" / "flags.yaml", self.flags_path)
        self.log_path = self.workdir / "serve.log"
        # Each server gets its own BentoML home (the store's models and bentos linked in): `bentoml
        # serve` clears $BENTOML_HOME/prometheus_multiproc_dir at start, which would wipe the metrics
        # of another server running on the same home.
        own_home = self.workdir / "bentoml-home"
        if "BENTOML_HOME" not in env and not own_home.exists():
            own_home.mkdir()
            for part in ("models", "bentos"):
                (HOME / part).mkdir(exist_ok=True)
                (own_home / part).symlink_to(HOME / part)
        self.env = {
            **os.environ,
            "SERVING_FLAGS_PATH": str(self.flags_path),
            "SERVING_ADMIN_TOKEN": ADMIN_TOKEN,
            "SERVING_HEALTH_POLL_S": "0.5",
            "SERVING_FLAGS_POLL_S": "0.2",
            "SERVING_STATE_URL": f"sqlite:///{self.workdir / 'state.db'}",
            "BENTOML_HOME": str(own_home),
            **env,
        }
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> Server:
        import httpx

        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bentoml",
                "serve",
                self.target,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"bentoml serve exited with {self.process.returncode}:\n{self.log()[-4000:]}"
                )
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log()[-4000:]}")

    def wait_until(self, predicate, timeout: float = 20, interval: float = 0.2) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval)
        return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        from loadtests.server import stop_server

        stop_server(self.process, timeout=20)


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
        self.dir = Path(tempfile.mkdtemp(prefix="pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        port = free_port()
        data = self.dir / "data"
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
            "-o",
            f"-p {port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
        )
        self._as_postgres(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(port), "serving")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/serving"
        return self.url

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


def clone_version(tag: str, corrupt: bool = False) -> str:
    """A new stored version of the model `tag` with the same files (or a broken weights/estimator file)."""
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
