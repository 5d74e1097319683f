#!/usr/bin/env bash
# The GPU-only checks (fp16 AMP with a GradScaler, the watchdog's device-judged default and its host reads,
# pinned-memory snapshots, CUDA RNG restore in the finder, the overhead on charlm): one table, exit 1 on a
# failure. Without a CUDA GPU it prints one line saying it was skipped and exits 0.
# Run it from the repository root with the venv's python on PATH (after .ci/run), or with any python that has
# the package installed: bash scripts/gpu_check.sh [--only NAME,...]
set -euo pipefail
cd "$(dirname "$0")/.."
exec python scripts/gpu_check.py "$@"
