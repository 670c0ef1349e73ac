#!/usr/bin/env bash
# Create .venv and install the pinned dependencies (plus extras given as arguments, e.g. `test`).
# Idempotent: re-runs only when pyproject.toml or the requested extras change.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
extras=${1:-}
stamp_key=$(cat pyproject.toml; echo "extras=$extras")
stamp=".venv/.installed-$(printf '%s' "$stamp_key" | sha256sum | cut -c1-16)"

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
if [ ! -f "$stamp" ]; then
  echo "==> installing pinned dependencies${extras:+ (with $extras)}"
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch first and pinned: an unpinned torch would pull several GB of CUDA packages.
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  target="."
  [ -n "$extras" ] && target=".[${extras}]"
  .venv/bin/python -m pip install --quiet -e "$target"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
