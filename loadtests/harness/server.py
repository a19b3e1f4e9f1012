"""Start and stop a server under test: `bentoml serve service:Router`, or any command with /readyz.

ServerProcess never touches this process's environment and serves any command with /readyz (the
FastAPI and MLServer baselines too); tests/support.py's Server builds on it for the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from loadtests.harness.common import ROOT, bentoml_home, free_port, parse_env_pairs, temp_dir
from loadtests.harness.process import stop_server, tree_cpu_seconds


def isolated_home(
    path: Path, store: str | os.PathLike[str] | None = None, parts: tuple[str, ...] = ("models",)
) -> Path:
    """A BentoML home of its own whose `models` (and any other of `parts`, e.g. "bentos") are the
    real store's (symlinks; the store is `store`, else $BENTOML_HOME, else ~/bentoml).

    `bentoml serve` wipes and reuses `$BENTOML_HOME/prometheus_multiproc_dir`, so two servers on
    one home clobber each other's metrics (and read each other's samples); a home per server keeps
    /metrics right while every server still serves the same stored models."""
    store_home = bentoml_home(store)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for part in parts:
        link = path / part
        if not link.exists():
            (store_home / part).mkdir(parents=True, exist_ok=True)
            link.symlink_to(store_home / part, target_is_directory=True)
    return path.resolve()


def store_has_models(env: dict[str, str]) -> bool:
    """Whether the BentoML home in `env` holds both models (asked in a subprocess: clean import)."""
    code = "import sys; from models import store; sys.exit(0 if store.has_models() else 1)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, timeout=120
    )
    return result.returncode == 0


def train_quick(home: Path, env: dict[str, str]) -> None:
    """`python -m training --quick` into `home` (about a minute on 2 cores)."""
    print(f"training quick models into {home} ...", flush=True)
    result = subprocess.run(
        [sys.executable, "-m", "training", "--quick"],
        cwd=ROOT,
        env={**env, "BENTOML_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if result.returncode != 0:
        raise RuntimeError(f"training failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def use_model_store(
    env: dict[str, str], bentoml_home: Path | None, train: bool, prefix: str
) -> bool:
    """Point `env` at a store holding both models: `bentoml_home`, else the default one, else a
    quick-trained one when `train`; False (a message printed) when there is none to use."""
    if bentoml_home:
        env["BENTOML_HOME"] = str(Path(bentoml_home).resolve())
    if store_has_models(env):
        return True
    if not train:
        print(
            "no classic/ensemble models in the store: pass --bentoml-home, "
            "train (python -m training), or add --train-quick",
            file=sys.stderr,
        )
        return False
    home = temp_dir(prefix)
    train_quick(home, env)
    env["BENTOML_HOME"] = str(home)
    return True


def bentoml_serve_command(target: str, port: int) -> list[str]:
    """`bentoml serve TARGET` on 127.0.0.1:port (a service such as "service:Router" or a Bento tag),
    run by this interpreter."""
    return [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


class ServerProcess:
    """A subprocess serving HTTP on 127.0.0.1:port, ready when GET /readyz answers 200; `models` are
    the ones /api/models must report ready (wait_models): both for our graph, just the ensemble for
    MLServer. Started in a session of its own; stop() ends its whole process tree."""

    stop_timeout: float = 30
    """Seconds stop() gives the server to shut down gracefully before SIGKILL."""

    def __init__(
        self,
        command: list[str],
        port: int,
        env: dict[str, str],
        log_path: Path,
        name: str = "server",
        models: tuple[str, ...] = ("classic", "ensemble"),
    ):
        self.command, self.port, self.env, self.log_path, self.name = (
            command,
            port,
            env,
            Path(log_path),
            name,
        )
        self.models = tuple(models)
        self.url = f"http://127.0.0.1:{port}"
        self.cwd = ROOT
        """Where the command runs (another checkout serves another version of the code)."""
        self.process: subprocess.Popen | None = None

    @classmethod
    def bentoml(
        cls,
        workdir: Path,
        env: dict[str, str] | None = None,
        flags: Path | None = None,
        port: int | None = None,
        name: str = "bentoml",
        service: str = "service:Router",
    ) -> ServerProcess:
        """`bentoml serve service:Router` with its own copy of the flag file, its own state store
        and its own BentoML home over the shared model store (admin writes, rollout state and
        Prometheus files stay in workdir; `env` may override the state store; env["BENTOML_HOME"]
        names the store)."""
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        flags_copy = workdir / f"{name}-flags.yaml"
        shutil.copy(flags or ROOT / "config" / "flags.yaml", flags_copy)
        port = port or free_port()
        env = dict(env or {})
        env["BENTOML_HOME"] = str(isolated_home(workdir / f"{name}-home", env.get("BENTOML_HOME")))
        full_env = {
            **os.environ,
            "BENTOML_DO_NOT_TRACK": "true",
            "SERVING_FLAGS_PATH": str(flags_copy),
            # its own state store: the default (var/state.db) would be shared with every other
            # server started from this checkout (rollout state, decisions, SQLite locks)
            "SERVING_STATE_URL": f"sqlite:///{workdir.resolve() / (name + '-state.db')}",
            "TF_CPP_MIN_LOG_LEVEL": "3",
            **(env or {}),
        }
        command = bentoml_serve_command(service, port)
        return cls(command, port, full_env, workdir / f"{name}.log", name)

    def start(self, timeout: float = 180) -> ServerProcess:
        """Start the command (its output appended to log_path) and wait until /readyz answers 200;
        RuntimeError (with the log's tail) if it exits first or is not ready within `timeout`."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log()[-3000:]}"
                )
            if self._ready(timeout=2):
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s:\n{self.log()[-3000:]}")

    def start_retrying(self, attempts: int = 3, timeout: float = 180) -> ServerProcess:
        """start(), again if the process exits before it is ready (on a shared machine something
        else may stop it: a clean exit 0 during start-up is a SIGTERM from outside, not a crash of
        ours)."""
        for attempt in range(1, attempts + 1):
            try:
                return self.start(timeout)
            except RuntimeError as exc:
                if attempt == attempts:
                    raise
                print(
                    f"  {self.name} did not start ({str(exc).splitlines()[0]}); retrying",
                    flush=True,
                )
                self.stop()
        raise AssertionError("unreachable")

    def _ready(self, timeout: float) -> bool:
        """GET /readyz answers 200."""
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=timeout) as response:  # noqa: S310
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def alive(self) -> bool:
        """Running and answering /readyz with 200."""
        if self.process is None or self.process.poll() is not None:
            return False
        return self._ready(timeout=5)

    def restart(self, timeout: float = 180) -> ServerProcess:
        """Stop what is left of the server and start it again on the same port."""
        self.stop()
        return self.start_retrying(timeout=timeout)

    def wait_until(
        self, predicate: Callable[[], object], timeout: float = 20, interval: float = 0.2
    ) -> bool:
        """Poll `predicate` every `interval` seconds until it is true (True) or `timeout` seconds
        pass (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval)
        return False

    def models_ready(self) -> bool:
        """/api/models says self.models are ready."""
        try:
            with urllib.request.urlopen(f"{self.url}/api/models", timeout=5) as response:  # noqa: S310
                models = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return all((models.get(m) or {}).get("ready") for m in self.models)

    def wait_models(self, timeout: float = 120) -> bool:
        """Wait until /api/models says self.models are ready (the ensemble loads after /readyz)."""
        return self.wait_until(self.models_ready, timeout=timeout, interval=0.5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the server's whole process tree."""
        return tree_cpu_seconds(self.process.pid) if self.process else 0.0

    def stop(self) -> None:
        stop_server(self.process, timeout=self.stop_timeout)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()


# --------------------------------------------------------------------------- --host / --serve
def add_target_arguments(parser: argparse.ArgumentParser) -> argparse._MutuallyExclusiveGroup:
    """--host URL | --serve (the group is returned: a CLI may add other choices to it)."""
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--host", help="URL of a running server (default http://127.0.0.1:3000)")
    target.add_argument(
        "--serve", action="store_true", help="start `bentoml serve service:Router` for the run"
    )
    return target


def add_serve_arguments(parser: argparse.ArgumentParser, train_quick: bool = False) -> None:
    """The options of --serve: --bentoml-home, [--train-quick,] --flags, --server-env."""
    parser.add_argument(
        "--bentoml-home", type=Path, help="with --serve: the model store to serve from"
    )
    if train_quick:
        parser.add_argument(
            "--train-quick",
            action="store_true",
            help="with --serve: if the store has no models, train quick ones into a temp store",
        )
    parser.add_argument(
        "--flags",
        type=Path,
        help="with --serve: flag file to start from (copied; default config/flags.yaml)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --serve: extra server environment, e.g. SERVING_ENSEMBLE_MAX_BATCH_SIZE=1",
    )


def serve_for_run(args: argparse.Namespace, out: Path, models_timeout: float) -> ServerProcess:
    """--serve: `bentoml serve service:Router` for a run (add_serve_arguments' options), its files
    in `out` (server.log, server-flags.yaml, server-home/, server-state.db), started (a few
    attempts) and waited for until /api/models reports both models ready (a warning after
    `models_timeout` seconds). ValueError, saying why, when the store has no models (and
    --train-quick is not given) or a --server-env item is not KEY=VALUE; nothing is started then."""
    overrides: dict[str, str] = {}
    if args.bentoml_home:
        overrides["BENTOML_HOME"] = str(args.bentoml_home.resolve())
    if not store_has_models({**os.environ, **overrides}):
        offers_training = hasattr(args, "train_quick")
        if not getattr(args, "train_quick", False):
            store = overrides.get("BENTOML_HOME", os.environ.get("BENTOML_HOME", "~/bentoml"))
            raise ValueError(
                f"no classic/ensemble models in the store ({store}): train them "
                "(python -m training [--quick]), pass --bentoml-home"
                + (", or add --train-quick" if offers_training else "")
            )
        home = temp_dir("loadtest-home-")
        train_quick(home, {**os.environ, **overrides})
        overrides["BENTOML_HOME"] = str(home)
    overrides.update(parse_env_pairs(args.server_env))
    out.mkdir(parents=True, exist_ok=True)
    server = ServerProcess.bentoml(out, env=overrides, flags=args.flags, name="server")
    print(f"starting bentoml serve on {server.url} (log: {server.log_path}) ...", flush=True)
    server.start_retrying()
    if not server.wait_models(timeout=models_timeout):
        print(
            f"warning: /api/models did not report both models ready within {models_timeout:.0f} s",
            file=sys.stderr,
        )
    return server


def serve_or_explain(
    args: argparse.Namespace, out: Path, models_timeout: float
) -> ServerProcess | None:
    """serve_for_run, or None with the reason printed to stderr (the CLI then exits 2)."""
    try:
        return serve_for_run(args, out, models_timeout=models_timeout)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return None
