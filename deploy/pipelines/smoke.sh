#!/usr/bin/env bash
# Post-deploy smoke test, run from the CI runner against the public URL of the host just
# deployed: /healthz (the process is up), /readyz (its database and broker answer) and the
# web client's page. Retries for a while, since a switched upstream or a fresh DNS record
# may take a few seconds to settle; exits non-zero naming the first check that failed.
#   deploy/pipelines/smoke.sh https://chat.example.org
# SMOKE_ATTEMPTS (default 10) and SMOKE_DELAY (seconds, default 3) tune the retries.
set -euo pipefail

base="${1:?usage: smoke.sh BASE_URL (e.g. https://chat.example.org)}"
base="${base%/}"
attempts="${SMOKE_ATTEMPTS:-10}"
delay="${SMOKE_DELAY:-3}"

check() {  # path, what the body must contain (case-insensitive; empty: anything)
  local url="$base$1" body
  for attempt in $(seq 1 "$attempts"); do
    if body="$(curl --fail --silent --show-error --max-time 10 "$url" 2>&1)" \
      && { [ -z "$2" ] || grep -qi -- "$2" <<<"$body"; }; then
      echo "smoke: $url ok"
      return 0
    fi
    echo "smoke: $url not ready (attempt $attempt/$attempts): ${body:0:200}" >&2
    [ "$attempt" -lt "$attempts" ] && sleep "$delay"
  done
  echo "smoke: FAILED $url" >&2
  return 1
}

check /healthz ""
check /readyz ""
check / "<title>cmschat"
echo "smoke: $base passed"
