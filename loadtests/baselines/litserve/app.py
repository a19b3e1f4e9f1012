"""The stored ensemble on LitServe with its own batching (`max_batch_size`, `batch_timeout`).

    .venv-litserve/bin/python -m loadtests.baselines.litserve.app --port 8091 [--bentoml-home DIR]
        [--model ensemble:latest] [--workdir DIR] [--max-batch-size 64] [--batch-timeout 0.02]

Runs in .venv-litserve (scripts/litserve-venv.sh, requirements/litserve.txt), from the repository
root. Serves POST /classify/ensemble (our body, validated by the model's schema: 422 naming the
field; our answer shape), GET /api/models (the schema, for the load generator), GET /readyz and
GET /metrics (rows per predict call, as our ensemble service exports them). LitServe decodes each
request in its inference worker (a process of its own), batches up to `--max-batch-size` rows or
`--batch-timeout` seconds, and runs one `predict` per batch: the same model code as our service
(`models.ensemble.EnsembleModel`, loaded by path, no bentoml); fast paths unless
SERVING_NATIVE_MEMBERS=1 is in the environment (the benchmark's part f sets it).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import litserve as ls
import numpy as np
from fastapi import HTTPException
from fastapi.responses import PlainTextResponse

from loadtests.baselines.common import (
    BatchStats,
    Invalid,
    answer,
    encode_body,
    load_model,
    models_entry,
)
from loadtests.baselines.mlserver.launch import model_dir
from loadtests.harness.common import bentoml_home, temp_dir


class EnsembleAPI(ls.LitAPI):
    def __init__(self, directory: Path, version: str, stats_path: Path, **kwargs):
        super().__init__(**kwargs)
        self.directory, self.version, self.stats_path = directory, version, stats_path

    def setup(self, device) -> None:
        self.model = load_model(self.directory)
        self.stats = BatchStats(self.stats_path)
        self.stats_path.with_name("ready").write_text("1")  # GET /readyz: 200 from now on

    def decode_request(self, request):
        try:
            return encode_body(self.model, request)
        except Invalid as exc:
            raise HTTPException(status_code=422, detail=exc.error) from None

    def batch(self, inputs):
        return np.concatenate(inputs)

    def predict(self, codes):
        self.stats.add(len(codes))
        return self.model.predict_proba(codes)

    def unbatch(self, output):
        return list(output)

    def encode_response(self, probabilities):
        return answer(probabilities, self.model.classes, self.version)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--bentoml-home", type=Path)
    parser.add_argument("--model", default="ensemble:latest")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--batch-timeout", type=float, default=0.02, help="seconds")
    args = parser.parse_args(argv)

    directory = model_dir(bentoml_home(args.bentoml_home), args.model)
    workdir = (args.workdir or temp_dir("litserve-ensemble-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    stats = BatchStats(workdir / "batch-stats")
    stats.path.write_text("0 0")
    schema = json.loads((directory / "schema.json").read_text())
    batching = {"max_batch_size": args.max_batch_size, "batch_timeout_s": args.batch_timeout}
    api = EnsembleAPI(
        directory,
        directory.name,
        stats.path,
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout,
        api_path="/classify/ensemble",
    )
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1, timeout=30)
    entry = models_entry(schema, directory.name, batching, f"litserve {ls.__version__}")
    server.app.add_api_route("/api/models", lambda: entry, methods=["GET"])
    ready = workdir / "ready"
    ready.unlink(missing_ok=True)

    def readyz():
        if not ready.exists():
            return PlainTextResponse("loading", status_code=503)
        return {"ready": True}

    server.app.add_api_route("/readyz", readyz, methods=["GET"])
    server.app.add_api_route("/metrics", lambda: PlainTextResponse(stats.text()), methods=["GET"])
    print(f"litserve: {directory} on http://{args.host}:{args.port} ({batching})", flush=True)
    os.environ.setdefault("LITSERVE_TRACK_USAGE", "0")
    server.run(
        host=args.host,
        port=args.port,
        num_api_servers=1,
        log_level="warning",
        generate_client_file=False,
    )


if __name__ == "__main__":
    main()
