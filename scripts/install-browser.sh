#!/usr/bin/env bash
# Install what the browser tests need, idempotently:
#   - Debian's chromium and chromium-driver (Playwright drives /usr/bin/chromium; `playwright install` is
#     not used because its browser downloads are blocked here),
#   - the npm dependencies of docs/examples/* and tests/clients (`npm ci`, only where node_modules is missing).
# Safe to run repeatedly; does nothing when everything is present.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
chromium="${CHROMIUM:-/usr/bin/chromium}"

if [[ -x "$chromium" ]]; then
  echo "chromium: present ($("$chromium" --version 2>/dev/null | head -n 1))"
elif [[ "$(id -u)" -eq 0 ]]; then
  echo "chromium: installing chromium and chromium-driver with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium chromium-driver
else
  echo "chromium: $chromium is missing and this script is not running as root. Run:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y chromium chromium-driver" >&2
  exit 1
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "npm: not found; install Node.js 20.19+ (the examples use Vite 8)" >&2
  exit 1
fi

for dir in "$repo"/docs/examples/*/ "$repo"/tests/clients/; do
  dir="${dir%/}"
  [[ -f "$dir/package.json" ]] || continue
  name="${dir#"$repo"/}"
  if [[ -d "$dir/node_modules" ]]; then
    echo "npm: $name already installed"
  else
    echo "npm: npm ci in $name"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done
