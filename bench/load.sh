#!/usr/bin/env bash
# HTTP load harness: riskgate (release build) on PostgreSQL or SQLite, against
# a fast loopback fake Roundtable (examples/fake_roundtable.rs), driven by wrk
# for a fixed time at each client count. Prints evaluations/s, p50/p95/p99,
# errors and riskgate's peak RSS. Everything runs on this machine, on loopback.
#
#   bench/load.sh [postgres|sqlite] [seconds per run] [clients ...]
#   bench/load.sh postgres 20 1 16 64
set -euo pipefail
cd "$(dirname "$0")/.."

backend="${1:-postgres}"
seconds="${2:-20}"
shift $(( $# > 2 ? 2 : $# ))
clients=("$@")
[ ${#clients[@]} -gt 0 ] || clients=(1 16 64)
sessions="${SESSIONS:-5000}"
app_port="${APP_PORT:-18080}"
fake_port="${FAKE_PORT:-18081}"
pg_admin="${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}"

command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null 2>&1 || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }; }
cargo build --release --quiet --bin riskgate --example fake_roundtable
target="${CARGO_TARGET_DIR:-target}/release"

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

case "$backend" in
  postgres)
    psql "$pg_admin/postgres" -qc "DROP DATABASE IF EXISTS riskgate_bench WITH (FORCE)" -qc "CREATE DATABASE riskgate_bench"
    database_url="$pg_admin/riskgate_bench" ;;
  sqlite) database_url="sqlite://$work/bench.db" ;;
  *) echo "backend: postgres or sqlite" >&2; exit 2 ;;
esac

FAKE_SESSIONS="$sessions" "$target/examples/fake_roundtable" "127.0.0.1:$fake_port" & pids+=($!)
RISKGATE_LISTEN="127.0.0.1:$app_port" RISKGATE_DATABASE_URL="$database_url" \
  RISKGATE_API_KEYS="bench:bench-key" ROUNDTABLE_API_URL="http://127.0.0.1:$fake_port" \
  RUST_LOG="${RUST_LOG:-warn}" "$target/riskgate" serve > "$work/riskgate.log" 2>&1 & app=$!
pids+=($app)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$app_port/readyz" >/dev/null && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$app_port/readyz" >/dev/null || { cat "$work/riskgate.log"; exit 1; }

echo "riskgate on $backend, $sessions sessions (both shapes), ${seconds}s per run, commit $(git rev-parse --short HEAD)"
printf '%8s %12s %9s %9s %9s %8s %10s\n' clients "evals/s" "p50 ms" "p95 ms" "p99 ms" errors "peak RSS"
for c in "${clients[@]}"; do
  threads=$(( c < 2 ? c : 2 ))
  line="$(SESSIONS="$sessions" wrk -t "$threads" -c "$c" -d "${seconds}s" -s bench/evaluate.lua \
    "http://127.0.0.1:$app_port/v1/evaluations" | grep '^RESULT')"
  get() { sed -n "s/.*$1=\([0-9]*\).*/\1/p" <<<"$line"; }
  rss_kb="$(awk '/VmHWM/ {print $2}' "/proc/$app/status")"
  awk -v c="$c" -v r="$(get requests)" -v d="$(get duration_us)" -v p50="$(get p50_us)" -v p95="$(get p95_us)" \
      -v p99="$(get p99_us)" -v e1="$(get status_errors)" -v e2="$(get socket_errors)" -v rss="$rss_kb" \
      'BEGIN { printf "%8d %12.0f %9.2f %9.2f %9.2f %8d %8.1f MB\n", c, r / (d / 1e6), p50 / 1000, p95 / 1000, p99 / 1000, e1 + e2, rss / 1024 }'
done
