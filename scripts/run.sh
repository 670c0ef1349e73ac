#!/usr/bin/env bash
# One command to run Zantara on http://127.0.0.1:8000: sets up .venv on first use, ingests the sample
# knowledge base on first start, then serves. Extra arguments go to `zantara-rag serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
exec .venv/bin/zantara-rag serve "$@"
