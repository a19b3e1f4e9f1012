#!/usr/bin/env bash
# Create (or refresh) .venv-ray, the venv of the ray baseline of `python -m loadtests.benchmark`,
# from requirements/ray.txt (see scripts/baseline-venv.sh).
exec bash "$(dirname "$0")/baseline-venv.sh" ray
