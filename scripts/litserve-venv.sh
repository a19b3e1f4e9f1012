#!/usr/bin/env bash
# Create (or refresh) .venv-litserve, the venv of the litserve baseline of `python -m loadtests.benchmark`,
# from requirements/litserve.txt (see scripts/baseline-venv.sh).
exec bash "$(dirname "$0")/baseline-venv.sh" litserve
