#!/usr/bin/env bash
# One command to run the whole test suite from a fresh clone: installs the Python dependencies, the
# browser (Debian's Chromium), the frontend examples' npm packages and the database servers (Debian's
# PostgreSQL and redis-server, which the tests start themselves), then lints and runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test,redis
if [ -x scripts/install-browser.sh ] || [ -f scripts/install-browser.sh ]; then
  bash scripts/install-browser.sh
fi
bash scripts/install-databases.sh
export HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
echo "==> ruff"
.venv/bin/ruff check apps tests bench
echo "==> mypy"
.venv/bin/mypy
echo "==> pip-audit (known vulnerabilities; SKIPPED when no advisory service is reachable)"
.venv/bin/python scripts/audit.py
echo "==> pytest"
exec .venv/bin/python -m pytest "$@"
