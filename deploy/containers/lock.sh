#!/usr/bin/env bash
# Regenerate the image locks from the pinned requirements (run after changing requirements/*.txt;
# tests/containers/test_locks.py fails while they disagree):
#
#   bash deploy/containers/lock.sh
#
# requirements/lock/serving.txt  every package of the ensemble and full images, transitive ones too
# requirements/lock/classic.txt  the classic and router images: the same versions, a subset
# The images install exactly these (uv pip install --no-deps), so two builds are identical.
set -euo pipefail
cd "$(dirname "$0")/../.."
UV=${UV:-.venv/bin/uv}
[ -x "$UV" ] || UV=uv
common=(--python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-header --quiet --annotation-style line
  --override requirements/lock/overrides.in)
"$UV" pip compile requirements/serving.txt "${common[@]}" -o requirements/lock/serving.txt
"$UV" pip compile requirements/classic.txt "${common[@]}" -c requirements/lock/serving.txt \
  -o requirements/lock/classic.txt
echo "lock: $(grep -c '==' requirements/lock/classic.txt) packages in classic.txt," \
  "$(grep -c '==' requirements/lock/serving.txt) in serving.txt"
