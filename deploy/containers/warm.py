"""Build-time warm-up of a Bento image (deploy/containers/Dockerfile.template).

`warm.py libraries` (cached with the dependency layers) compiles the server machinery of `bentoml
serve` and imports the libraries the service uses; `warm.py app` (after the Bento's code) imports
the service module and loads the Bento's models. As root, so that Python writes the bytecode of
what the server imports into the image. The site-packages are root-owned, so the
server (user bentoml) could not write it at run time: without it every cold start compiles the
same modules again (about 4x slower start-up; compiling all of site-packages instead adds ~150 MB).

Runs with the image's Python, stdlib only plus what the image installed; a failure here is
reported and the build goes on (the image then only starts slower).
"""

from __future__ import annotations

import compileall
import importlib
import importlib.util
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

# The server machinery of `bentoml serve` (CLI, supervisor, workers, HTTP stack): compiled whole,
# a few MB, since which of their modules a start imports depends on the configuration.
SERVER_PACKAGES = (
    "bentoml",
    "bentoml_cli",
    "_bentoml_impl",
    "_bentoml_sdk",
    "circus",
    "tornado",
    "uvicorn",
    "starlette",
    "anyio",
    "prometheus_client",
    "opentelemetry",
    "sqlalchemy/dialects/sqlite",
)
# What the service and its models import (module-level and at model load). A module missing here
# is compiled by `warm.py app` instead, only not cached between builds.
LIBRARIES = (
    "numpy",
    "pandas",
    "scipy.special",
    "scipy.stats",
    "sklearn.linear_model",
    "sklearn.ensemble",
    "sklearn.preprocessing",
    "joblib",
    "sqlalchemy",
    "sqlalchemy.dialects.postgresql.psycopg",
    "psycopg",
    "pydantic",
    "pydantic_settings",
    "fastapi",
    "aiohttp",
    "httpx",
    "yaml",
    "mmh3",
    "xgboost",
    "lightgbm",
    "catboost",
    "onnxruntime",
    "ai_edge_litert.interpreter",
)


def main(stage: str) -> int:
    started = time.perf_counter()
    home = Path(tempfile.mkdtemp(prefix="warm-bentoml-"))
    os.environ["BENTOML_HOME"] = str(home)  # never the image's own home (owned by root otherwise)
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    failed: list[str] = []
    if stage == "libraries":
        site = Path(importlib.util.find_spec("bentoml").origin).parents[1]
        for package in SERVER_PACKAGES:
            if (site / package).is_dir():
                compileall.compile_dir(str(site / package), quiet=2, workers=0)
        for name in LIBRARIES:
            if importlib.util.find_spec(name.split(".")[0]) is None:
                continue  # not in this image (the slim ones)
            try:
                importlib.import_module(name)
            except Exception as exc:  # reported below; the image still works
                failed.append(f"{name}: {type(exc).__name__}: {exc}")
    else:
        bento = Path(os.environ["BENTO_PATH"])
        if (bento / "models").is_dir():
            (home / "models").symlink_to(bento / "models")
        sys.path.insert(0, str(bento / "src"))
        os.chdir(bento / "src")
        try:
            importlib.import_module("service")  # the app and what it imports at start
            import bentoml

            from models import store

            for model in bentoml.models.list():
                store.load(str(model.tag))  # imports each member's library
        except Exception:  # reported below; the image still works
            failed.append(traceback.format_exc(limit=3))
        compileall.compile_dir(str(bento / "src"), quiet=2)
    shutil.rmtree(home, ignore_errors=True)
    for line in failed:
        print(f"warm: not warmed: {line}", file=sys.stderr)
    print(f"warm {stage}: {len(sys.modules)} modules in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "app"))
