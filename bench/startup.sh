#!/usr/bin/env bash
# Start-up benchmark for `mercato up` on the embedded defaults (SQLite, in-process bus).
#
# Measures, over RUNS runs each on a fresh data directory (cold) and on the data of the previous run (warm):
#   - time from exec to the gateway's /readyz answering 200 (which needs auth and catalog SERVING);
#   - resident memory (VmRSS from /proc) of the idle process 3 s after it became ready.
# With --clean-build it first times a release build of the binary in an empty target directory.
#
# Usage: bench/startup.sh [--clean-build]      (RUNS=5 by default; needs curl)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-5}"
TARGET="${CARGO_TARGET_DIR:-target}"

if [[ "${1:-}" == "--clean-build" ]]; then
  # An empty target directory: every dependency is compiled (the registry cache is reused, no downloads).
  TARGET=$(mktemp -d)
  trap 'rm -rf "$TARGET"' EXIT
  started=$(date +%s.%N)
  CARGO_TARGET_DIR="$TARGET" cargo build --release --locked -p mercato >/dev/null 2>&1
  ended=$(date +%s.%N)
  printf 'clean release build: %.0f s on %s cores\n' "$(echo "$ended - $started" | bc)" "$(nproc)"
else
  cargo build --release --locked -p mercato >/dev/null 2>&1
fi
BIN="$TARGET/release/mercato"
printf 'binary: %s MiB\n' "$(du -m "$BIN" | cut -f1)"
HTTP=127.0.0.1:18080

measure() { # $1 = data dir; prints "<ready ms> <rss KiB>"
  local data=$1 pid started ready_ms rss
  started=$(date +%s%N)
  MERCATO_DATA_DIR="$data" MERCATO_HTTP_ADDR=$HTTP MERCATO_METRICS_ADDR=127.0.0.1:19090 \
    MERCATO_AUTH_URL=http://127.0.0.1:15051 MERCATO_CATALOG_URL=http://127.0.0.1:15053 \
    MERCATO_CART_URL=http://127.0.0.1:15054 MERCATO_ORDERS_URL=http://127.0.0.1:15055 \
    MERCATO_PAYMENTS_URL=http://127.0.0.1:15056 MERCATO_LEDGER_URL=http://127.0.0.1:15057 \
    MERCATO_REFUNDS_URL=http://127.0.0.1:15058 MERCATO_LOG=warn \
    "$BIN" up --demo >/dev/null 2>&1 &
  pid=$!
  until curl -fs -o /dev/null "http://$HTTP/readyz"; do sleep 0.005; done
  ready_ms=$(( ($(date +%s%N) - started) / 1000000 ))
  sleep 3
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  kill -TERM "$pid"; wait "$pid"
  echo "$ready_ms $rss"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

cold=(); warm=()
for _ in $(seq "$RUNS"); do
  data=$(mktemp -d)
  cold+=("$(measure "$data")")
  warm+=("$(measure "$data")")
  rm -rf "$data"
done
report() { # $1 = label, rest = "ms rss" pairs
  local label=$1; shift
  printf '%s: ready in %s ms (median of %s; all: %s), idle RSS %s MiB (median)\n' "$label" \
    "$(printf '%s\n' "$@" | awk '{print $1}' | median)" "$#" "$(printf '%s\n' "$@" | awk '{printf "%s ", $1}')" \
    "$(printf '%s\n' "$@" | awk '{print $2}' | median | awk '{printf "%.1f", $1/1024}')"
}
report "cold start (empty data dir, migrations + demo seed)" "${cold[@]}"
report "warm start (existing data)" "${warm[@]}"
