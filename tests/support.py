"""Test support shared by conftest and test modules: the isolated BentoML home, the training CLI,
and a real `bentoml serve` subprocess. Imported once (as tests.support), so the home is set once.
"""

from __future__ import annotations

import os
import shutil
import signal
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


def run_training(*args: str, home: Path = HOME, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real CLI (`python -m training ...`) against a BentoML home."""
    env = {**os.environ, "BENTOML_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "training", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real `bentoml serve` subprocess (the router graph by default) on a loopback port."""

    def __init__(self, env: dict[str, str], flags: dict | None = None, workdir: Path | None = None,
                 target: str = "service:Router"):
        self.target = target  # a service ("service:Classic") or a built Bento tag
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="serve-"))
        self.flags_path = self.workdir / "flags.yaml"
        if flags is not None:
            import yaml

            self.flags_path.write_text(yaml.safe_dump(flags))
        elif not self.flags_path.exists():  # a restart in the same workdir keeps its flags and state
            shutil.copy(ROOT / "config" / "flags.yaml", self.flags_path)
        self.log_path = self.workdir / "serve.log"
        self.env = {
            **os.environ,
            "SERVING_FLAGS_PATH": str(self.flags_path),
            "SERVING_ADMIN_TOKEN": ADMIN_TOKEN,
            "SERVING_HEALTH_POLL_S": "0.5",
            "SERVING_FLAGS_POLL_S": "0.2",
            "SERVING_STATE_URL": f"sqlite:///{self.workdir / 'state.db'}",
            **env,
        }
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> Server:
        import httpx

        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", self.target, "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"bentoml serve exited with {self.process.returncode}:\n{self.log()[-4000:]}")
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
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


