#!/usr/bin/env bash
# The benchmark suite: `bench/run.sh --quick` (< 3 min) or `bench/run.sh` (full). See bench/__main__.py.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .venv/bin/activate ]; then source .venv/bin/activate; fi
export HF_HUB_OFFLINE=1
exec python -m bench "$@"
