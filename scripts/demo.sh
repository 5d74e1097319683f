#!/usr/bin/env bash
# Install into .venv (once) and run the demo, examples/quickstart.py: a real training run on the digits with
# the three callbacks, logged to TensorBoard under quickstart_logs/.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# -I: not from the current directory (the repository root holds lr_callbacks/ whether or not it is installed)
if ! .venv/bin/python -I -c "import lr_callbacks, sklearn" 2>/dev/null; then
    .venv/bin/python -m pip install --quiet --upgrade "pip>=24"
    .venv/bin/python -m pip install --quiet torch==2.13.0
    .venv/bin/python -m pip install --quiet -e ".[demo]"
fi
.venv/bin/python examples/quickstart.py "$@"
