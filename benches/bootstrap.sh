#!/usr/bin/env bash
# Time for a fresh replica of a large store to serve reads: a primary is filled with
# STATE_MB of live data by `shiplog load` (KEYS keys of VALUE_BYTES), then an empty replica is
# started against it and timed until it has applied everything the primary made durable and
# answers a GET of a written key. The primary's log is well over --snapshot-bootstrap-bytes,
# so the replica is bootstrapped from a snapshot (the build is part of the time); ROUNDS runs,
# each with a new empty replica (the first builds the snapshot, later ones may share it, as
# replicas bootstrapping close together do; FRESH_SNAPSHOT=1 removes it before each run).
#
#   benches/bootstrap.sh
#   KEYS=600000 VALUE_BYTES=2048 ROUNDS=3 benches/bootstrap.sh
#   # realistic data: the 1 GiB JSON-like state of benches/snapshot.rs as the primary's state
#   SHIPLOG_SNAPSHOT_BENCH_MB=1024 SHIPLOG_SNAPSHOT_BENCH_KEEP=/tmp/state.snap \
#     cargo bench --bench snapshot -- none
#   SNAPSHOT=/tmp/state.snap benches/bootstrap.sh
#
# Needs redis-cli (Debian: apt-get install redis-tools).
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=${KEYS:-600000}
VALUE_BYTES=${VALUE_BYTES:-2048}
ROUNDS=${ROUNDS:-3}
FRESH_SNAPSHOT=${FRESH_SNAPSHOT:-1}
BENCH_DIR=${BENCH_DIR:-$(mktemp -d /tmp/shiplog-bootstrap.XXXXXX)}
PRIMARY_PORT=${PRIMARY_PORT:-7411}
REPLICA_PORT=${REPLICA_PORT:-7412}

cargo build --release --quiet
bin=target/release
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

field() { redis-cli -p "$1" INFO replication 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"; }
wait_port() { for _ in $(seq 1 600); do redis-cli -p "$1" PING >/dev/null 2>&1 && return 0; sleep 0.05; done; return 1; }

if [ -n "${SNAPSHOT:-}" ]; then
  echo "the primary's state: restored from $SNAPSHOT"
  "$bin/shiplog" snapshot restore "$SNAPSHOT" --dir "$BENCH_DIR/primary"
fi
"$bin/shiplogd" --dir "$BENCH_DIR/primary" --listen "127.0.0.1:$PRIMARY_PORT" \
  --durability buffered >"$BENCH_DIR/primary.log" 2>&1 &
pids+=($!)
wait_port "$PRIMARY_PORT"
if [ -z "${SNAPSHOT:-}" ]; then
  # shiplog load writes the same byte over and over: such a state compresses ~500:1.
  echo "filling the primary: $KEYS keys of $VALUE_BYTES bytes"
  "$bin/shiplog" load --server "127.0.0.1:$PRIMARY_PORT" --clients 8 --pipeline 32 \
    --keys "$KEYS" --value-bytes "$VALUE_BYTES" --ops $((KEYS * 2)) --json >"$BENCH_DIR/fill.json"
fi
redis-cli -p "$PRIMARY_PORT" INFO keyspace | tr -d '\r' | grep '^db0' || true
du -sh "$BENCH_DIR/primary"
key=$(redis-cli -p "$PRIMARY_PORT" SCAN 0 COUNT 10 | sed -n 2p)

for round in $(seq 1 "$ROUNDS"); do
  [ "$FRESH_SNAPSHOT" = 1 ] && rm -rf "$BENCH_DIR/primary/snapshots"/snapshot-* 2>/dev/null || true
  rdir="$BENCH_DIR/replica-$round"
  start=$(date +%s.%N)
  "$bin/shiplogd" --dir "$rdir" --listen "127.0.0.1:$REPLICA_PORT" \
    --replica-of "127.0.0.1:$PRIMARY_PORT" >"$BENCH_DIR/replica-$round.log" 2>&1 &
  rpid=$!
  pids+=($rpid)
  wait_port "$REPLICA_PORT"
  target=$(field "$PRIMARY_PORT" master_repl_offset)
  while :; do
    applied=$(field "$REPLICA_PORT" replica_applied_lsn)
    if [ -n "$applied" ] && [ "$applied" -ge "$target" ] \
       && [ -n "$(redis-cli -p "$REPLICA_PORT" GET "$key" 2>/dev/null)" ]; then
      break
    fi
    sleep 0.02
  done
  end=$(date +%s.%N)
  echo "round $round: serving reads after $(echo "$end - $start" | bc) s" \
       "($(grep -c 'snapshot installed' "$BENCH_DIR/replica-$round.log") bootstrap)"
  grep -h "snapshot built\|snapshot installed" "$BENCH_DIR/primary.log" "$BENCH_DIR/replica-$round.log" \
    | sed 's/^/    /' | tail -2
  kill "$rpid"; wait "$rpid" 2>/dev/null || true
  rm -rf "$rdir"
done
