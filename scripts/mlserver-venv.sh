#!/usr/bin/env bash
# Create (or refresh) .venv-mlserver, the venv of the mlserver baseline of `python -m loadtests.benchmark`,
# from requirements/mlserver.txt (see scripts/baseline-venv.sh).
exec bash "$(dirname "$0")/baseline-venv.sh" mlserver
