#!/usr/bin/env bash
# Smoke-test a deployed Zantara RAG instance with curl only.
#
#   scripts/smoke.sh https://zantara-rag.fly.dev
#
# Checks: /health 200, /ready 200, one streamed answer (text, sources and done events), a CORS preflight from
# the production origin that is echoed back, and a request from an unlisted origin that is refused (403, no
# Access-Control-Allow-Origin). Prints one PASS/FAIL line per check; exits non-zero if any check fails.
#
# Environment:
#   SMOKE_QUERY          question to ask (default: a PT PMA question)
#   SMOKE_ORIGIN         allowed origin to preflight (default: https://zantara.balizero.com)
#   SMOKE_TOKEN          sent as "Authorization: Bearer ..." when the instance requires auth
#   SMOKE_TIMEOUT        seconds for plain requests (default 10)
#   SMOKE_STREAM_TIMEOUT seconds for the streamed answer (default 90)
set -uo pipefail

if [[ $# -ne 1 || "$1" == -h || "$1" == --help ]]; then
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
  exit 64
fi

base="${1%/}"
query="${SMOKE_QUERY:-What do I need to set up a PT PMA company in Bali?}"
origin="${SMOKE_ORIGIN:-https://zantara.balizero.com}"
evil_origin="https://evil.example"
timeout="${SMOKE_TIMEOUT:-10}"
stream_timeout="${SMOKE_STREAM_TIMEOUT:-90}"
auth=()
[[ -n "${SMOKE_TOKEN:-}" ]] && auth=(-H "Authorization: Bearer ${SMOKE_TOKEN}")

if [[ -t 1 ]]; then green=$'\e[32m' red=$'\e[31m' dim=$'\e[2m' reset=$'\e[0m'; else green='' red='' dim='' reset=''; fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failures=0

pass() { printf '%sPASS%s %s\n' "$green" "$reset" "$1"; }
fail() {
  printf '%sFAIL%s %s\n' "$red" "$reset" "$1"
  [[ $# -gt 1 && -n "$2" ]] && printf '%s     %s%s\n' "$dim" "$2" "$reset"
  failures=$((failures + 1))
}
# snippet FILE...: the first 300 bytes of the files, on one line.
snippet() { cat "$@" 2>/dev/null | head -c 300 | tr '\r\n' '  '; }
# got STATUS: curl's %{http_code}, or "no response" when it never got one.
got() { [[ -z "$1" || "$1" == 000 ]] && echo "no response" || echo "$1"; }
# header NAME FILE: the value of the last NAME header in a curl -D dump (case-insensitive), CR stripped.
header() { grep -i "^$1:" "$2" | tail -n 1 | cut -d: -f2- | tr -d '\r' | sed 's/^ *//'; }

# --- /health and /ready
for path in /health /ready; do
  status="$(curl -sS -o "$work/body" -w '%{http_code}' --max-time "$timeout" "${auth[@]}" "$base$path" 2>"$work/err")"
  if [[ "$status" == 200 ]]; then
    pass "GET $path -> 200"
  else
    fail "GET $path -> $(got "$status") (want 200)" "$(snippet "$work/body" "$work/err")"
  fi
done

# --- one streamed answer
start_ms=$(($(date +%s%N) / 1000000))
status="$(curl -sS -N -G --max-time "$stream_timeout" -H 'Accept: text/event-stream' "${auth[@]}" \
  --data-urlencode "query=$query" -D "$work/stream.headers" -o "$work/stream" -w '%{http_code}' \
  "$base/bali-zero/chat-stream" 2>"$work/err")"
elapsed_ms=$(($(date +%s%N) / 1000000 - start_ms))
elapsed="$((elapsed_ms / 1000)).$(((elapsed_ms % 1000) / 100))"
content_type="$(header content-type "$work/stream.headers")"
texts=$(grep -c '^data: {"text":' "$work/stream" 2>/dev/null || true)
sources=$(grep -c '^data: {"sources":' "$work/stream" 2>/dev/null || true)
done_line="$(grep '^data: {"done":true' "$work/stream" 2>/dev/null | tail -n 1)"
error_line="$(grep '^data: {"error":' "$work/stream" 2>/dev/null | tail -n 1)"
if [[ "$status" != 200 ]]; then
  fail "stream -> $(got "$status") (want 200)" "$(snippet "$work/stream" "$work/err")"
elif [[ "$content_type" != text/event-stream* ]]; then
  fail "stream Content-Type is '$content_type' (want text/event-stream)"
elif [[ -n "$error_line" ]]; then
  fail "stream ended with an error event" "${error_line#data: }"
elif [[ "$texts" -lt 1 || "$sources" -lt 1 || -z "$done_line" ]]; then
  fail "stream incomplete: $texts text, $sources sources, $([[ -n $done_line ]] && echo 1 || echo 0) done events" \
    "$(tail -c 300 "$work/stream" | tr '\n' ' ')"
else
  pass "stream: $texts text events, sources, done in ${elapsed}s (${done_line#data: })"
fi

# --- CORS preflight from the allowed origin
status="$(curl -sS -o /dev/null -D "$work/preflight" -w '%{http_code}' --max-time "$timeout" -X OPTIONS \
  -H "Origin: $origin" -H 'Access-Control-Request-Method: GET' -H 'Access-Control-Request-Headers: last-event-id' \
  "$base/bali-zero/chat-stream" 2>"$work/err")"
allow_origin="$(header access-control-allow-origin "$work/preflight")"
if [[ "$status" =~ ^20[04]$ && "$allow_origin" == "$origin" ]]; then
  pass "preflight from $origin -> $status, Access-Control-Allow-Origin echoed"
else
  fail "preflight from $origin -> $(got "$status"), Access-Control-Allow-Origin '${allow_origin}' (want 200/204 echoing the origin)"
fi

# --- an unlisted origin is refused
status="$(curl -sS -o /dev/null -D "$work/evil" -w '%{http_code}' --max-time "$timeout" -X OPTIONS \
  -H "Origin: $evil_origin" -H 'Access-Control-Request-Method: GET' \
  "$base/bali-zero/chat-stream" 2>"$work/err")"
allow_origin="$(header access-control-allow-origin "$work/evil")"
if [[ "$status" == 403 && -z "$allow_origin" ]]; then
  pass "preflight from $evil_origin -> 403 without Access-Control-Allow-Origin"
else
  fail "preflight from $evil_origin -> $(got "$status"), Access-Control-Allow-Origin '${allow_origin}' (want 403 and none)"
fi

if [[ $failures -gt 0 ]]; then
  printf '%s%d check(s) failed%s against %s\n' "$red" "$failures" "$reset" "$base"
  exit 1
fi
printf '%sall checks passed%s against %s\n' "$green" "$reset" "$base"
