#!/usr/bin/env bash
# Install what the database tests need, idempotently: Debian's PostgreSQL server (the tests start a throwaway
# cluster of their own with its binaries, /usr/lib/postgresql/<version>/bin) and Debian's redis-server (the
# shared rate-limit test). Nothing is started or enabled here. Safe to run repeatedly.
set -euo pipefail

missing=()
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || [[ -x /usr/bin/redis-server ]] || missing+=(redis-server)

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "databases: present ($(ls -d /usr/lib/postgresql/*/bin | head -n 1), $(redis-server --version | cut -d' ' -f1-3))"
elif [[ "$(id -u)" -eq 0 ]]; then
  echo "databases: installing ${missing[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d 101: the packages' install scripts must not start their system services (the tests start
  # their own servers on free ports).
  policy=/usr/sbin/policy-rc.d
  created=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created=1
  fi
  status=0
  apt-get install -y -qq --no-install-recommends "${missing[@]}" || status=$?
  if [[ $created -eq 1 ]]; then rm -f "$policy"; fi
  exit "$status"
else
  echo "databases: ${missing[*]} missing and this script is not running as root. Run:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
