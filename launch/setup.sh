#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment: torch, the package and its test extras,
# plus the Debian data packages used for real footage when this machine can install them.
# Idempotent: re-running with an unchanged pyproject.toml only checks the stamp.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SIM2REAL_VENV:-.venv}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.sim2real-stamp"
want=$(cat pyproject.toml setup.py launch/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing python packages (first run takes a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch/torchvision: the versions that install from local disk on our machines; any recent
  # release works elsewhere (override with TORCH_SPEC).
  "$VENV/bin/python" -m pip install -q ${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
  "$VENV/bin/python" -m pip install -q -e ".[test]"
  echo "$want" > "$stamp"
fi

# Real development footage (ViSP cube) and sample videos: Debian packages, installed, not committed.
if [ ! -d /usr/share/visp-images-data/ViSP-images/mbt/cube ] || [ ! -d /usr/share/doc/opencv-doc/examples/data ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing Debian packages visp-images-data opencv-doc"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq visp-images-data opencv-doc) \
      >/dev/null 2>&1 || echo "[setup] note: could not install visp-images-data/opencv-doc; real-footage stages will say so"
  else
    echo "[setup] note: real footage needs 'sudo apt-get install visp-images-data opencv-doc' (Debian/Ubuntu)"
  fi
fi
