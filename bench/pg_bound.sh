#!/usr/bin/env bash
# What PostgreSQL alone can write on this machine: a minimal insert, and
# riskgate's own evaluation writes, with pgbench at 1, 16 and 64 clients.
#   bench/pg_bound.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
admin="${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}"
psql "$admin/postgres" -q -c "DROP DATABASE IF EXISTS riskgate_bound WITH (FORCE)" -c "CREATE DATABASE riskgate_bound"
psql "$admin/riskgate_bound" -qc "CREATE TABLE t (id bigserial PRIMARY KEY, v text, created_at timestamptz DEFAULT now())"
RISKGATE_DATABASE_URL="$admin/riskgate_bound" RISKGATE_API_KEYS=x cargo run --release --quiet -- migrate
for script in pg_insert_minimal pg_write_evaluation pg_write_review; do
  for clients in 1 16 64; do
    tps="$(pgbench "$admin/riskgate_bound" -n -c "$clients" -j 2 -T "$seconds" -f "bench/$script.sql" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p')"
    printf '%-22s %3d clients %10s tps\n' "$script" "$clients" "$tps"
  done
done
psql "$admin/postgres" -qc "DROP DATABASE riskgate_bound WITH (FORCE)"
