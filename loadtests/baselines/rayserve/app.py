"""The stored ensemble on Ray Serve with its own batching (`@serve.batch`).

    .venv-ray/bin/python -m loadtests.baselines.rayserve.app --port 8092 [--bentoml-home DIR]
        [--model ensemble:latest] [--max-batch-size 64] [--batch-wait 0.02]

Runs in .venv-ray (scripts/ray-venv.sh, requirements/ray.txt), from the repository root: starts a
local Ray (2 CPUs, no dashboard) and Serve's HTTP proxy on 127.0.0.1:--port, with one replica of a
FastAPI-ingress deployment: POST /classify/ensemble (our body, validated by the model's schema:
422 naming the field; our answer shape), GET /api/models, GET /readyz, GET /metrics (rows per
predict call). Rows are merged by `@serve.batch(max_batch_size, batch_wait_timeout_s)` and each
batch runs on a 2-thread pool (as our ensemble service and the MLServer runtime run them), with
the same model code (`models.ensemble.EnsembleModel`, loaded by path, no bentoml); fast paths
unless SERVING_NATIVE_MEMBERS=1 is in the environment (the benchmark's part f sets it).
"""

import argparse
import asyncio
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from ray import serve

from loadtests.baselines.common import (
    BatchStats,
    Invalid,
    answer,
    encode_body,
    load_model,
    models_entry,
)
from loadtests.baselines.mlserver.launch import model_dir
from loadtests.harness.common import bentoml_home

app = FastAPI()
MAX_BATCH = int(os.environ.get("RAYSERVE_MAX_BATCH", "64"))
BATCH_WAIT = float(os.environ.get("RAYSERVE_BATCH_WAIT", "0.02"))


@serve.deployment(max_ongoing_requests=512, ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class Ensemble:
    def __init__(self, directory: str, schema: dict, framework: str):
        self.model = load_model(Path(directory))
        self.version = Path(directory).name
        self.stats = BatchStats()
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="predict")
        batching = {"max_batch_size": MAX_BATCH, "batch_wait_timeout_s": BATCH_WAIT}
        self.entry = models_entry(schema, self.version, batching, framework)

    def _predict(self, codes: np.ndarray) -> np.ndarray:
        self.stats.add(len(codes))
        return self.model.predict_proba(codes)

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT)
    async def predict(self, batch: list) -> list:
        codes = np.concatenate(batch)
        loop = asyncio.get_running_loop()
        probabilities = await loop.run_in_executor(self.pool, self._predict, codes)
        return list(probabilities)

    @app.post("/classify/ensemble")
    async def classify(self, request: Request):
        try:
            codes = encode_body(self.model, await request.json())
        except Invalid as exc:
            return JSONResponse({"error": exc.error}, status_code=422)
        except ValueError as exc:
            return JSONResponse({"error": {"code": "bad_request", "message": str(exc)}}, 400)
        probabilities = await self.predict(codes)
        return answer(probabilities, self.model.classes, self.version)

    @app.get("/api/models")
    def api_models(self):
        return self.entry

    @app.get("/readyz")
    def readyz(self):
        return {"ready": True}

    @app.get("/metrics")
    def metrics(self):
        return PlainTextResponse(self.stats.text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8092)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--bentoml-home", type=Path)
    parser.add_argument("--model", default="ensemble:latest")
    args = parser.parse_args(argv)

    import ray

    directory = model_dir(bentoml_home(args.bentoml_home), args.model)
    schema = json.loads((directory / "schema.json").read_text())
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    serve.start(http_options={"host": args.host, "port": args.port})
    framework = f"ray serve {ray.__version__}"
    serve.run(Ensemble.bind(str(directory), schema, framework), route_prefix="/", blocking=False)
    print(f"rayserve: {directory} on http://{args.host}:{args.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
