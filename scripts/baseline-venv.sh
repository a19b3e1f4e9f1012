#!/usr/bin/env bash
# Create (or refresh) .venv-NAME, the venv of one baseline of `python -m loadtests.benchmark`
# (mlserver: part e; ray, litserve: part f), from requirements/NAME.txt (which includes
# requirements/baseline-models.txt: the model libraries at the serving versions).
#   bash scripts/baseline-venv.sh mlserver|ray|litserve
# Idempotent: re-installs only when the requirement files changed. Uses uv when the dev venv has
# it (much faster on 2 cores), pip otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${1:?usage: baseline-venv.sh mlserver|ray|litserve}
REQ=requirements/$NAME.txt
[ -f "$REQ" ] || { echo "no $REQ" >&2; exit 2; }
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=.venv-$NAME
stamp=$VENV/.requirements-$(cat "$REQ" requirements/baseline-models.txt | sha256sum | cut -c1-16)
if [ -f "$stamp" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
if [ -x .venv/bin/uv ]; then
  (cd requirements && ../.venv/bin/uv pip install --quiet --python "../$VENV/bin/python" -r "$NAME.txt")
else
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  (cd requirements && "../$VENV/bin/python" -m pip install --quiet -r "$NAME.txt")
fi
rm -f "$VENV"/.requirements-*
touch "$stamp"
echo "baseline-venv: $VENV ready ($("$VENV/bin/python" -m pip --version 2>/dev/null | cut -d' ' -f1-2 || true))"
