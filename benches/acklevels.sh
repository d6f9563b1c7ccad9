#!/usr/bin/env bash
# Cost of acknowledgement levels, with `shiplog load` against real shiplogd processes on
# loopback: write throughput and SET latency of a primary with one replica attached, at
# `local` (--sync-replicas 0), `replicated 1` and `applied 1`, side by side: every round runs
# the three levels in turn (rotating which goes first), each on fresh empty nodes, and the
# summary gives the median of the rounds and the ratio to `local`.
#
#   benches/acklevels.sh
#   ROUNDS=5 DURATION=10 CLIENTS=50 benches/acklevels.sh
#
# Needs redis-cli (Debian: apt-get install redis-tools) to see the nodes come up.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-50}
PIPELINE=${PIPELINE:-1}
VALUE_BYTES=${VALUE_BYTES:-100}
KEYS=${KEYS:-1000000}
BENCH_DIR=${BENCH_DIR:-./target/acklevels-bench}
PORT=${PORT:-17500}                 # primary; the replica on PORT+1

command -v redis-cli >/dev/null || { echo "needs redis-cli: apt-get install redis-tools" >&2; exit 1; }
cargo build --release --bin shiplogd --bin shiplog >&2
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
RESULTS="$BENCH_DIR/results.jsonl"
: >"$RESULTS"
NODES=()
cleanup() {
  for pid in "${NODES[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${NODES[@]}"; do wait "$pid" 2>/dev/null || true; done
  NODES=()
}
trap cleanup EXIT

wait_ready() {
  for _ in $(seq 1 100); do
    redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "node on port $1 did not start" >&2
  exit 1
}

# run LEVEL: fresh primary and replica, one load run, one JSON line in $RESULTS.
run() {
  local level=$1 flags=()
  case $level in
    local) flags=(--sync-replicas 0) ;;
    replicated) flags=(--sync-replicas 1 --sync-level replicated) ;;
    applied) flags=(--sync-replicas 1 --sync-level applied) ;;
  esac
  rm -rf "$BENCH_DIR/p" "$BENCH_DIR/r"
  ./target/release/shiplogd --dir "$BENCH_DIR/p" --listen "127.0.0.1:$PORT" --log-level warn \
    "${flags[@]}" 2>>"$BENCH_DIR/primary.log" &
  NODES+=($!)
  wait_ready "$PORT"
  ./target/release/shiplogd --dir "$BENCH_DIR/r" --listen "127.0.0.1:$((PORT + 1))" \
    --log-level warn --replica-of "127.0.0.1:$PORT" 2>>"$BENCH_DIR/replica.log" &
  NODES+=($!)
  wait_ready "$((PORT + 1))"
  for _ in $(seq 1 100); do
    redis-cli -p "$PORT" info replication | grep -q 'state=online' && break
    sleep 0.1
  done
  local report timeouts
  report=$(./target/release/shiplog load --server "127.0.0.1:$PORT" --clients "$CLIENTS" \
    --pipeline "$PIPELINE" --value-bytes "$VALUE_BYTES" --keys "$KEYS" --duration "$DURATION" --json)
  timeouts=$(redis-cli -p "$PORT" info replication | tr -d '\r' | sed -n 's/^sync_timeouts://p')
  echo "{\"level\":\"$level\",\"sync_timeouts\":${timeouts:-0},\"report\":$report}" >>"$RESULTS"
  echo "$level: $(echo "$report" | python3 -c 'import json,sys; r=json.load(sys.stdin)["set"]; print(r["ops_per_sec"], "SET/s, p50", r["latency"]["p50_us"], "us, p99", r["latency"]["p99_us"], "us, errors", r["errors"])'), timeouts $timeouts" >&2
  cleanup
}

LEVELS=(local replicated applied)
for round in $(seq 0 $((ROUNDS - 1))); do
  for i in 0 1 2; do
    run "${LEVELS[$(((round + i) % 3))]}"
  done
done

python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
by = {}
for r in runs:
    s = r["report"]["set"]
    by.setdefault(r["level"], []).append(
        (s["ops_per_sec"], s["latency"]["p50_us"], s["latency"]["p99_us"], s["errors"], r["sync_timeouts"]))
med = {k: tuple(statistics.median(x[i] for x in v) for i in range(3)) for k, v in by.items()}
base = med["local"]
print("| level | SET/s (median; runs) | p50 µs | p99 µs | throughput vs local | p50 vs local | errors / timeouts |")
print("|---|---|---|---|---|---|---|")
for level in ("local", "replicated", "applied"):
    ops, p50, p99 = med[level]
    each = ", ".join(f"{x[0]:,.0f}" for x in by[level])
    errs = sum(x[3] for x in by[level]); touts = sum(x[4] for x in by[level])
    name = level if level == "local" else f"{level} 1"
    print(f"| {name} | {ops:,.0f} ({each}) | {p50:,.0f} | {p99:,.0f} | {ops / base[0]:.0%} | {p50 / base[1]:.2f}× | {errs} / {touts} |")
EOF
