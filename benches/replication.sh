#!/usr/bin/env bash
# Replication measurements with `shiplog load`, against real shiplogd processes on loopback:
#
#   1. cost:       primary write throughput with 0 and with 2 replicas attached, alternating
#                  (ABBA order per pair of rounds), each run on fresh empty nodes; then the
#                  same with the primary pinned to CPU 0 and everything else to CPU 1, which
#                  separates the primary's own cost of shipping from the CPU the co-located
#                  replicas take from it on this machine (PINNED_ROUNDS=0 skips it);
#   2. visibility: visibility lag on one replica while the primary takes writes at half its
#                  maximum durable write rate (the median of the unpinned 0-replica runs of
#                  step 1), and at a light 1,000 writes/s for reference;
#   3. catch-up:   a detached node misses CATCH_UP_OPS writes made at full speed, is attached
#                  with REPLICAOF, and is timed until it applied them all.
#
# Prints a Markdown summary (medians) with the targets, and keeps every JSON report in
# $BENCH_DIR/results.jsonl.
#
#   benches/replication.sh
#   ROUNDS=5 DURATION=10 benches/replication.sh
#
# Needs redis-cli (Debian: apt-get install redis-tools) to read INFO while nodes start, and
# /usr/bin/time (apt-get install time) for the load generator's CPU time.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-4}                 # cost runs per replica count (even: ABBA balances drift)
PINNED_ROUNDS=${PINNED_ROUNDS:-4}
VIS_ROUNDS=${VIS_ROUNDS:-3}
CATCH_UP_ROUNDS=${CATCH_UP_ROUNDS:-3}
DURATION=${DURATION:-10}            # seconds per load run
CLIENTS=${CLIENTS:-50}              # the maximum write rate: as compare-redis.sh's -c 50 -P 16
PIPELINE=${PIPELINE:-16}
# Paced visibility runs use few client threads: measured here, 50 paced threads on 2 cores
# delay the shipper's and the replica's wake-ups behind a long run queue (lag p99 18-160 ms at
# 115k writes/s against 2-3 ms with 4 threads). The window still covers rate x latency.
VIS_CLIENTS=${VIS_CLIENTS:-4}
VIS_PIPELINE=${VIS_PIPELINE:-200}
VALUE_BYTES=${VALUE_BYTES:-100}
KEYS=${KEYS:-1000000}
LIGHT_RATE=${LIGHT_RATE:-1000}
CATCH_UP_OPS=${CATCH_UP_OPS:-500000}
# Unique keys for the catch-up burst: no dead records, so no compaction on the primary while
# the replica catches up (a replica attached during a compaction of segments it still needs is
# refused for good, "NeedsSnapshot ... log starts at LSN 1": see docs/benchmarks.md).
CATCH_UP_KEYS=${CATCH_UP_KEYS:-1000000000}
BENCH_DIR=${BENCH_DIR:-./target/replication-bench}
PORT=${PORT:-17400}                 # primary; replicas on PORT+1 and PORT+2

command -v redis-cli >/dev/null || { echo "needs redis-cli: apt-get install redis-tools" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time: apt-get install time" >&2; exit 1; }
command -v taskset >/dev/null || { echo "needs taskset (util-linux)" >&2; exit 1; }
cargo build --release --bin shiplogd --bin shiplog >&2

mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
PIDS="$BENCH_DIR/pids"

# Strays of an earlier run that was killed before its trap ran: only processes this script
# started (their pids are on file) that are still shiplogd nodes of this directory.
if [ -f "$PIDS" ]; then
  while read -r pid; do
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "shiplogd --dir $BENCH_DIR/"; then
      echo "killing stray shiplogd $pid from an earlier run" >&2
      kill "$pid" 2>/dev/null || true
    fi
  done <"$PIDS"
fi
for port in "$PORT" $((PORT + 1)) $((PORT + 2)); do
  for _ in $(seq 1 50); do
    redis-cli -p "$port" ping >/dev/null 2>&1 || break
    sleep 0.1
  done
  if redis-cli -p "$port" ping >/dev/null 2>&1; then
    echo "port $port is taken by another server; set PORT" >&2
    exit 1
  fi
done
find "$BENCH_DIR" -mindepth 1 -maxdepth 1 ! -name pids -exec rm -rf {} +
: >"$PIDS"
RESULTS="$BENCH_DIR/results.jsonl"
: >"$RESULTS"

running=()
stop_all() {
  for pid in "${running[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${running[@]}"; do wait "$pid" 2>/dev/null || true; done
  running=()
}
trap stop_all EXIT

# CPU pinning: empty (the default) runs everything anywhere; pinned runs set both.
PIN_PRIMARY=""
PIN_OTHERS=""
# The command prefix that pins to CPUs $1 (none when empty). A prefix, not a wrapper function:
# `function &` would fork a subshell, and $! would be its pid instead of shiplogd's.
pin_prefix() {
  pin=()
  if [ -n "$1" ]; then pin=(taskset -c "$1"); fi
}

# start_node NAME PORT [shiplogd flags...]: a fresh node in $BENCH_DIR/NAME, ready on return.
start_node() {
  local name=$1 port=$2 cpus=$PIN_OTHERS
  shift 2
  [ "$name" = primary ] && cpus=$PIN_PRIMARY
  rm -rf "${BENCH_DIR:?}/$name"
  pin_prefix "$cpus"
  "${pin[@]}" ./target/release/shiplogd --dir "$BENCH_DIR/$name" --listen "127.0.0.1:$port" "$@" \
    >/dev/null 2>"$BENCH_DIR/$name.log" &
  running+=($!)
  echo $! >>"$PIDS"
  for _ in $(seq 1 200); do
    grep -q "ready to accept connections" "$BENCH_DIR/$name.log" && return 0
    sleep 0.05
  done
  echo "shiplogd $name did not start:" >&2
  cat "$BENCH_DIR/$name.log" >&2
  exit 1
}

info() { redis-cli -p "$1" info replication | tr -d '\r' | sed -n "s/^$2://p"; }

# A primary and N replicas following it, the replicas' sessions established.
start_cluster() {
  local replicas=$1
  start_node primary "$PORT"
  for i in $(seq 1 "$replicas"); do
    start_node "replica$i" $((PORT + i)) --replica-of "127.0.0.1:$PORT"
  done
  for _ in $(seq 1 200); do
    [ "$(info "$PORT" connected_slaves)" = "$replicas" ] && return 0
    sleep 0.05
  done
  echo "replicas did not connect" >&2
  exit 1
}

# CPU seconds (user + system) a process has used so far.
cpu_secs() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}

# CPU seconds the whole machine has spent busy (not idle, not waiting for I/O) so far.
machine_busy_secs() {
  awk -v hz="$(getconf CLK_TCK)" '/^cpu / { printf "%.2f", ($2 + $3 + $4 + $7 + $8) / hz }' /proc/stat
}

# load TAG CLIENTS PIPELINE KEYS [flags...]: one `shiplog load --json` run; appends its report
# to $RESULTS with the CPU seconds each node, the load generator and the whole machine used
# meanwhile (what is left over is other work on the machine: the noise; /proc/stat samples by
# tick, so that remainder is rough, a few CPU seconds either way).
load() {
  local tag=$1 clients=$2 pipeline=$3 keys=$4
  shift 4
  local before=() after=() pid busy_before busy_after
  for pid in "${running[@]}"; do before+=("$(cpu_secs "$pid")"); done
  busy_before=$(machine_busy_secs)
  local report
  pin_prefix "$PIN_OTHERS"
  report=$("${pin[@]}" /usr/bin/time -o "$BENCH_DIR/time" -f "%U %S" \
    ./target/release/shiplog load --server "127.0.0.1:$PORT" --clients "$clients" \
    --pipeline "$pipeline" --value-bytes "$VALUE_BYTES" --keys "$keys" --json "$@")
  busy_after=$(machine_busy_secs)
  for pid in "${running[@]}"; do after+=("$(cpu_secs "$pid")"); done
  local cpu="" i
  for i in "${!running[@]}"; do
    cpu+="${cpu:+,}$(awk -v a="${after[$i]}" -v b="${before[$i]}" 'BEGIN { printf "%.2f", a - b }')"
  done
  local generator busy
  generator=$(awk '{ printf "%.2f", $1 + $2 }' "$BENCH_DIR/time")
  busy=$(awk -v a="$busy_after" -v b="$busy_before" 'BEGIN { printf "%.2f", a - b }')
  echo "{\"tag\":\"$tag\",\"node_cpu_secs\":[$cpu],\"generator_cpu_secs\":$generator,\"machine_busy_secs\":$busy,\"report\":$report}" >>"$RESULTS"
  echo "$report"
}

median_set_rate() {
  python3 - "$RESULTS" "$1" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
print(int(statistics.median(r["report"]["set"]["ops_per_sec"] for r in runs if r["tag"] == sys.argv[2])))
EOF
}

# 1. Cost of replicas: 0, 2, 2, 0, 0, 2, ... so drift over the sitting hits both alike.
cost_rounds() {
  local prefix=$1 rounds=$2 round replicas order
  for round in $(seq 1 "$rounds"); do
    if [ $((round % 2)) -eq 1 ]; then order="0 2"; else order="2 0"; fi
    for replicas in $order; do
      start_cluster "$replicas"
      load "$prefix-$replicas" "$CLIENTS" "$PIPELINE" "$KEYS" --duration "$DURATION" >/dev/null
      stop_all
    done
    echo "$prefix round $round of $rounds done" >&2
  done
}
cost_rounds cost "$ROUNDS"
if [ "$PINNED_ROUNDS" -gt 0 ]; then
  PIN_PRIMARY=0 PIN_OTHERS=1 cost_rounds pinned "$PINNED_ROUNDS"
fi

# 2. Visibility lag at half the primary's maximum (measured above), and at a light rate.
HALF_RATE=$(( $(median_set_rate cost-0) / 2 ))
echo "visibility at $HALF_RATE writes/s (half the 0-replica median)" >&2
for round in $(seq 1 "$VIS_ROUNDS"); do
  for rate in "$HALF_RATE" "$LIGHT_RATE"; do
    start_cluster 1
    tag=visibility-half
    [ "$rate" = "$LIGHT_RATE" ] && tag=visibility-light
    load "$tag" "$VIS_CLIENTS" "$VIS_PIPELINE" "$KEYS" --duration "$DURATION" --rate "$rate" \
      --visibility "127.0.0.1:$((PORT + 1))" >/dev/null
    stop_all
  done
  echo "visibility round $round of $VIS_ROUNDS done" >&2
done

# 3. Catch-up: the node starts detached, misses the burst, then is attached.
for round in $(seq 1 "$CATCH_UP_ROUNDS"); do
  start_node primary "$PORT"
  start_node replica1 $((PORT + 1))
  load catch-up "$CLIENTS" "$PIPELINE" "$CATCH_UP_KEYS" --ops "$CATCH_UP_OPS" \
    --catch-up "127.0.0.1:$((PORT + 1))" >/dev/null
  stop_all
  echo "catch-up round $round of $CATCH_UP_ROUNDS done" >&2
done

python3 - "$RESULTS" "$HALF_RATE" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
half = int(sys.argv[2])
med = statistics.median
def tagged(tag): return [r for r in runs if r["tag"] == tag]
def ms(us): return f"{us / 1000:.3f}"
def spread(values, fmt): return f"{fmt(med(values))} ({fmt(min(values))} – {fmt(max(values))})"
rate = lambda v: f"{v:,.0f}"

print("## cost of replicas (SET ops/s on the primary)")
for prefix, title in (("cost", "unpinned"), ("pinned", "primary pinned to CPU 0; replicas and generator to CPU 1")):
    if not tagged(f"{prefix}-0"):
        continue
    print(f"\n{title}:\n")
    print("| replicas | runs | SET ops/s, median (min – max) | SET p50 ms | SET p99 ms | primary CPU s per 100k SETs | replicas' CPU s per 100k SETs | generator CPU s per 100k SETs | other work on the machine, CPU s per run |")
    print("|---|---|---|---|---|---|---|---|---|")
    medians = {}
    for n in (0, 2):
        rs = tagged(f"{prefix}-{n}")
        sets = [r["report"]["set"]["ops_per_sec"] for r in rs]
        medians[n] = med(sets)
        count = lambda r: r["report"]["set"]["latency"]["count"] / 100_000
        primary_cpu = med(r["node_cpu_secs"][0] / count(r) for r in rs)
        replica_cpu = med(sum(r["node_cpu_secs"][1:]) / count(r) for r in rs)
        generator_cpu = med(r["generator_cpu_secs"] / count(r) for r in rs)
        other = med(r["machine_busy_secs"] - sum(r["node_cpu_secs"]) - r["generator_cpu_secs"] for r in rs)
        print(f"| {n} | {len(rs)} | {spread(sets, rate)} | {ms(med(r['report']['set']['latency']['p50_us'] for r in rs))} "
              f"| {ms(med(r['report']['set']['latency']['p99_us'] for r in rs))} | {primary_cpu:.2f} | {replica_cpu:.2f} "
              f"| {generator_cpu:.2f} | {other:.1f} |")
    cost = 1 - medians[2] / medians[0]
    print(f"\n{title}: 2 replicas cost the primary {cost * 100:.1f}% of its write throughput (target < 10%).")
print()

print(f"## visibility lag (one replica)\n")
print("| load | runs | SET ops/s | SET p99 ms | probes | lag p50 ms | lag p90 ms | lag p99 ms | lag max ms | GETs per probe |")
print("|---|---|---|---|---|---|---|---|---|---|")
for tag, name in (("visibility-half", f"{half:,}/s (half of max)"), ("visibility-light", "light")):
    rs = tagged(tag)
    if not rs: continue
    v = lambda k: med(r["report"]["visibility"]["lag"][k] for r in rs)
    print(f"| {name} | {len(rs)} | {rate(med(r['report']['set']['ops_per_sec'] for r in rs))} "
          f"| {ms(med(r['report']['set']['latency']['p99_us'] for r in rs))} "
          f"| {med(r['report']['visibility']['probes'] for r in rs):.0f} "
          f"| {ms(v('p50_us'))} | {ms(v('p90_us'))} | {ms(v('p99_us'))} | {ms(v('max_us'))} "
          f"| {med(r['report']['visibility']['gets_per_probe'] for r in rs):.1f} |")
print("\nEach lag figure is the median over the runs of that run's percentile. Targets at half of max: p50 < 0.5 ms, p99 < 2 ms.\n")

print("## catch-up\n")
print("| runs | records | primary writes/s | catch-up records/s | ratio, median (min – max) |")
print("|---|---|---|---|---|")
rs = tagged("catch-up")
cs = [r["report"]["catch_up"] for r in rs]
if cs:
    print(f"| {len(cs)} | {med(c['applied_records'] for c in cs):,.0f} | {rate(med(c['write_records_per_sec'] for c in cs))} "
          f"| {rate(med(c['catch_up_records_per_sec'] for c in cs))} | {spread([c['ratio'] for c in cs], lambda x: f'{x:.2f}×')} |")
print("\nTarget: catch-up ≥ 5× the primary's write rate.")
EOF

python3 - "$RESULTS" <<'EOF2'
import json, sys
print("\n## every run, in the order run\n")
print("| # | run | SET ops/s | SET p99 ms | lag p50 / p99 ms | catch-up ratio | CPU s: nodes (primary first) | generator | other work |")
print("|---|---|---|---|---|---|---|---|---|")
for i, line in enumerate(open(sys.argv[1]), 1):
    r = json.loads(line)
    rep = r["report"]
    v = rep["visibility"]
    lag = f"{v['lag']['p50_us'] / 1000:.3f} / {v['lag']['p99_us'] / 1000:.3f}" if v else "—"
    c = rep["catch_up"]
    ratio = f"{c['ratio']:.2f}×" if c else "—"
    other = r["machine_busy_secs"] - sum(r["node_cpu_secs"]) - r["generator_cpu_secs"]
    nodes = " + ".join(f"{x:.1f}" for x in r["node_cpu_secs"])
    print(f"| {i} | {r['tag']} | {rep['set']['ops_per_sec']:,.0f} | {rep['set']['latency']['p99_us'] / 1000:.3f} "
          f"| {lag} | {ratio} | {nodes} | {r['generator_cpu_secs']:.1f} | {other:.1f} |")
EOF2
