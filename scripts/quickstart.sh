#!/usr/bin/env bash
# Set up .venv (see scripts/setup-env.sh), then segment the bundled nuclei sample with the
# built-in model and print its evaluation table: .venv/bin/napari-unet demo [ARGS...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-env.sh
exec .venv/bin/napari-unet demo "$@"
