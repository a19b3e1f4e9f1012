"""Start MLServer 1.7.1 on the stored ensemble, with adaptive batching (the benchmark's part e).

    python -m loadtests.baselines.mlserver.launch --port 8090 [--bentoml-home DIR]
                                        [--model ensemble:latest] [--workdir DIR]
                                        [--max-batch-size 64] [--max-batch-time 0.02]

Resolves the stored model's directory ($BENTOML_HOME/models/ensemble/<version>/, `latest` naming the
version; BENTOML_HOME defaults to ~/bentoml) without importing bentoml, writes settings.json and
ensemble/model-settings.json into --workdir (default: a new temp dir), and execs
`.venv-mlserver/bin/mlserver start WORKDIR` (create that venv with scripts/mlserver-venv.sh).

Settings: REST on 127.0.0.1:--port; gRPC (MLServer cannot turn it off) on a free port; MLServer's
own Prometheus server off (it would take port 8082; the runtime serves its batch-size counters at
/metrics instead); parallel_workers 0 (the adaptive batcher wraps the custom handler's predict
only in the main process); debug logging off; max_batch_size 64, max_batch_time 0.02 s.
One thread per member library (OMP_NUM_THREADS=1 etc., as our services run them); the model's fast
paths as in our services, unless SERVING_NATIVE_MEMBERS is set in the environment (`1`: native).
Stdlib only (loadtests.harness.common included): runs under either venv, from the repository's root
(`python -m`, as the benchmark starts it: cwd ROOT, so `loadtests` is importable).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from loadtests.harness.common import (
    ROOT,
    bentoml_home,
    free_port,
    temp_dir,
    with_root_on_pythonpath,
)

VENV = ROOT / ".venv-mlserver"
MLSERVER = VENV / "bin" / "mlserver"


def model_dir(home: Path, tag: str) -> Path:
    """$BENTOML_HOME/models/<name>/<version>/ for `name:version` (`latest` read from the store)."""
    name, _, version = tag.partition(":")
    base = home / "models" / name
    if not version or version == "latest":
        latest = base / "latest"
        if not latest.exists():
            raise SystemExit(f"no {name} model in {home} (missing {latest})")
        version = latest.read_text().strip()
    path = base / version
    if not (path / "schema.json").exists():
        raise SystemExit(f"{path} is not a stored {name} model (no schema.json)")
    return path


def write_settings(
    workdir: Path,
    port: int,
    model_path: Path,
    max_batch_size: int,
    max_batch_time: float,
    grpc_port: int | None = None,
    host: str = "127.0.0.1",
) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    settings = {
        "debug": False,
        "host": host,
        "http_port": port,
        "grpc_port": grpc_port or free_port(),
        "metrics_endpoint": None,
        "parallel_workers": 0,
        "load_models_at_startup": True,
        "environments_dir": str(workdir / ".envs"),
        "metrics_dir": str(workdir / ".metrics"),
        "server_name": "mlserver-ensemble-baseline",
    }
    (workdir / "settings.json").write_text(json.dumps(settings, indent=1))
    model = {
        "name": "ensemble",
        "implementation": "loadtests.baselines.mlserver.runtime.EnsembleRuntime",
        "max_batch_size": max_batch_size,
        "max_batch_time": max_batch_time,
        "parameters": {"uri": str(model_path), "version": model_path.name},
    }
    (workdir / "ensemble").mkdir(exist_ok=True)
    (workdir / "ensemble" / "model-settings.json").write_text(json.dumps(model, indent=1))
    return workdir


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = with_root_on_pythonpath(env)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for key in [
        k for k in env if k.startswith("MLSERVER_")
    ]:  # the written settings are the whole config
        env.pop(key)
    return env


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.baselines.mlserver.launch", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--bentoml-home", type=Path, help="model store (default: $BENTOML_HOME or ~/bentoml)"
    )
    parser.add_argument("--model", default="ensemble:latest")
    parser.add_argument(
        "--workdir", type=Path, help="where settings are written (default: a new temp dir)"
    )
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-batch-time", type=float, default=0.02, help="seconds (default 0.02)")
    args = parser.parse_args(argv)

    if not MLSERVER.exists():
        raise SystemExit(f"{MLSERVER} not found: run scripts/mlserver-venv.sh first")
    home = bentoml_home(args.bentoml_home)
    path = model_dir(home, args.model)
    workdir = (args.workdir or temp_dir("mlserver-ensemble-")).resolve()
    write_settings(
        workdir, args.port, path, args.max_batch_size, args.max_batch_time, host=args.host
    )
    print(f"mlserver: {path} on http://{args.host}:{args.port} (settings in {workdir})", flush=True)
    os.chdir(ROOT)
    os.execve(str(MLSERVER), [str(MLSERVER), "start", str(workdir)], server_env())


if __name__ == "__main__":
    main()
