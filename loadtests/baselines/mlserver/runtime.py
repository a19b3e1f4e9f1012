"""The stored ensemble as an MLServer 1.7.1 runtime, with MLServer's adaptive batching.

Runs inside .venv-mlserver (scripts/mlserver-venv.sh), started by
`python -m loadtests.baselines.mlserver.launch`, which writes the settings: parameters.uri = the
stored model's directory ($BENTOML_HOME/models/ensemble/<version>/), parameters.version = <version>;
max_batch_size 64, max_batch_time 0.02 s, parallel_workers 0. The model is loaded by path with
the same code as our services (`models.ensemble.EnsembleModel.load`): no bentoml import here.
Fast paths as in our services; SERVING_NATIVE_MEMBERS=1 in the environment gives the native
libraries.

Endpoints (custom REST handlers on MLServer's HTTP port, next to the V2 protocol's /v2/...):
- POST /classify/ensemble: our JSON body (`{"features": {...}, "user_id": ...}`), validated and
  encoded by the model's `schema.encode_rows` (422 naming the field, like
  loadtests/baselines/fastapi_app.py), sent through MLServer's adaptive batcher as a V2
  InferenceRequest (one FP64 row), answered in the shape of our API (label, probabilities, model,
  model_version, request_id, fallback, cached, reason).
  The batcher wraps `self.predict` only when the server runs with parallel_workers=0 (with
  inference workers the handler would run in the main process, where the model is not loaded),
  and it logs metrics under the model's name, hence `model_context(self.settings)` around the call.
- GET /api/models: the schema (so the load generator works unchanged); GET /readyz: 200 once loaded;
- GET /metrics: `tabular_ensemble_batch_rows_sum` / `_count` (rows per predict call) in
  Prometheus text, as our ensemble service exports them, so the benchmark reports the mean
  batch size the same way.

Each batch runs on a 2-thread pool (like the BentoML ensemble service: threads=2, members on both
cores for batches of 32+ rows), so the event loop keeps reading and batching requests meanwhile.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse, PlainTextResponse
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.context import model_context
from mlserver.handlers import custom_handler
from mlserver.types import InferenceRequest, InferenceResponse

from loadtests.baselines.common import BatchStats, Invalid, answer, encode_body, load_model


def _invalid(exc: Invalid) -> JSONResponse:
    """422 with our error body."""
    return JSONResponse({"error": exc.error}, status_code=422)


class EnsembleRuntime(MLModel):
    def __init__(self, settings):
        super().__init__(settings)
        self.stats = BatchStats()
        self.model_version = "?"

    async def load(self) -> bool:
        params = self.settings.parameters
        directory = Path(
            params.uri if params and params.uri else os.environ["MLSERVER_ENSEMBLE_DIR"]
        )
        self.model_version = (
            params.version if params and params.version else None
        ) or directory.name
        self.model = load_model(directory)  # members on two threads, warmed up
        self.member_paths = {name: m.path_kind for name, m in self.model.members.items()}
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="predict")
        return True

    def _predict_codes(self, codes: np.ndarray) -> np.ndarray:
        probabilities = self.model.predict_proba(codes)
        self.stats.add(len(codes))
        return probabilities

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """One (adaptive) batch: the merged FP64 code rows -> class probabilities."""
        codes = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float64, copy=False)
        loop = asyncio.get_running_loop()
        probabilities = await loop.run_in_executor(self._executor, self._predict_codes, codes)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output("probabilities", probabilities)],
        )

    @custom_handler(rest_path="/classify/ensemble", rest_method="POST")
    async def classify(self, request: Request):
        if not self.ready:
            return JSONResponse(
                {"error": {"code": "not_ready", "message": "model is loading"}}, status_code=503
            )
        try:
            body = await request.json()
        except ValueError as exc:
            return _invalid(Invalid(f"body is not JSON: {exc}"))
        try:
            codes = encode_body(self.model, body)
        except Invalid as exc:
            return _invalid(exc)
        inference_request = InferenceRequest(inputs=[NumpyCodec.encode_input("codes", codes)])
        with model_context(self.settings):
            response = await self.predict(inference_request)  # through the adaptive batcher
        probabilities = NumpyCodec.decode_output(response.outputs[0])[0]
        return answer(probabilities, self.model.classes, self.model_version)

    @custom_handler(rest_path="/api/models", rest_method="GET")
    async def api_models(self, request: Request):
        ready = bool(self.ready)
        entry = {"name": "ensemble", "tag": f"ensemble:{self.model_version}", "ready": ready}
        if ready:
            entry["schema"] = self.model.schema.model_dump()
            entry["members"] = self.member_paths
            entry["batching"] = {
                "max_batch_size": self.settings.max_batch_size,
                "max_batch_time_s": self.settings.max_batch_time,
            }
        return {"ensemble": entry}

    @custom_handler(rest_path="/readyz", rest_method="GET")
    async def readyz(self, request: Request):
        if not self.ready:
            return JSONResponse({"ready": False}, status_code=503)
        return {"ready": True}

    @custom_handler(rest_path="/metrics", rest_method="GET")
    async def batch_metrics(self, request: Request):
        return PlainTextResponse(self.stats.text())
