#!/usr/bin/env bash
# Create (or refresh) .venv-mlserver, the venv of the MLServer baseline (loadtests/mlserver/,
# part e of `python -m loadtests.benchmark`), from requirements/mlserver.txt.
# Idempotent: re-installs only when requirements/mlserver.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=.venv-mlserver
stamp=$VENV/.requirements-$(sha256sum requirements/mlserver.txt | cut -c1-16)
if [ -f "$stamp" ]; then
  exit 0
fi
[ -x $VENV/bin/python ] || "$PYTHON" -m venv $VENV
$VENV/bin/python -m pip install --quiet --upgrade pip
$VENV/bin/python -m pip install --quiet -r requirements/mlserver.txt
rm -f $VENV/.requirements-*
touch "$stamp"
echo "mlserver-venv: $VENV ready ($($VENV/bin/python -c 'import mlserver; print("mlserver", mlserver.__version__)'))"
