#!/usr/bin/env bash
# Two builds of shiplogd side by side in one run, driven by the same redis-benchmark commands:
# the check that a change made nothing slower. Prints a Markdown table of medians and the
# new/old ratio.
#
#   benches/compare-builds.sh OLD_SHIPLOGD NEW_SHIPLOGD      # 3 rounds, -n 100000
#   ROUNDS=5 N=200000 benches/compare-builds.sh old/shiplogd target/release/shiplogd
#
# A baseline binary: `git worktree add /tmp/base REV && cargo build --release --bin shiplogd
# --manifest-path /tmp/base/Cargo.toml`. Rounds alternate between the builds so drift in the
# machine hits both; each server starts empty, with `--durability sync`, on one file system.
set -euo pipefail
cd "$(dirname "$0")/.."

OLD=${1:?usage: compare-builds.sh OLD_SHIPLOGD NEW_SHIPLOGD}
NEW=${2:?usage: compare-builds.sh OLD_SHIPLOGD NEW_SHIPLOGD}
ROUNDS=${ROUNDS:-3}
N=${N:-100000}
BENCH_DIR=${BENCH_DIR:-./target/compare-builds}
PORT=${PORT:-16390}

for tool in redis-benchmark redis-cli; do
  command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install redis-tools" >&2; exit 1; }
done

rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
RESULTS="$BENCH_DIR/results.csv"
: >"$RESULTS"

pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
  pid=""
}
trap cleanup EXIT

start() {
  rm -rf "$BENCH_DIR/data"
  "$1" --dir "$BENCH_DIR/data" --listen "127.0.0.1:$PORT" --durability sync \
    2>"$BENCH_DIR/shiplogd.log" &
  pid=$!
  for _ in $(seq 1 100); do
    redis-cli -p "$PORT" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "shiplogd ($1) did not start: see $BENCH_DIR/shiplogd.log" >&2
  exit 1
}

for round in $(seq 1 "$ROUNDS"); do
  for build in old new; do
    if [ "$build" = old ]; then start "$OLD"; else start "$NEW"; fi
    for config in "1 1" "50 1" "50 16"; do
      set -- $config
      redis-benchmark -p "$PORT" -t set,get -d 100 -r 1000000 -n "$N" -c "$1" -P "$2" --csv \
        | tail -n +2 | tr -d '"' | while IFS=, read -r test rps _; do
          echo "$build,$test,$1,$2,$rps" >>"$RESULTS"
        done
    done
    cleanup
  done
  echo "round $round of $ROUNDS done" >&2
done

python3 - "$RESULTS" <<'PY'
import csv, statistics, sys
runs = {}
for build, test, clients, pipeline, rps in csv.reader(open(sys.argv[1])):
    runs.setdefault((test, int(clients), int(pipeline), build), []).append(float(rps))
print("| test | clients | pipeline | old (req/s) | new (req/s) | new/old |")
print("|---|---|---|---|---|---|")
for test in ("SET", "GET"):
    for clients, pipeline in ((1, 1), (50, 1), (50, 16)):
        old = statistics.median(runs[(test, clients, pipeline, "old")])
        new = statistics.median(runs[(test, clients, pipeline, "new")])
        print(f"| {test} | {clients} | {pipeline} | {old:,.0f} | {new:,.0f} | {new / old:.2f}× |")
print(f"\nMedians of {len(runs[('SET', 1, 1, 'old')])} rounds, each server restarted empty per round.")
PY
