#!/usr/bin/env bash
# The main job: set up .venv, train both models on the embedded default data if the BentoML model
# store has none yet, then serve the whole graph (router + classic + ensemble) on $HOST:$PORT.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export BENTOML_DO_NOT_TRACK=${BENTOML_DO_NOT_TRACK:-true}
.venv/bin/python -m training --if-missing --report results/training.json
exec .venv/bin/bentoml serve service:Router --host "${HOST:-127.0.0.1}" --port "${PORT:-3000}"
