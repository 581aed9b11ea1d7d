#!/usr/bin/env bash
# The gateway hop (issue #3): `GET /v1/products/{id}` through the gateway (JWT verified, rate limits on)
# against the same call straight to the catalog over gRPC, and against nginx proxying to a trivial backend.
#
# 1. Builds the release `mercato` and the load generator (crates/mercato/examples/loadgen.rs).
# 2. Starts auth, catalog and the gateway as three processes (`mercato serve <name>`, SQLite in a temporary
#    data dir, in-process buses, logs at warn), rate limits on and in memory with a budget no run reaches
#    (RATE_LIMITS below), so every request pays for the check but none is refused. Creates one product as the
#    administrator and one customer, whose access token goes as `authorization: Bearer` on every request of
#    every target: the gateway verifies it, and so does the catalog (its own access check) on both paths.
# 3. Starts two nginx instances of its own (never the system service): a backend answering `return 200` with
#    the very JSON the gateway answers for the product, and a proxy (one worker per core, keep-alive upstream)
#    in front of it; the proxy's CPU is thus measured apart from the backend's.
# 4. Takes /var/tmp/bench.lock (other benchmarks take it too), waits until no compiler, wrk or other benchmark
#    runs, then for ROUNDS rounds, for each of CONNECTIONS, for each target (direct gRPC, gateway, nginx):
#    a warm-up run (not counted), then a DURATION-second run of the load generator (closed loop, one request in
#    flight per connection, every latency kept), reading utime+stime of every server process from
#    /proc/<pid>/stat before and after it. Then (CROSSCHECK=1) wrk on the two HTTP targets and h2load on the
#    catalog as cross-checks, and (PERF=1) a `perf record` of the gateway under load, its samples attributed to
#    the gateway's steps.
# 5. Prints every run, the medians over rounds, and the ratios the issue asks for.
#
# Usage: bench/gateway.sh   (ROUNDS=3 DURATION=10 WARMUP=2 CONNECTIONS="1 8 32" PERF=1 CROSSCHECK=1
#                            TARGETS="direct gateway nginx" BUILD=1 WORKERS=<n> RESULTS=<dir to keep raw output
#                            and perf.data>; needs nginx, wrk, h2load, curl, python3, and perf for PERF=1)
# WORKERS=n runs auth, catalog and the gateway with n Tokio worker threads each (TOKIO_WORKER_THREADS); unset,
# each takes one per CPU, as a process alone on the machine would. The load generator keeps its default.
# GRPC_TLS=1 runs the services with TLS between them (MERCATO_GRPC_TLS_*, a CA and one certificate for 127.0.0.1
# made here with openssl): the gateway's call to the catalog, and the catalog's to auth, go over mutual TLS. The
# load generator and h2load speak plain gRPC, so the direct targets and CROSSCHECK are left out then.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
CONNECTIONS="${CONNECTIONS:-1 8 32}"
PERF="${PERF:-1}"
CROSSCHECK="${CROSSCHECK:-1}"
# direct, gateway, nginx; direct_anon and gateway_anon send no token (GetProduct allows anonymous callers): what
# verifying the JWT costs.
TARGETS="${TARGETS:-direct gateway nginx}"
GRPC_TLS="${GRPC_TLS:-0}"
if [ "$GRPC_TLS" = 1 ]; then
  case " $TARGETS " in *" direct"*) echo "GRPC_TLS=1: leave out the direct targets (the load generator speaks plain gRPC)" >&2; exit 1 ;; esac
  [ "$CROSSCHECK" = 0 ] || { echo "GRPC_TLS=1: set CROSSCHECK=0 (h2load speaks plain gRPC to the catalog)" >&2; exit 1; }
  command -v openssl >/dev/null || { echo "GRPC_TLS=1 needs openssl" >&2; exit 1; }
fi
LOCK="${BENCH_LOCK:-/var/tmp/bench.lock}"
QUIET_TIMEOUT="${QUIET_TIMEOUT:-1800}"
# Far above what two cores can serve, so no request is refused; logins get room for one per run.
RATE_LIMITS="default=1000000/s:1000000,POST /v1/auth/login=1000/min:1000"
TARGET="${CARGO_TARGET_DIR:-target}"
HTTP=127.0.0.1:18380
AUTH=127.0.0.1:18351
CATALOG=127.0.0.1:18353
PROXY=127.0.0.1:18480
BACKEND=127.0.0.1:18481
BASE="http://$HTTP"

for tool in nginx wrk h2load curl python3; do
  command -v "$tool" >/dev/null ||
    { echo "bench/gateway.sh needs $tool (Debian: apt-get install nginx-light wrk nghttp2-client curl)" >&2; exit 1; }
done
# BUILD=0 measures the binaries already built (e.g. while the tree does not compile).
if [ "${BUILD:-1}" = 1 ]; then
  # Two builds: together with the example, the binary would get the dev-dependencies' features (the orders
  # crate's fail points), differ from the binary bench/checkout.sh and bench/startup.sh build, and each script
  # would rebuild it after the other.
  for target in "--bin mercato" "--example loadgen"; do
    # shellcheck disable=SC2086 # two words on purpose
    cargo build --release --locked -p mercato $target >/dev/null 2>&1 || cargo build --release --locked -p mercato $target
  done
fi
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
# Copies: the shared target directory may be rebuilt by someone else while this runs.
cp "$TARGET/release/mercato" "$TARGET/release/examples/loadgen" "$WORK/"
BIN="$WORK/mercato"
LOADGEN="$WORK/loadgen"
BUILT="$(date -u -r "$TARGET/release/mercato" '+%Y-%m-%d %H:%M UTC'), build id $(readelf -n "$BIN" 2>/dev/null |
  awk '/Build ID/ {print $3}')"
OUT="${RESULTS:-$WORK/results}"
mkdir -p "$OUT"

# One service per process, so each one's CPU is its own.
scheme=http
if [ "$GRPC_TLS" = 1 ]; then
  tls=$WORK/tls
  mkdir -p "$tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tls/ca.key" -out "$tls/ca.crt" \
    -days 2 -subj /CN=bench-ca -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
    2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tls/tls.key" -out "$tls/tls.csr" \
    -subj /CN=mercato 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' >"$tls/ext"
  openssl x509 -req -in "$tls/tls.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial -days 1 \
    -out "$tls/tls.crt" -extfile "$tls/ext" 2>/dev/null
  scheme=https
fi
common=(MERCATO_DATA_DIR="$WORK/data" MERCATO_LOG=warn MERCATO_AUTH_URL="$scheme://$AUTH"
  MERCATO_CATALOG_URL="$scheme://$CATALOG" MERCATO_ADMIN_EMAIL=bench@example.com
  MERCATO_ADMIN_PASSWORD=bench-password-1)
if [ "$GRPC_TLS" = 1 ]; then
  common+=(MERCATO_GRPC_TLS_CERT="$tls/tls.crt" MERCATO_GRPC_TLS_KEY="$tls/tls.key" MERCATO_GRPC_TLS_CA="$tls/ca.crt")
fi
if [ -n "${WORKERS:-}" ]; then
  common+=(TOKIO_WORKER_THREADS="$WORKERS")
fi
mkdir -p "$WORK/data"
env "${common[@]}" MERCATO_GRPC_ADDR=$AUTH MERCATO_METRICS_ADDR=127.0.0.1:18391 "$BIN" serve auth \
  >"$WORK/auth.log" 2>&1 &
AUTH_PID=$!
PIDS+=("$AUTH_PID")
env "${common[@]}" MERCATO_GRPC_ADDR=$CATALOG MERCATO_METRICS_ADDR=127.0.0.1:18393 "$BIN" serve catalog \
  >"$WORK/catalog.log" 2>&1 &
CATALOG_PID=$!
PIDS+=("$CATALOG_PID")
env "${common[@]}" MERCATO_HTTP_ADDR=$HTTP MERCATO_METRICS_ADDR=127.0.0.1:18390 MERCATO_RATE_LIMITS="$RATE_LIMITS" \
  "$BIN" serve gateway >"$WORK/gateway.log" 2>&1 &
GATEWAY_PID=$!
PIDS+=("$GATEWAY_PID")
# The gateway's /readyz waits for every service with a route; only auth and catalog run here.
for probe in 127.0.0.1:18391/readyz 127.0.0.1:18393/readyz $HTTP/healthz; do
  for _ in $(seq 300); do curl -fs -o /dev/null "http://$probe" && break; sleep 0.1; done
done

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
login() {
  curl -fsS "$BASE/v1/auth/login" -H 'content-type: application/json' -d "{\"email\":\"$1\",\"password\":\"$2\"}" |
    json '["accessToken"]'
}
for _ in $(seq 100); do admin=$(login bench@example.com bench-password-1 2>/dev/null) && break; sleep 0.2; done
product=$(curl -fsS "$BASE/v1/products" -H "authorization: Bearer $admin" -H 'content-type: application/json' \
  -d '{"sku":"BENCH-1","name":"Bench","description":"A product to read","category":"bench","price":{"currency":"EUR","amountMinor":"1999"},"active":true}' |
  json '["id"]')
curl -fsS -o /dev/null "$BASE/v1/auth/register" -H 'content-type: application/json' \
  -d '{"email":"reader@example.com","password":"reader-password-1","displayName":"Reader"}'
token=$(login reader@example.com reader-password-1)
curl -fsS -D "$OUT/gateway-answer.txt" -o "$WORK/product.json" "$BASE/v1/products/$product" \
  -H "authorization: Bearer $token"
cat "$WORK/product.json" >>"$OUT/gateway-answer.txt"

# nginx: the backend answers the gateway's JSON; the proxy keeps upstream connections open. Both allow any
# number of requests per connection (nginx closes after 1000 by default, which a closed loop would see).
body=$(cat "$WORK/product.json")
case "$body" in *"'"* | *'$'* | *\\*) echo "product JSON needs escaping for nginx: $body" >&2; exit 1 ;; esac
nginx_conf() { # name, workers, server block
  mkdir -p "$WORK/$1"
  cat >"$WORK/$1/nginx.conf" <<EOF
worker_processes $2;
pid $WORK/$1/nginx.pid;
error_log $WORK/$1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/$1/body;
  proxy_temp_path $WORK/$1/proxy;
  fastcgi_temp_path $WORK/$1/fastcgi;
  uwsgi_temp_path $WORK/$1/uwsgi;
  scgi_temp_path $WORK/$1/scgi;
  keepalive_requests 100000000;
  $3
}
EOF
}
nginx_conf backend 2 "server { listen $BACKEND; default_type application/json; location / { return 200 '$body'; } }"
nginx_conf proxy 2 "upstream backend { server $BACKEND; keepalive 64; keepalive_requests 100000000; }
  server { listen $PROXY; location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
nginx -e "$WORK/backend/error.log" -p "$WORK/backend" -c "$WORK/backend/nginx.conf" -g 'daemon off;' &
BACKEND_PID=$!
PIDS+=("$BACKEND_PID")
nginx -e "$WORK/proxy/error.log" -p "$WORK/proxy" -c "$WORK/proxy/nginx.conf" -g 'daemon off;' &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
for _ in $(seq 100); do curl -fs -o /dev/null "http://$PROXY/v1/products/$product" && break; sleep 0.1; done
curl -fsS -D "$OUT/nginx-answer.txt" -o "$WORK/nginx-body.json" "http://$PROXY/v1/products/$product"
cat "$WORK/nginx-body.json" >>"$OUT/nginx-answer.txt"
cmp -s <(curl -fsS "http://$PROXY/v1/products/$product") "$WORK/product.json" ||
  { echo "nginx does not answer the gateway's JSON" >&2; exit 1; }

# CPU seconds (user + system) of processes and their children (nginx workers), from /proc/<pid>/stat.
cpu() {
  local total=0 pid
  for pid in "$@" $(for p in "$@"; do pgrep -P "$p" || true; done); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}
ticks=$(getconf CLK_TCK)

# Nothing else heavy while measuring: other benchmarks take the same lock; builds and load generators do not.
exec 9>"$LOCK"
echo "waiting for $LOCK ..." >&2
flock 9
quiet() {
  local waited=0
  while pgrep -x rustc >/dev/null || pgrep -x wrk >/dev/null || pgrep -x pgbench >/dev/null ||
    pgrep -f 'bench/checkout\.sh' >/dev/null; do
    if ((waited >= QUIET_TIMEOUT)); then echo "busy=yes"; return; fi
    ((waited % 60 == 0)) && echo "waiting for the machine to be quiet (rustc, wrk, pgbench)..." >&2
    sleep 5
    waited=$((waited + 5))
  done
  echo "busy=no"
}

grpc_url="http://$CATALOG"
gateway_url="$BASE/v1/products/$product"
nginx_url="http://$PROXY/v1/products/$product"
# target name -> load generator arguments
declare -A args=([direct]="grpc $grpc_url --id $product" [gateway]="http $gateway_url" [nginx]="http $nginx_url"
  [direct_anon]="grpc $grpc_url --id $product" [gateway_anon]="http $gateway_url")

# One measured run: prints `target=.. connections=.. round=.. <loadgen output> cpu_<process>=<s> ...`.
measure() { # target, connections, round
  local state auth=() before after line
  state=$(quiet)
  # Tokens live 15 minutes, and waits may be long: a fresh one for each run.
  [[ $1 == *_anon ]] || auth=(--token "$(login reader@example.com reader-password-1)")
  # shellcheck disable=SC2086
  "$LOADGEN" ${args[$1]} "${auth[@]}" --connections "$2" --duration "$WARMUP" --warmup 0 >/dev/null
  before=("$(cpu $GATEWAY_PID)" "$(cpu $CATALOG_PID)" "$(cpu $AUTH_PID)" "$(cpu $PROXY_PID)" "$(cpu $BACKEND_PID)")
  # shellcheck disable=SC2086
  line=$("$LOADGEN" ${args[$1]} "${auth[@]}" --connections "$2" --duration "$DURATION" --warmup 0)
  after=("$(cpu $GATEWAY_PID)" "$(cpu $CATALOG_PID)" "$(cpu $AUTH_PID)" "$(cpu $PROXY_PID)" "$(cpu $BACKEND_PID)")
  local names=(gateway catalog auth nginx_proxy nginx_backend) i
  for i in "${!names[@]}"; do
    line+=" cpu_${names[$i]}=$(python3 -c "print(round(($((after[i] - before[i])))/$ticks, 2))")"
  done
  echo "target=$1 connections=$2 round=$3 $state $line $(cut -d' ' -f1 /proc/loadavg | sed 's/^/load1=/')" |
    tee -a "$OUT/runs.txt"
}

{
  echo "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates services proto Cargo.lock ||
    echo ' + uncommitted changes'); mercato built $BUILT"
  echo "$(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); $(uname -sr)"
  echo "$(nginx -v 2>&1); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); $(h2load --version | head -1)"
  echo "Tokio worker threads of auth, catalog and the gateway: ${WORKERS:-one per CPU (default)}; nginx: 2 workers each"
  echo "between the services: $([ "$GRPC_TLS" = 1 ] && echo "mutual TLS (GRPC_TLS=1)" || echo "plain gRPC")"
} | tee "$OUT/machine.txt"
: >"$OUT/runs.txt"
for round in $(seq "$ROUNDS"); do
  for c in $CONNECTIONS; do
    for target in $TARGETS; do measure "$target" "$c" "$round"; done
  done
done

# Cross-checks with other clients: wrk on the HTTP targets, h2load on the catalog (gRPC by hand: a pre-framed
# GetProductRequest posted with gRPC's headers; h2load reports no percentiles, only the mean).
[ "$CROSSCHECK" = 1 ] && python3 -c "import sys; m = b'\x0a' + bytes([len(sys.argv[1])]) + sys.argv[1].encode(); \
sys.stdout.buffer.write(b'\x00' + len(m).to_bytes(4, 'big') + m)" "$product" >"$WORK/get-product.bin"
grpc_path="$grpc_url/mercato.catalog.v1.CatalogService/GetProduct"
for c in $( [ "$CROSSCHECK" = 1 ] && echo "$CONNECTIONS"); do
  token=$(login reader@example.com reader-password-1)
  grpc_headers=(-H 'content-type: application/grpc' -H 'te: trailers' -H "authorization: Bearer $token")
  curl -sS --http2-prior-knowledge -D - -o /dev/null --data-binary @"$WORK/get-product.bin" "${grpc_headers[@]}" \
    "$grpc_path" | grep -i '^grpc-status: 0' >/dev/null || { echo "the hand-made gRPC call fails" >&2; exit 1; }
  for target in gateway nginx; do
    url=$gateway_url
    [ "$target" = nginx ] && url=$nginx_url
    threads=$((c < 2 ? c : 2))
    quiet >/dev/null
    cpu0=$(cpu $GATEWAY_PID $PROXY_PID)
    wrk -t "$threads" -c "$c" -d "${DURATION}s" --latency -H "authorization: Bearer $token" "$url" \
      >"$OUT/wrk-$target-$c.txt"
    cpu1=$(cpu $GATEWAY_PID $PROXY_PID)
    echo "cpu_s=$(python3 -c "print(round(($cpu1 - $cpu0)/$ticks, 2))")" >>"$OUT/wrk-$target-$c.txt"
  done
  quiet >/dev/null
  cpu0=$(cpu $CATALOG_PID)
  h2load -c "$c" -m 1 -t "$((c < 2 ? c : 2))" -D "$DURATION" -d "$WORK/get-product.bin" "${grpc_headers[@]}" \
    "$grpc_path" >"$OUT/h2load-direct-$c.txt"
  cpu1=$(cpu $CATALOG_PID)
  echo "cpu_s=$(python3 -c "print(round(($cpu1 - $cpu0)/$ticks, 2))")" >>"$OUT/h2load-direct-$c.txt"
done

if [ "$PERF" = 1 ] && command -v perf >/dev/null; then
  top=${CONNECTIONS##* }
  quiet >/dev/null
  token=$(login reader@example.com reader-password-1)
  # shellcheck disable=SC2086
  "$LOADGEN" ${args[gateway]} --token "$token" --connections "$top" --duration $((DURATION + 2)) --warmup 0 \
    >/dev/null &
  load=$!
  sleep 1
  perf record -q -F 499 --call-graph dwarf,32768 -p "$GATEWAY_PID" -o "$WORK/perf.data" -- sleep "$DURATION" \
    2>/dev/null
  wait "$load"
  # Self time by function, and the time spent under the gateway's own steps (children included).
  perf report -i "$WORK/perf.data" --no-children --sort dso,symbol -g none --percent-limit 0.7 --stdio \
    2>/dev/null | grep -v '^#' | grep -v '^$' | sed -E 's/ +- +- *$//; s/ +$//' | cut -c1-200 >"$OUT/perf-self.txt"
  perf report -i "$WORK/perf.data" --children --sort symbol -g none --percent-limit 1 --stdio 2>/dev/null |
    grep -v '^#' | grep -v '^$' | sed -E 's/ +- +- *$//; s/ +$//' | cut -c1-200 >"$OUT/perf-children.txt"
  # Share of the gateway's samples whose stack passes through each step (a sample can count in several).
  perf script -i "$WORK/perf.data" -F ip,sym --no-inline 2>/dev/null | python3 -c '
import sys
samples, stack = [], []
for line in sys.stdin:
    if line.strip():
        ip, _, symbol = line.strip().partition(" ")
        stack.append("[kernel]" if ip.startswith("ffffffff8") else symbol)
    elif stack:
        samples.append(stack)
        stack = []
samples += [stack] if stack else []
steps = [
    ("JWT verified for the rate-limit identity (gateway::rate_limit)", ["TokenVerifier::verify"], ["gateway::rate_limit"]),
    ("JWT verified again for the edge access check (gateway::call)", ["TokenVerifier::verify"], ["gateway::call"]),
    ("upstream gRPC call: gRPC framing, HTTP/2 client (platform::grpc::Channel, h2)", ["tonic::client", "h2::",
     "hyper::proto::h2", "TracedChannel", "tower::buffer", "platform::grpc::channel", "gateway::upstream::"], []),
    ("cloning and dropping the Gateway state (HashMap of channels)", ["Gateway as core::clone::Clone",
     "drop_in_place<gateway::Gateway>", "RawTable<T,A> as core::clone::Clone"], []),
    ("tracing spans, trace context", ["tracing_subscriber", "tracing_core", "tracing::span", "opentelemetry",
     "trace_context"], []),
    ("transcoding (request message, response JSON)", ["gateway::transcode"], []),
    ("route lookup (once, in gateway::edge)", ["RouteTable::lookup"], []),
    ("rate limiter bucket check", ["gateway::ratelimit::"], []),
    ("metrics", ["metrics::", "metrics_exporter"], []),
    ("malloc/free (self)", [], []),
    ("in the kernel (self: syscalls, scheduling)", [], []),
]
n = len(samples)
print(f"{n} samples")
for name, any_of, also in steps:
    if name.startswith("malloc"):
        hit = sum(1 for s in samples if s and any(k in s[0] for k in ("malloc", "free", "_int_", "unlink_chunk")))
    elif name.startswith("in the kernel"):
        hit = sum(1 for s in samples if s and s[0] == "[kernel]")
    else:
        hit = sum(1 for s in samples if any(k in f for f in s for k in any_of) and all(any(a in f for f in s) for a in also)
                  and not (name.startswith("JWT verified again") and any("gateway::rate_limit" in f for f in s)))
    print(f"{100 * hit / n:5.1f}%  {name}")
' >"$OUT/perf-steps.txt"
  [ -n "${RESULTS:-}" ] && cp "$WORK/perf.data" "$OUT/perf.data"
fi
exec 9>&-

python3 - "$OUT" "$CONNECTIONS" "$TARGETS" <<'EOF'
import re, statistics, sys, pathlib
out, conns, targets = pathlib.Path(sys.argv[1]), [int(c) for c in sys.argv[2].split()], sys.argv[3].split()
runs = [dict(kv.split("=", 1) for kv in line.split()) for line in (out / "runs.txt").read_text().splitlines()]
conns = conns if runs else []
def med(target, c, key):
    return statistics.median(float(r[key]) for r in runs if r["target"] == target and int(r["connections"]) == c)
def per_cpu(target, c, process):
    return statistics.median(float(r["requests"]) / max(float(r["cpu_" + process]), 0.01)
                             for r in runs if r["target"] == target and int(r["connections"]) == c)
print(f"\nmedians of {len(runs) // max(len(targets) * len(conns), 1)} rounds (latencies in µs)")
print("| target | conns | req/s | p50 | p90 | p99 | errors | server CPU s per 1000 req |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for c in conns:
    for t in targets:
        procs = {"direct": ["catalog"], "gateway": ["gateway", "catalog", "auth"],
                 "nginx": ["nginx_proxy", "nginx_backend"]}[t.removesuffix("_anon")]
        cpu = ", ".join(f"{p} {1000 / per_cpu(t, c, p):.3f}" for p in procs)
        print(f"| {t} | {c} | {med(t, c, 'rps'):.0f} | {med(t, c, 'p50_us'):.0f} | {med(t, c, 'p90_us'):.0f} | "
              f"{med(t, c, 'p99_us'):.0f} | {med(t, c, 'errors'):.0f} | {cpu} |")
print("\nratios")
for c in conns if {"direct", "gateway", "nginx"} <= set(targets) else []:
    hop50 = med("gateway", c, "p50_us") - med("direct", c, "p50_us")
    hop99 = med("gateway", c, "p99_us") - med("direct", c, "p99_us")
    print(f"c={c}: gateway hop p50 +{hop50:.0f} µs (aim < 100), p99 +{hop99:.0f} µs; "
          f"req/s gateway/direct {med('gateway', c, 'rps') / med('direct', c, 'rps'):.2f}, "
          f"gateway/nginx {med('gateway', c, 'rps') / med('nginx', c, 'rps'):.2f}; "
          f"req per CPU-s gateway {per_cpu('gateway', c, 'gateway'):.0f} / nginx proxy "
          f"{per_cpu('nginx', c, 'nginx_proxy'):.0f} = "
          f"{per_cpu('gateway', c, 'gateway') / per_cpu('nginx', c, 'nginx_proxy'):.2f} (aim >= 0.80)")
for c in conns if {"direct_anon", "gateway_anon"} <= set(targets) else []:
    print(f"c={c}, no token: gateway hop p50 +{med('gateway_anon', c, 'p50_us') - med('direct_anon', c, 'p50_us'):.0f} µs, "
          f"req per CPU-s of the gateway {per_cpu('gateway_anon', c, 'gateway'):.0f}")
print("\nwrk cross-check")
for f in sorted(out.glob("wrk-*.txt")):
    text = f.read_text()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)
    pct = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", text, re.M))
    total = re.search(r"(\d+) requests in", text).group(1)
    cpu = float(re.search(r"cpu_s=([\d.]+)", text).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    print(f"{f.stem}: {rps} req/s, p50 {pct.get('50')}, p90 {pct.get('90')}, p99 {pct.get('99')}, "
          f"{int(total) / max(cpu, 0.01):.0f} req per CPU-s of the proxy, non-2xx {bad.group(1) if bad else 0}")
for f in sorted(out.glob("h2load-*.txt")):
    text = f.read_text()
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text).group(1)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", text)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", text).group(1)
    cpu = float(re.search(r"cpu_s=([\d.]+)", text).group(1))
    print(f"{f.stem}: {rps} req/s, mean {mean}, {done.group(2)} of {done.group(1)} succeeded (HTTP), "
          f"{int(done.group(1)) / max(cpu, 0.01):.0f} req per CPU-s of the catalog")
if (out / "perf-self.txt").exists():
    print("\nperf, gateway under load: self time, top functions")
    print("\n".join((out / "perf-self.txt").read_text().splitlines()[:25]))
    print("\nperf, gateway under load: share of samples under each step (children included)")
    print((out / "perf-steps.txt").read_text())
EOF
[ -n "${RESULTS:-}" ] && echo "raw output kept in $OUT" >&2
true
