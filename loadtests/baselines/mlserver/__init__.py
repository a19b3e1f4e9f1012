"""The MLServer 1.7.1 baseline of `python -m loadtests.benchmark` (part e): runtime.py is the
MLServer runtime (runs in .venv-mlserver), launch.py writes its settings and starts
`mlserver start`."""
