"""Starting the benchmark's servers: our graph (fast paths, native members, BentoML's API with
batching on and off, the code at --before from a git worktree) and the baselines (FastAPI,
MLServer, LitServe, Ray Serve; loadtests/baselines/), each a ServerProcess."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from loadtests.benchmark.plan import BASELINE_VENVS
from loadtests.harness.common import ROOT, free_port, git_commit
from loadtests.harness.process import descendants
from loadtests.harness.server import ServerProcess
from models.fastpath import NATIVE_ENV

MLSERVER_VENV = ROOT / ".venv-mlserver"
BEFORE_TREE = "before-tree"
"""The --before worktree's directory inside the run's output."""


def tree_env(server: ServerProcess, var: str) -> list[str | None]:
    """`var` as each process of the server's tree sees it (None: unset or unreadable)."""

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


def make_server(
    name: str, out: Path, env: dict[str, str], before_tree: Path | None = None
) -> ServerProcess:
    """The (not yet started) server of that name (SERVERS)."""
    native = name.endswith("-native")
    server_env = dict(env, **{NATIVE_ENV: "1" if native else ""})
    port = free_port()
    home = ["--bentoml-home", env["BENTOML_HOME"]] if env.get("BENTOML_HOME") else []
    if name.startswith("fastapi"):
        command = [sys.executable, "-m", "loadtests.baselines.fastapi_app", "--port", str(port)]
        return ServerProcess(command, port, server_env, out / f"{name}.log", name)
    if name.startswith("mlserver"):  # .venv-mlserver's `mlserver start`, the ensemble only
        command = [sys.executable, "-m", "loadtests.baselines.mlserver.launch", "--port", str(port)]
        command += ["--workdir", str(out / name)]
        return ServerProcess(
            command, port, server_env, out / f"{name}.log", name, models=("ensemble",)
        )
    if name in ("litserve-native", "rayserve-native"):  # their own venvs (BASELINE_VENVS)
        from loadtests.baselines.mlserver.launch import server_env as baseline_env

        venv, _ = BASELINE_VENVS[name]
        module = (
            "loadtests.baselines.litserve.app"
            if name.startswith("lit")
            else "loadtests.baselines.rayserve.app"
        )
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
        service = "loadtests.baselines.nobatch_service:Router"
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


def start_servers(
    names: list[str], out: Path, env: dict[str, str], before: str | None, meta: dict[str, Any]
) -> dict[str, ServerProcess]:
    """Start every server in `names` (all up at once: the levels then alternate between them, so a
    busy moment of a shared machine does not land on one configuration only) and record in `meta`
    the --before commit and where SERVING_NATIVE_MEMBERS reached. Servers started before a failure
    are in the returned dict's place: the caller stops `running` in its finally block."""
    running: dict[str, ServerProcess] = {}
    try:
        for name in names:
            _start_one(name, out, env, before, meta, running)
    except BaseException:
        stop_servers(running, out)
        raise
    return running


def _start_one(
    name: str,
    out: Path,
    env: dict[str, str],
    before: str | None,
    meta: dict[str, Any],
    running: dict[str, ServerProcess],
) -> None:
    before_tree = None
    if name == "bentoml-before" and before:
        before_tree = worktree(before, out / BEFORE_TREE)
        meta["before_commit"] = git_commit(before_tree)
    server = make_server(name, out, env, before_tree)
    print(f"starting {name} ...", flush=True)
    t0 = time.monotonic()
    running[name] = server.start_retrying()
    if not server.wait_models(120):
        print(f"  {name}: a model is not ready; see {server.log_path}", flush=True)
    print(f"  ready in {time.monotonic() - t0:.0f}s at {server.url}", flush=True)
    if name.startswith("bentoml"):  # the variable must reach the ensemble worker (a grandchild)
        seen = tree_env(server, NATIVE_ENV)
        meta.setdefault("native_env", {})[name] = (
            f"{NATIVE_ENV}={server.env.get(NATIVE_ENV)!r} in "
            f"{seen.count(server.env.get(NATIVE_ENV))}/{len(seen)} processes"
        )
        print(f"  {meta['native_env'][name]}", flush=True)


def stop_servers(running: dict[str, ServerProcess], out: Path) -> None:
    """Stop every server and remove the --before worktree."""
    for server in running.values():
        server.stop()
    if (out / BEFORE_TREE).exists():
        remove_worktree(out / BEFORE_TREE)
