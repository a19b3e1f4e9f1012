"""The baseline a user would write without BentoML: FastAPI + uvicorn, both models in one process.

    python -m loadtests.baselines.fastapi_app [--port 8000] [--classic classic:latest]
                                              [--ensemble ensemble:latest]

POST /classify/classic and /classify/ensemble take the same body as the product's endpoints
(`{"features": {...}, "user_id": ...}`, validated by the same pydantic model and
models.schema.FeatureSchema.encode_rows: 422 naming the field) and answer the same shape
(label, probabilities, model, model_version, request_id, fallback, cached, reason). Plain sync
handlers (FastAPI runs them in its thread pool), one uvicorn worker, access log off. Also
GET /api/models (the schemas, so the load generator works unchanged) and GET /readyz.

Used by `python -m loadtests.benchmark` as the reference point (d).
"""

from __future__ import annotations

import argparse
import uuid

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from serving.http.schemas import ClassifyRequest


def create_app(
    classic_tag: str = "classic:latest", ensemble_tag: str = "ensemble:latest"
) -> FastAPI:
    from models import store
    from models.schema import SchemaValidationError

    loaded = {}
    for name, tag in (("classic", classic_tag), ("ensemble", ensemble_tag)):
        model, stored = store.load(tag)
        loaded[name] = (model, stored.tag.version, str(stored.tag))

    app = FastAPI(title="baseline: FastAPI + uvicorn, models in process")

    def predict(name: str, body: ClassifyRequest):
        model, version, _ = loaded[name]
        try:
            codes = model.schema.encode_rows([body.features], prefix="features")
        except SchemaValidationError as exc:
            return JSONResponse(
                {
                    "error": {
                        "code": "invalid_input",
                        "message": str(exc),
                        "fields": [e.model_dump() for e in exc.errors],
                    }
                },
                status_code=422,
            )
        probabilities = model.predict_proba(codes)[0]
        classes = model.classes
        best = int(probabilities.argmax())
        return {
            "label": classes[best],
            "probabilities": {c: float(p) for c, p in zip(classes, probabilities, strict=True)},
            "model": name,
            "model_version": version,
            "request_id": uuid.uuid4().hex,
            "fallback": False,
            "cached": False,
            "reason": "direct",
        }

    @app.post("/classify/classic")
    def classify_classic(body: ClassifyRequest):
        return predict("classic", body)

    @app.post("/classify/ensemble")
    def classify_ensemble(body: ClassifyRequest):
        return predict("ensemble", body)

    @app.get("/api/models")
    def models():
        return {
            name: {"name": name, "tag": tag, "ready": True, "schema": model.schema.model_dump()}
            for name, (model, _, tag) in loaded.items()
        }

    @app.get("/readyz")
    def readyz():
        return {"ready": True}

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--classic", default="classic:latest")
    parser.add_argument("--ensemble", default="ensemble:latest")
    args = parser.parse_args(argv)

    import uvicorn

    uvicorn.run(
        create_app(args.classic, args.ensemble),
        host=args.host,
        port=args.port,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
