"""The Ray Serve baseline of `python -m loadtests.benchmark` (part f): app.py, run in .venv-ray."""
