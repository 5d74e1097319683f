#!/usr/bin/env bash
# The test command: lint, format check, type check, then the tests with their doctests.
# Run it from the repository root with the venv's python on PATH (`.ci/run` does both).
set -euo pipefail
cd "$(dirname "$0")/.."

paths=()
for dir in lr_callbacks tests benchmarks examples docs; do
    [ -d "$dir" ] && paths+=("$dir")
done
echo "== ruff (lint)";   ruff check "${paths[@]}" conftest.py
echo "== ruff (format)"; ruff format --check "${paths[@]}" conftest.py
echo "== mypy";          mypy lr_callbacks
echo "== pytest"
status=0
python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure here" >&2
    exit 1
fi
exit "$status"
