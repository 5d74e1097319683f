#!/usr/bin/env bash
# The test command: lint, format check, type check, then the tests with their doctests.
# Run it from the repository root with the venv's python on PATH (`.ci/run` does both).
set -euo pipefail
cd "$(dirname "$0")/.."

paths=(conftest.py)
for dir in lr_callbacks tests benchmarks examples; do
    [ -d "$dir" ] && paths+=("$dir")
done
paths+=(docs/*.py)  # the Python in docs/; its markdown is generated (docs/build_api.py) and checked by the tests
echo "== ruff (lint)";   ruff check "${paths[@]}"
echo "== ruff (format)"; ruff format --check "${paths[@]}"
echo "== mypy";          mypy lr_callbacks
echo "== pytest"
status=0
python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure here" >&2
    exit 1
fi
exit "$status"
