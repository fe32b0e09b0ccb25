#!/usr/bin/env bash
# Build the sdist and the wheel into dist/, then install the WHEEL (not the checkout) into a
# fresh venv that already has torch and napari, as napari's plugin manager would, and check:
#   - installing it changes none of napari, numpy, torch (they already satisfy the bounds);
#   - `npe2 list` shows the plugin with its 3 widgets and its sample;
#   - the three widgets and the sample open in a napari viewer (under a virtual X server);
#   - `napari-unet segment` works on the bundled sample from that install (a tiny model saved
#     on the spot, and the built-in model when the wheel ships it);
#   - the wheel holds the manifest, the sample data and the model, and stays small.
#
# Environment: PYTHON (default python3), TORCH_SPEC (default torch==2.13.0),
#              WHEEL_CHECK_DIR (default build/wheel-check; wiped first),
#              BUILD_PYTHON (a python with `build`; default .venv/bin/python, else PYTHON).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
WORK=${WHEEL_CHECK_DIR:-$ROOT/build/wheel-check}
# two built-in models of 15.6 MB each (nuclei, nuclei-he: float16 weights compress little)
MAX_WHEEL_MB=${MAX_WHEEL_MB:-36}

log() { printf '[check-wheel] %s\n' "$*"; }

# -- 1. build ---------------------------------------------------------------------------------
BUILDER=${BUILD_PYTHON:-$ROOT/.venv/bin/python}
"$BUILDER" -c 'import build' >/dev/null 2>&1 || BUILDER="$PYTHON"
"$BUILDER" -c 'import build' >/dev/null 2>&1 || {
  log "error: the 'build' package is missing: run scripts/setup-env.sh (or pip install build)"
  exit 1
}
rm -rf dist
log "building sdist and wheel with $("$BUILDER" -m build --version)"
BUILD_LOG=$(mktemp)
"$BUILDER" -m build --outdir dist . >"$BUILD_LOG" 2>&1 || {
  cat "$BUILD_LOG"
  exit 1
}
rm -f "$BUILD_LOG"
WHEEL=$(ls dist/*.whl)
SDIST=$(ls dist/*.tar.gz)
log "built $(basename "$SDIST") ($(du -h "$SDIST" | cut -f1)) and $(basename "$WHEEL") ($(du -h "$WHEEL" | cut -f1))"

# -- 2. a fresh venv with torch and napari, as a napari user has ------------------------------
rm -rf "$WORK"
mkdir -p "$WORK"
log "fresh venv in $WORK/venv"
"$PYTHON" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
pip_install() {
  "$VPY" -m pip install --progress-bar off -q "$@" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}
pip_install "$TORCH_SPEC"
pip_install napari PyQt6 npe2
"$VPY" -m pip freeze --all >"$WORK/freeze-before.txt"

# -- 3. install the wheel ---------------------------------------------------------------------
log "installing $(basename "$WHEEL")"
pip_install "$ROOT/$WHEEL"
"$VPY" -m pip freeze --all >"$WORK/freeze-after.txt"

# -- 4. smoke tests from outside the checkout, with the installed package ---------------------
cd "$WORK"
run_helper=("$VPY" "$ROOT/scripts/check_wheel_install.py" --wheel "$ROOT/$WHEEL"
  --before "$WORK/freeze-before.txt" --after "$WORK/freeze-after.txt"
  --max-wheel-mb "$MAX_WHEEL_MB" --workdir "$WORK")
if command -v xvfb-run >/dev/null 2>&1 && [ -z "${DISPLAY:-}" ]; then
  xvfb-run -a -s "-screen 0 1280x1024x24" "${run_helper[@]}"
else
  "${run_helper[@]}"
fi
log "OK: $(basename "$WHEEL") ($(du -h "$ROOT/$WHEEL" | cut -f1)) installs and works"
