#!/usr/bin/env bash
# shiplog vs Redis 7 with `appendonly yes` + `appendfsync always`, side by side in one run,
# both driven by the same redis-benchmark command. Prints a Markdown table of medians and the
# shiplog/Redis ratio.
#
#   benches/compare-redis.sh                 # 3 rounds, -n 200000
#   ROUNDS=5 N=100000 benches/compare-redis.sh
#
# Needs redis-server and redis-benchmark (Debian: apt-get install redis-server redis-tools).
# Both servers keep their data under $BENCH_DIR (default ./target/compare-redis), so they share
# one file system. Rounds alternate between the servers so drift in the machine hits both.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
N=${N:-200000}
BENCH_DIR=${BENCH_DIR:-./target/compare-redis}
REDIS_PORT=${REDIS_PORT:-16379}
SHIPLOG_PORT=${SHIPLOG_PORT:-16380}

for tool in redis-server redis-benchmark redis-cli; do
  command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install redis-server redis-tools" >&2; exit 1; }
done
cargo build --release --bin shiplogd >&2

rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/redis" "$BENCH_DIR/shiplog"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
RESULTS="$BENCH_DIR/results.csv"
: >"$RESULTS"

redis_pid=""
shiplog_pid=""
cleanup() {
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
  [ -n "$shiplog_pid" ] && kill "$shiplog_pid" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 1 100); do
    redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server on port $1 did not start" >&2
  exit 1
}

start_redis() {
  rm -rf "$BENCH_DIR/redis"/*
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$BENCH_DIR/redis" \
    --appendonly yes --appendfsync always --save '' --daemonize no \
    --logfile "$BENCH_DIR/redis.log" &
  redis_pid=$!
  wait_port "$REDIS_PORT"
}

start_shiplog() {
  rm -rf "$BENCH_DIR/shiplog"/*
  ./target/release/shiplogd --dir "$BENCH_DIR/shiplog/data" --listen "127.0.0.1:$SHIPLOG_PORT" \
    --durability sync 2>"$BENCH_DIR/shiplogd.log" &
  shiplog_pid=$!
  wait_port "$SHIPLOG_PORT"
}

stop_all() {
  cleanup
  redis_pid=""
  shiplog_pid=""
}

# One redis-benchmark invocation; appends "server,test,clients,pipeline,rps" lines.
bench() {
  local server=$1 port=$2 clients=$3 pipeline=$4
  redis-benchmark -p "$port" -t set,get -d 100 -r 1000000 -n "$N" -c "$clients" -P "$pipeline" --csv \
    | tail -n +2 | tr -d '"' | while IFS=, read -r test rps _; do
      echo "$server,$test,$clients,$pipeline,$rps" >>"$RESULTS"
    done
}

for round in $(seq 1 "$ROUNDS"); do
  for server in redis shiplog; do
    if [ "$server" = redis ]; then start_redis; port=$REDIS_PORT; else start_shiplog; port=$SHIPLOG_PORT; fi
    for config in "1 1" "50 1" "50 16"; do
      set -- $config
      bench "$server" "$port" "$1" "$2"
    done
    stop_all
  done
  echo "round $round of $ROUNDS done" >&2
done

python3 - "$RESULTS" <<'EOF'
import csv, statistics, sys
rows = list(csv.reader(open(sys.argv[1])))
runs = {}
for server, test, clients, pipeline, rps in rows:
    runs.setdefault((test, int(clients), int(pipeline), server), []).append(float(rps))
targets = {("SET", 50, 1): 2.0, ("SET", 50, 16): 1.2, ("GET", 50, 1): 1.0, ("SET", 1, 1): 1.3}
print("| test | clients | pipeline | Redis always (req/s) | shiplog sync (req/s) | shiplog/Redis | target |")
print("|---|---|---|---|---|---|---|")
for test in ("SET", "GET"):
    for clients, pipeline in ((1, 1), (50, 1), (50, 16)):
        redis = statistics.median(runs[(test, clients, pipeline, "redis")])
        shiplog = statistics.median(runs[(test, clients, pipeline, "shiplog")])
        target = targets.get((test, clients, pipeline))
        target = f"≥ {target}×" if target else "—"
        print(f"| {test} | {clients} | {pipeline} | {redis:,.0f} | {shiplog:,.0f} | {shiplog / redis:.2f}× | {target} |")
print(f"\nMedians of {len(runs[('SET', 1, 1, 'redis')])} rounds, each server restarted empty per round.")
EOF
