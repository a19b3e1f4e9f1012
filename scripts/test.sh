#!/usr/bin/env bash
# The test suite: set up .venv, then run pytest (unit, training, integration against real
# `bentoml serve` processes on loopback). Extra arguments go to pytest, e.g. `-m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export BENTOML_DO_NOT_TRACK=true
exec .venv/bin/python -m pytest "$@"
