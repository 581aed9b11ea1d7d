#!/usr/bin/env bash
# Checkout throughput end to end, against what the same PostgreSQL server does with plain transactions.
#
# 1. Starts the release `mercato up` on PostgreSQL (fresh databases mercato_bench_<run>_<service>, dropped at
#    the end), rate limits off, and creates one product with plenty of stock and one customer.
# 2. Drives `POST /v1/orders` (one unit, tok_visa, a fresh Idempotency-Key per request) through the gateway
#    with wrk: CONNECTIONS connections for DURATION. Every checkout runs the whole saga (reserve stock, capture
#    payment, post to the ledger, commit stock, confirm) and its events.
#    The run ends when the events it caused are handled too (every outbox empty): checkouts/s divides by the
#    load's duration plus that wait, and the counts below include the consumers' work.
# 3. Counts the PostgreSQL commits the run made (pg_stat_database.xact_commit of the bench databases), so
#    commits per checkout are measured, not guessed.
#    Also the commits that wrote (WAL commit records between the run's start and end, by pg_waldump, when the
#    server is local and its WAL readable): pg_stat_database counts read-only single statements as commits too.
#    With them, every WAL record the run wrote, and each busy table's updates and how many were heap-only (HOT:
#    no index touched).
#    Also where the CPU went (user + system seconds of `mercato up` and of all PostgreSQL server processes,
#    from /proc) and, when the server has pg_stat_statements loaded, the statements per checkout.
# 4. Runs pgbench for the same DURATION and CONNECTIONS with a one-row-update transaction (the cheapest
#    commit), and reports: checkouts/s, p50/p99, commits per checkout, pgbench commits/s, and the ratio
#    checkouts/s ÷ (pgbench commits/s ÷ commits per checkout) — the share of the server's raw commit rate the
#    platform turns into checkouts.
#    Also the ceiling of that ratio if the platform's own processes used no CPU at all: the run's CPU-seconds
#    (mercato + PostgreSQL) spent on the checkouts' PostgreSQL work alone.
# 5. Runs pgbench's own default transaction (TPC-B-like, scale max(CONNECTIONS, 10)) for the same DURATION and
#    CONNECTIONS, the rate usually quoted as a server's "pgbench rate", and reports the ratio against it too.
#
# Before measuring, WARMUP (10s) of the same load, then ANALYZE of every service database: a brand-new database
# has no statistics until autovacuum's first pass (up to a minute), and the cached generic plans of that time pick
# wrong indexes (seen: the orders idempotency check walking all of a customer's orders, the saga's step update
# walking the in-flight index). A shop runs on analysed tables; the benchmark measures that. WARMUP=0 skips it.
#
# Usage: bench/checkout.sh     (DURATION=30s CONNECTIONS=16 PRODUCTS=1 WARMUP=10s PG=postgres://postgres@127.0.0.1:5432 BIN=;
#                               needs wrk, pgbench, psql, curl, python3)
# PRODUCTS=N spreads the orders over N products (each request picks one at random): with 1, every checkout
# holds and sells stock of the same inventory row, the worst case of contention.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-30s}"
CONNECTIONS="${CONNECTIONS:-16}"
PRODUCTS="${PRODUCTS:-1}"
THREADS=$((CONNECTIONS < 2 ? CONNECTIONS : 2)) # wrk and pgbench: at most one thread per connection
WARMUP="${WARMUP:-10s}"
PG="${PG:-postgres://postgres@127.0.0.1:5432}"
TARGET="${CARGO_TARGET_DIR:-target}"
HTTP=127.0.0.1:18180
BASE="http://$HTTP"
RUN="bench_$(date +%s)"

# BIN=path runs that binary instead of building this checkout's (a baseline built from another commit, say).
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked -p mercato >/dev/null 2>&1
  BIN="$TARGET/release/mercato"
fi
WORK=$(mktemp -d)
services=(auth users catalog cart orders payments ledger refunds deliveries notifications analytics support)
declare -A ports=([auth]=50051 [users]=50052 [catalog]=50053 [cart]=50054 [orders]=50055 [payments]=50056
  [ledger]=50057 [refunds]=50058 [deliveries]=50059 [notifications]=50060 [analytics]=50061 [support]=50062)
env_vars=(MERCATO_DATA_DIR="$WORK" MERCATO_HTTP_ADDR=$HTTP MERCATO_METRICS_ADDR=127.0.0.1:18190
  MERCATO_RATE_LIMITS=off MERCATO_LOG=warn MERCATO_ADMIN_EMAIL=bench@example.com
  MERCATO_ADMIN_PASSWORD=bench-password-1)
for s in "${services[@]}"; do
  up=$(echo "$s" | tr '[:lower:]' '[:upper:]')
  env_vars+=("MERCATO_${up}_DATABASE_URL=$PG/mercato_${RUN}_$s" "MERCATO_${up}_URL=http://127.0.0.1:$((ports[$s] + 10000))")
done

cleanup() {
  [ -n "${PID:-}" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  for s in "${services[@]}"; do psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS mercato_${RUN}_$s WITH (FORCE)" || true; done
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS ${RUN}_pgbench WITH (FORCE)" || true
  rm -rf "$WORK"
}
trap cleanup EXIT
env "${env_vars[@]}" "$BIN" up >"$WORK/mercato.log" 2>&1 &
PID=$!
until curl -fs -o /dev/null "$BASE/readyz"; do sleep 0.1; done

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
admin=$(curl -fsS "$BASE/v1/auth/login" -H 'content-type: application/json' \
  -d '{"email":"bench@example.com","password":"bench-password-1"}' | json '["accessToken"]')
products=()
for n in $(seq 1 "$PRODUCTS"); do
  product=$(curl -fsS "$BASE/v1/products" -H "authorization: Bearer $admin" -H 'content-type: application/json' \
    -d '{"sku":"BENCH-'"$n"'","name":"Bench '"$n"'","description":"","category":"bench","price":{"currency":"EUR","amountMinor":"100"},"active":true}' |
    json '["id"]')
  curl -fsS -o /dev/null "$BASE/v1/products/$product/inventory:adjust" -H "authorization: Bearer $admin" \
    -H 'content-type: application/json' -d '{"delta": 100000000}'
  products+=("\"$product\"")
done
product_list=$(IFS=,; echo "${products[*]}")
curl -fsS -o /dev/null "$BASE/v1/auth/register" -H 'content-type: application/json' \
  -d '{"email":"buyer@example.com","password":"buyer-password-1","displayName":"Buyer"}'
buyer=$(curl -fsS "$BASE/v1/auth/login" -H 'content-type: application/json' \
  -d '{"email":"buyer@example.com","password":"buyer-password-1"}' | json '["accessToken"]')

# Access tokens live 15 minutes: longer runs would need a refresh.
cat >"$WORK/checkout.lua" <<EOF
local counter = 0
local products = {$product_list}
local head = '{"shippingAddress":{"name":"B","line1":"1 Main St","line2":"","city":"Paris","region":"","postalCode":"75001","country":"FR"},"paymentMethod":"tok_visa","items":[{"productId":"'
local tail = '","quantity":1}]}'
-- Keys unique across wrk runs too: unseeded, math.random gives every run the same numbers, and the measured
-- run would replay the warm-up's orders (seen: a third of its requests were replays).
math.randomseed(os.time())
function setup(thread)
  thread:set("tid", string.format("%d-%d", os.time(), math.random(1, 1e9)))
end
function request()
  counter = counter + 1
  return wrk.format("POST", "/v1/orders", {
    ["content-type"] = "application/json",
    ["authorization"] = "Bearer $buyer",
    ["idempotency-key"] = string.format("bench-%s-%d", tid, counter),
  }, head .. products[math.random(#products)] .. tail)
end
function response(status, headers, body)
  if status ~= 201 or not string.find(body, "ORDER_STATUS_CONFIRMED", 1, true) then
    failures = (failures or 0) + 1
  end
end
EOF

commits() {
  psql "$PG/postgres" -Atc "SELECT COALESCE(SUM(xact_commit), 0) FROM pg_stat_database WHERE datname LIKE 'mercato\_${RUN}\_%'"
}
# CPU seconds (user + system) of the processes with this command name, from /proc/<pid>/stat (field 2 is
# "(comm)", so fields are counted from its closing parenthesis).
cpu_of() {
  python3 - "$1" <<'PY'
import os, sys
ticks, total = os.sysconf("SC_CLK_TCK"), 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        continue
    comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
    if comm == sys.argv[1]:
        total += int(rest[11]) + int(rest[12])
print(total / ticks)
PY
}
statements=$(psql "$PG/postgres" -Atc "SELECT COUNT(*) FROM pg_extension WHERE extname = 'pg_stat_statements'" 2>/dev/null || echo 0)
if [ "$statements" = 0 ] && psql "$PG/postgres" -qc "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" 2>/dev/null; then
  statements=1
fi
# The services that publish events (a CASE around a missing table still fails: the query is planned whole).
outboxes=()
for s in "${services[@]}"; do
  [ "$(psql "$PG/mercato_${RUN}_$s" -Atc "SELECT to_regclass('outbox') IS NOT NULL")" = t ] && outboxes+=("$s")
done
# Events written but not yet handled, over every service's outbox (in the embedded mode an event is marked sent
# once every consumer has handled it).
backlog() {
  local total=0 n
  for s in "${outboxes[@]}"; do
    n=$(psql "$PG/mercato_${RUN}_$s" -Atc "SELECT COUNT(*) FROM outbox WHERE sent_time IS NULL")
    total=$((total + n))
  done
  echo "$total"
}
# Waits until every event is handled (at most 10 minutes); prints how long that took, in seconds.
drain() {
  local start=$SECONDS
  while [ "$(backlog)" != 0 ] && [ $((SECONDS - start)) -lt 600 ]; do sleep 0.5; done
  echo $((SECONDS - start))
}
orders_by_status() {
  psql "$PG/mercato_${RUN}_orders" -Atc "SELECT COUNT(*) FILTER (WHERE status = 'CONFIRMED'), COUNT(*) FILTER (WHERE status <> 'CONFIRMED') FROM orders"
}
if [ "$WARMUP" != 0 ]; then
  wrk -t "$THREADS" -c "$CONNECTIONS" -d "$WARMUP" -s "$WORK/checkout.lua" "$BASE" >/dev/null
  sleep 1
  drain >/dev/null
  for s in "${services[@]}"; do psql "$PG/mercato_${RUN}_$s" -qc "ANALYZE"; done
fi
IFS='|' read -r warm_confirmed warm_failed <<<"$(orders_by_status)"
sleep 1
[ "$statements" = 1 ] && { psql "$PG/postgres" -qAtc "SELECT pg_stat_statements_reset()" >/dev/null 2>&1 || statements=0; }
before=$(commits)
lsn_before=$(psql "$PG/postgres" -Atc "SELECT pg_current_wal_lsn()")
cpu_before=("$(cpu_of mercato)" "$(cpu_of postgres)")
wrk -t "$THREADS" -c "$CONNECTIONS" -d "$DURATION" --latency -s "$WORK/checkout.lua" "$BASE" | tee "$WORK/wrk.txt"
# The run is over when the work it caused is: events still waiting for their consumers are part of it.
left=$(backlog)
drained=$(drain)
# Counted once the work is done: a checkout in flight when wrk stopped (its client gone) still completes.
IFS='|' read -r confirmed failed <<<"$(orders_by_status)"
echo "events waiting when wrk stopped: $left; handled $drained s later"
cpu_after=("$(cpu_of mercato)" "$(cpu_of postgres)")
lsn_after=$(psql "$PG/postgres" -Atc "SELECT pg_current_wal_lsn()")
sleep 2 # pg_stat counters are flushed asynchronously
after=$(commits)
confirmed=$((confirmed - warm_confirmed))
failed=$((failed - warm_failed))
if [ "$failed" != 0 ]; then
  echo "orders not confirmed, by status and reason:"
  psql "$PG/mercato_${RUN}_orders" -Atc \
    "SELECT status, saga_step, failure_reason, COUNT(*) FROM orders WHERE status <> 'CONFIRMED' GROUP BY 1, 2, 3"
  echo "errors and warnings the platform logged:"
  grep -E '"level":"(ERROR|WARN)"' "$WORK/mercato.log" | head -20 || true
fi
if [ "$statements" = 1 ]; then
  psql "$PG/postgres" -Atc "SELECT SUM(calls) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
    WHERE d.datname LIKE 'mercato\_${RUN}\_%'" >"$WORK/statements.txt"
  echo "statements by database and kind, per checkout-run (calls, database, statement):"
  psql "$PG/postgres" -Atc "SELECT calls, substr(d.datname, length('mercato_${RUN}_') + 1), left(regexp_replace(query, '\s+', ' ', 'g'), 110)
    FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname LIKE 'mercato\_${RUN}\_%'
    ORDER BY calls DESC LIMIT 80"
else
  echo "" >"$WORK/statements.txt"
fi
# Commit records in the WAL written during the run: the transactions that wrote something (every database of
# the server; nothing else runs meanwhile but autovacuum).
WALDUMP=$(ls /usr/lib/postgresql/*/bin/pg_waldump 2>/dev/null | tail -1)
PGDATA_DIR=$(psql "$PG/postgres" -Atc "SHOW data_directory" 2>/dev/null || true)
# Also every WAL record of the run: what the server wrote for the checkouts (a pgbench commit writes two).
wal="|"
if [ -n "$WALDUMP" ] && [ -r "$PGDATA_DIR/pg_wal" ]; then
  wal=$("$WALDUMP" -p "$PGDATA_DIR/pg_wal" -s "$lsn_before" -e "$lsn_after" 2>/dev/null |
    awk '/desc: COMMIT/ { commits++ } END { print commits + 0 "|" NR }' || true)
fi
echo "$wal" >"$WORK/wal.txt"
echo "updates and heap-only (HOT) updates by table, since the databases were made (warm-up included):"
for s in "${services[@]}"; do
  psql "$PG/mercato_${RUN}_$s" -Atc "SELECT '$s', relname, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
    WHERE n_tup_upd >= 100 ORDER BY n_tup_upd DESC"
done
kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=

# pgbench: the same server, connections and duration; each transaction updates one row and commits.
psql "$PG/postgres" -qc "CREATE DATABASE ${RUN}_pgbench"
pgbench -q -i -s 10 "$PG/${RUN}_pgbench" >/dev/null 2>&1
cat >"$WORK/commit.sql" <<'EOF'
\set aid random(1, 1000000)
UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;
EOF
pgbench -n -c "$CONNECTIONS" -j "$THREADS" -T "${DURATION%s}" -f "$WORK/commit.sql" "$PG/${RUN}_pgbench" | tee "$WORK/pgbench.txt"
# And pgbench's own default transaction (TPC-B-like: three updates, a select and an insert), the figure usually
# quoted as a server's pgbench rate. One branch row per client at least, so clients do not queue on one row.
psql "$PG/postgres" -qc "DROP DATABASE ${RUN}_pgbench WITH (FORCE)"
psql "$PG/postgres" -qc "CREATE DATABASE ${RUN}_pgbench"
pgbench -q -i -s $((CONNECTIONS > 10 ? CONNECTIONS : 10)) "$PG/${RUN}_pgbench" >/dev/null 2>&1
pgbench -n -c "$CONNECTIONS" -j "$THREADS" -T "${DURATION%s}" "$PG/${RUN}_pgbench" | tee "$WORK/pgbench-tpcb.txt"

seconds=${DURATION%s}
python3 - "$confirmed" "$failed" "$before" "$after" "$((seconds + drained))" "$WORK/wrk.txt" "$WORK/pgbench.txt" \
  "$WORK/statements.txt" "${cpu_before[@]}" "${cpu_after[@]}" "$WORK/wal.txt" "$WORK/pgbench-tpcb.txt" <<'EOF'
import re, sys
confirmed, failed, before, after, seconds = map(int, sys.argv[1:6])
wrk, pgb, stmts = open(sys.argv[6]).read(), open(sys.argv[7]).read(), open(sys.argv[8]).read().strip()
cpu = [b - a for a, b in zip(map(float, sys.argv[9:11]), map(float, sys.argv[11:13]))]
writes, records = open(sys.argv[13]).read().strip().split("|")
pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", wrk, re.M))
tps = float(re.search(r"tps = ([\d.]+)", pgb).group(1))
rate = confirmed / seconds
per = (after - before) / max(confirmed + failed, 1)
equivalent = tps / per
print(f"checkouts: {confirmed} confirmed, {failed} not, {rate:.1f}/s over {seconds} s (the load, then until its "
      f"events were handled); p50 {pct.get('50')}, p99 {pct.get('99')}")
requests = int(re.search(r"(\d+) requests in", wrk).group(1))
# Every request carries a new key: answered requests and new orders differ only by those cut off at the end.
print(f"requests answered: {requests}; orders they created: {confirmed + failed}")
print(f"PostgreSQL commits per checkout (all services): {per:.1f}")
# pg_waldump that could not read the WAL leaves 0 records: unknown, not none.
if writes and int(writes) > 0:
    per_write = int(writes) / max(confirmed + failed, 1)
    print(f"commits that wrote (WAL commit records) per checkout: {per_write:.1f}; "
          f"ratio counting only those: {100 * rate / (tps / per_write):.0f}%")
if records and int(records) > 0:
    print(f"WAL records per checkout: {int(records) / max(confirmed + failed, 1):.1f}")
if stmts:
    print(f"PostgreSQL statements per checkout (pg_stat_statements, all services): {int(stmts) / max(confirmed + failed, 1):.1f}")
done = max(confirmed + failed, 1)
print("CPU per checkout: " + ", ".join(f"{name} {1000 * s / done:.2f} ms" for name, s in zip(("mercato", "postgres"), cpu))
      + f" (CPU-seconds over the run: {', '.join(f'{s:.1f}' for s in cpu)})")
print(f"pgbench: {tps:.0f} commits/s = {equivalent:.1f} checkout-equivalents/s")
print(f"ratio: {100 * rate / equivalent:.0f}% of the server's commit rate turned into checkouts")
tpcb = float(re.search(r"tps = ([\d.]+)", open(sys.argv[14]).read()).group(1))
print(f"pgbench's default (TPC-B-like) transaction: {tpcb:.0f} commits/s = {tpcb / per:.1f} checkout-equivalents/s; "
      f"ratio against it: {100 * rate / (tpcb / per):.0f}%")
# The ratio if mercato cost nothing: the same CPU-seconds all spent on the checkouts' own PostgreSQL work. A bound
# on what any change to the services alone can reach; only less database work per checkout moves it.
if cpu[1] > 0:
    print(f"ceiling: {100 * rate * (cpu[0] + cpu[1]) / cpu[1] / equivalent:.0f}% if mercato used no CPU and "
          f"PostgreSQL had all of it (its {1000 * cpu[1] / done:.2f} ms per checkout alone)")
EOF
