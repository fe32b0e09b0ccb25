#!/usr/bin/env bash
# Run the test suite: .venv/bin/python -m pytest [PYTEST ARGS...]
# pytest-xvfb starts a virtual X server for the napari tests (no screen needed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  echo "no .venv here: run 'bash scripts/setup-env.sh' first" >&2
  exit 1
fi
exec .venv/bin/python -m pytest "$@"
