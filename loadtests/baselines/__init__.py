"""What the benchmark compares the product with, each serving the same stored models and answering
our request and response shapes: fastapi_app.py (FastAPI + uvicorn), mlserver/ (MLServer 1.7.1,
.venv-mlserver), litserve/ (LitServe, .venv-litserve), rayserve/ (Ray Serve, .venv-ray),
nobatch_service.py (our graph with BentoML's adaptive batching off); common.py is what the
framework baselines share (stdlib, numpy and the model code only)."""
