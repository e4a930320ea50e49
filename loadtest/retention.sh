#!/usr/bin/env bash
# Intake latency before and during a retention pass (BENCHMARKS.md, "Retention").
#
# 1. Seeds a floodgate for SEED_SECS with SubmitBatch to paused customers, then marks the rows
#    delivered and ages them: half 100 days old (to be archived), half 400 days old (to be
#    archived, then purged).
# 2. "before": restarts floodgate with retention off and measures open-loop Submit at RATE/s.
# 3. "during": restarts it with the first retention pass due 3 s in, and measures the same load
#    while the pass archives and purges. The pass's own log line says how long it ran.
#
# Usage: bash loadtest/retention.sh   (after cargo build --release -p floodgate -p floodgate-loadtest)
# Knobs (environment): RATE (default 3000 calls/s), DURATION (40s), SEED_SECS (5s), PORT (50071),
# RETENTION_FLAGS (extra server flags for the "during" run, e.g. "--retention-batch 500"),
# PG_URL (e.g. postgres://postgres@127.0.0.1:5432/test: run on a scratch PostgreSQL database
# created beside it and dropped afterwards, instead of SQLite; needs psql), KEEP=1 (keep the
# data directory). The defaults seed ~290k rows, which one pass archives and purges inside the
# measured window.
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-3000}
DURATION=${DURATION:-40s}
SEED_SECS=${SEED_SECS:-5s}
PORT=${PORT:-50071}
HTTP_PORT=$((PORT + 1))
bin=target/release
[ -x "$bin/floodgate" ] && [ -x "$bin/floodgate-loadtest" ] \
  || { echo "build first: cargo build --release -p floodgate -p floodgate-loadtest" >&2; exit 1; }
dir=$(mktemp -d)
pid=""
db_flags=()
scratch=""
if [ -n "${PG_URL:-}" ]; then
  command -v psql >/dev/null || { echo "PG_URL needs psql" >&2; exit 1; }
  scratch="fg_retention_$$"
  psql -q "$PG_URL" -c "CREATE DATABASE $scratch"
  db_url="${PG_URL%/*}/$scratch"
  db_flags=(--database-url "$db_url")
fi
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  wait 2>/dev/null
  [ -n "$scratch" ] && psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $scratch WITH (FORCE)"
  if [ -n "${KEEP:-}" ]; then echo "kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT

# Runs SQL on the database under test (SQLite through python3, PostgreSQL through psql).
sql() {
  if [ -n "$scratch" ]; then
    psql -q -t -A -F ' ' "$db_url" -c "$1"
  else
    python3 -c 'import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for row in db.execute(sys.argv[2]).fetchall(): print(*row)
db.commit()' "$dir/floodgate.db" "$1"
  fi
}

start() {
  "$bin/floodgate" serve --data-dir "$dir" --grpc-addr "127.0.0.1:$PORT" \
    --http-addr "127.0.0.1:$HTTP_PORT" "${db_flags[@]}" "$@" >>"$dir/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "floodgate did not become ready; its log:" >&2; cat "$dir/server.log" >&2; exit 1
}
stop() { kill -TERM "$pid"; wait "$pid" || true; pid=""; }
intake() {
  "$bin/floodgate-loadtest" intake --target "http://127.0.0.1:$PORT" \
    --token "$(cat "$dir/admin-token")" "$@"
}
archived_total() {
  curl -fs -H "authorization: Bearer $(cat "$dir/admin-token")" "http://127.0.0.1:$HTTP_PORT/metrics" \
    | awk '/^floodgate_retention_(archived|purged)_total/ {printf "%s=%s ", $1, $2}'
}
day=86400000

echo "== seeding (SubmitBatch for $SEED_SECS) on ${scratch:-SQLite}"
start --retention-interval 0s
intake --mode batch --batch-size 500 --concurrency 4 --duration "$SEED_SECS" --warmup 0s | tail -n 3
stop
sql "UPDATE notifications SET state = 3, created_at = created_at - CAST(100 AS BIGINT) * $day WHERE id % 2 = 0" >/dev/null
sql "UPDATE notifications SET state = 3, created_at = created_at - CAST(400 AS BIGINT) * $day WHERE id % 2 = 1" >/dev/null
echo "aged $(sql 'SELECT COUNT(*) FROM notifications') delivered notifications: half 100 days old, half 400 days old"
[ -n "$scratch" ] && sql "VACUUM ANALYZE notifications" >/dev/null

echo "== before: retention off, Submit at $RATE/s for $DURATION"
start --retention-interval 0s
intake --mode submit --concurrency 64 --rate "$RATE" --duration "$DURATION"
stop

echo "== during: first retention pass due 3 s in, Submit at $RATE/s for $DURATION"
start --retention-interval 3s ${RETENTION_FLAGS:-}
intake --mode submit --concurrency 64 --rate "$RATE" --duration "$DURATION"
echo "retention so far: $(archived_total)"
stop
grep -h "retention pass finished" "$dir/server.log" | sed 's/\x1b\[[0-9;]*m//g' | head -n 3
now=$(($(date +%s) * 1000))
for table in notifications archived_notifications; do
  echo "$table (age in days, rows): $(sql "SELECT ($now - created_at) / $day, COUNT(*) FROM $table GROUP BY 1 ORDER BY 1" | tr '\n' ';')"
done
