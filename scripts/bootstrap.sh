#!/usr/bin/env bash
# Create (or refresh) the project-local virtualenv .venv from the pinned requirements.
# Idempotent: re-installs only when a requirements file changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
REQS=${1:-requirements/dev.txt}
stamp=.venv/.requirements-$(cat requirements/*.txt | sha256sum | cut -c1-16)-$(basename "$REQS" .txt)
if [ -f "$stamp" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r "$REQS"
rm -f .venv/.requirements-*
touch "$stamp"
echo "bootstrap: .venv ready ($REQS)"
