"""Docker for the container tests: the engine (an existing one, or our own started with
deploy/containers/engine.sh), the base image, building the images the way `python -m deploy`
does, and running containers on loopback (host network) with the Container Apps' sizes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support import ROOT

ENGINE = ROOT / "deploy" / "containers" / "engine.sh"
BASE = ROOT / "deploy" / "containers" / "base.sh"
BASE_IMAGE = "python:3.11-slim"
VERSION = "containers"  # the Bentos' version and the images' tag
IMAGES = ("tabular-classic", "tabular-router", "tabular-ensemble", "tabular-serving")
REPORT: dict[str, dict] = {"build_s": {}, "size_mb": {}, "cold_start_s": {}, "steps_s": {}}
REPORT |= {"cold_start_cpu_s": {}, "load_average": {}}
"""Timings and sizes of this run (printed at its end, results/containers.json)."""


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, env=os.environ
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {result.stderr.strip()[-2000:]}")
    return result


def engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return docker("version", timeout=20, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


class Engine:
    """The Docker engine the tests use: $DOCKER_HOST if it answers, else our own dockerd."""

    def __init__(self) -> None:
        self.started_here = False
        self.problem: str | None = None

    def connect(self) -> bool:
        if os.environ.get("DOCKER_HOST") and engine_answers():
            return True
        if os.geteuid() != 0:
            self.problem = "no Docker engine answers and starting one needs root"
            return False
        result = subprocess.run(
            ["bash", str(ENGINE), "start"], capture_output=True, text=True, timeout=600
        )
        line = result.stdout.strip().splitlines()[-1:] or [""]
        if result.returncode != 0 or not line[0].startswith("export DOCKER_HOST="):
            self.problem = f"no Docker engine could be started: {result.stderr.strip()[-500:]}"
            return False
        os.environ["DOCKER_HOST"] = line[0].split("=", 1)[1]
        self.started_here = True
        return engine_answers()

    def stop(self) -> None:
        if self.started_here:
            subprocess.run(["bash", str(ENGINE), "stop"], capture_output=True, timeout=120)


def ensure_base_image() -> str:
    """The stock python:3.11-slim when it can be pulled; else the local stand-in (base.sh)."""
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
        return "present"
    try:
        if docker("pull", BASE_IMAGE, timeout=120, check=False).returncode == 0:
            return "pulled"
    except subprocess.TimeoutExpired:
        pass
    subprocess.run(["bash", str(BASE), BASE_IMAGE], check=True, timeout=1200)
    return "built locally (debootstrap)"


def deploy(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """`python -m deploy ...` against the tests' model store, as CI and users run it."""
    result = subprocess.run(
        [sys.executable, "-m", "deploy", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def image_size(tag: str) -> int:
    return int(docker("image", "inspect", "-f", "{{.Size}}", tag).stdout.strip())


@dataclass
class Container:
    """One `docker run -d --network host` of an image, serving on `port` (BENTOML_PORT)."""

    image: str
    port: int
    env: dict[str, str] = field(default_factory=dict)
    memory: str | None = None  # Container Apps' size, e.g. "0.5Gi"
    id: str = ""
    started_at: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self) -> Container:
        args = ["run", "-d", "--network", "host", "-e", f"BENTOML_PORT={self.port}"]
        for key, value in self.env.items():
            args += ["-e", f"{key}={value}"]
        if self.memory:
            args += ["--memory", self.memory.replace("Gi", "g").replace("Mi", "m")]
        self.started_at = time.perf_counter()
        self.id = docker(*args, self.image).stdout.strip()
        return self

    def wait(self, path: str = "/readyz", timeout: float = 120) -> float:
        """Seconds from `docker run` (or start) until `path` answers 200."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return time.perf_counter() - self.started_at
            except httpx.HTTPError:
                pass
            if not self.running():
                raise AssertionError(f"{self.image} exited:\n{self.logs()[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"{self.image}: {path} not 200 in {timeout} s:\n{self.logs()[-3000:]}")

    def cpu_seconds(self) -> float | None:
        """CPU time the container has used (its cgroup), None where it cannot be read: unlike
        the wall time, it does not grow when the machine is busy with other work."""
        full = docker("inspect", "-f", "{{.Id}}", self.id).stdout.strip()
        for path, scale in (
            (f"/sys/fs/cgroup/cpuacct/docker/{full}/cpuacct.usage", 1e-9),
            (f"/sys/fs/cgroup/docker/{full}/cpu.stat", 1e-6),
            (f"/sys/fs/cgroup/system.slice/docker-{full}.scope/cpu.stat", 1e-6),
        ):
            try:
                text = Path(path).read_text()
            except OSError:
                continue
            if path.endswith("cpu.stat"):
                text = next(line.split()[1] for line in text.splitlines() if "usage_usec" in line)
            return round(int(text) * scale, 1)
        return None

    def running(self) -> bool:
        state = docker("inspect", "-f", "{{.State.Running}}", self.id, check=False).stdout
        return state.strip() == "true"

    def logs(self) -> str:
        result = docker("logs", self.id, check=False)
        return result.stdout + result.stderr

    def kill(self) -> None:
        docker("kill", self.id, check=False)

    def start(self) -> None:
        self.started_at = time.perf_counter()
        docker("start", self.id)

    def remove(self) -> None:
        if self.id:
            docker("rm", "-f", self.id, check=False)


def python_in(image: str, code: str) -> str:
    """Run Python in the image (its venv), not the server."""
    return docker(
        "run", "--rm", "--network", "none", "--entrypoint", "/app/.venv/bin/python", image,
        "-c", code,
    ).stdout.strip()  # fmt: skip


def layers_from_cache(build_log: str) -> tuple[int, int]:
    """(steps that used the cache, steps in all) of a classic-builder log."""
    steps = build_log.count("Step ")
    return build_log.count("Using cache"), steps


def repo_path(*parts: str) -> Path:
    return ROOT.joinpath(*parts)
