"""The LitServe baseline of `python -m loadtests.benchmark` (part f): app.py (.venv-litserve)."""
