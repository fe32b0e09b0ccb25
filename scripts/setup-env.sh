#!/usr/bin/env bash
# Set up the development environment in .venv (idempotent: re-running only does what is missing).
#
#   1. the Debian packages Qt and a virtual X server need (only when missing, only as root);
#   2. a virtual environment .venv made with python3 (>= 3.11);
#   3. torch==2.13.0 FIRST (a local CPU wheel where pip has one; installing torch later, or as a
#      dependency of the package, would fetch several GB of CUDA wheels);
#   4. the package, editable, with its test and dev tools (".[dev]": pytest, pytest-qt,
#      pytest-xvfb, PyQt6, napari, ruff, import-linter, pre-commit, build).
#
# Environment: PYTHON (default python3), TORCH_SPEC (default torch==2.13.0), VENV (default .venv).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
VENV=${VENV:-.venv}
APT_PACKAGES=(
  xvfb xauth libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0
  libxcb-xinerama0 libxcb-xinput0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0
  libxkbcommon-x11-0 libfontconfig1 libdbus-1-3 libgl1 libegl1
)

log() { printf '[setup-env] %s\n' "$*"; }
# pip, without the warnings about index locations that do not exist on this machine
pip_install() {
  "$VENV/bin/python" -m pip install --progress-bar off "$@" 2>&1 \
    | { grep -v -e "is ignored: it is neither a file nor a directory" \
        -e "^Requirement already satisfied" || true; }
}

install_system_packages() {
  if ! command -v dpkg-query >/dev/null 2>&1; then
    log "not a Debian system: make sure Xvfb and the Qt xcb libraries are installed"
    return 0
  fi
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "system packages: all present"
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    log "missing system packages (install them as root): apt-get install ${missing[*]}"
    return 0
  fi
  log "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

make_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
      log "error: $PYTHON is $("$PYTHON" --version 2>&1); napari-unet needs Python >= 3.10"
      exit 1
    }
    log "creating $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
  fi
}

install_python_packages() {
  if ! "$VENV/bin/python" -c 'import torch' >/dev/null 2>&1; then
    log "installing $TORCH_SPEC (before the package, so pip keeps this build)"
    pip_install "$TORCH_SPEC"
  else
    log "torch: $("$VENV/bin/python" -c 'import torch; print(torch.__version__)') already installed"
  fi
  # re-install the package only when its metadata changed since the last run
  local stamp="$VENV/.napari-unet-setup" digest
  digest=$(cat pyproject.toml "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ] \
      && "$VENV/bin/python" -c 'import napari_unet, napari, pytest' >/dev/null 2>&1; then
    log "napari-unet[dev]: up to date"
  else
    log "installing napari-unet (editable) with its test and dev tools"
    pip_install -e ".[dev]"
    echo "$digest" >"$stamp"
  fi
}

install_system_packages
make_venv
install_python_packages
log "ready: $VENV ($("$VENV/bin/python" --version), torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'))"
