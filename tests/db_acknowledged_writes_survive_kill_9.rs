//! The real crash test at the store level: a child process runs puts, deletes and batches with
//! `Sync` from several threads and reports each acknowledged operation; the parent SIGKILLs it,
//! reopens the store and checks that every acknowledged operation is there, the one operation
//! each thread had in flight is there entirely or not at all, and nothing else changed.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use shiplog::{Db, DbOptions, Durability, WriteBatch};

const CHILD_DIR_ENV: &str = "SHIPLOG_DB_CRASH_CHILD_DIR";
const CHILD_CYCLE_ENV: &str = "SHIPLOG_DB_CRASH_CHILD_CYCLE";
const THREADS: u64 = 3;
const KEYS_PER_THREAD: u64 = 12;

type State = BTreeMap<Vec<u8>, Vec<u8>>;

/// One operation: `(key, Some(value))` sets, `(key, None)` deletes; more than one is a batch.
type Op = Vec<(Vec<u8>, Option<Vec<u8>>)>;

fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || common::xorshift64(&mut x)
}

/// The `seq`-th operation of `thread` in `cycle`: deterministic, so the parent knows it too.
fn op(cycle: u64, thread: u64, seq: u64) -> Op {
    let mut next = rng((cycle << 40) ^ (thread << 32) ^ seq ^ 0xABCD);
    let count = if next().is_multiple_of(4) {
        2 + next() % 3
    } else {
        1
    };
    (0..count)
        .map(|_| {
            let key = format!("t{thread}-k{:02}", next() % KEYS_PER_THREAD).into_bytes();
            if next().is_multiple_of(5) {
                (key, None)
            } else {
                let len = (next() % 200) as usize;
                let value = (0..len)
                    .map(|i| (seq as usize + i) as u8 ^ cycle as u8)
                    .collect();
                (key, Some(value))
            }
        })
        .collect()
}

fn apply(state: &mut State, op: &Op) {
    for (key, value) in op {
        match value {
            Some(value) => state.insert(key.clone(), value.clone()),
            None => state.remove(key),
        };
    }
}

fn child(dir: &Path, cycle: u64) {
    let db = Db::open(dir, DbOptions::default()).expect("child opens the store");
    let out = std::sync::Mutex::new(std::io::stdout());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (db, out) = (&db, &out);
            scope.spawn(move || {
                for seq in 0.. {
                    if started.elapsed() > Duration::from_secs(20) {
                        return;
                    }
                    let op = op(cycle, thread, seq);
                    if let [(key, value)] = op.as_slice() {
                        match value {
                            Some(value) => db.put_with(key, value, Durability::Sync).unwrap(),
                            None => db.delete_with(key, Durability::Sync).unwrap(),
                        };
                    } else {
                        let mut batch = WriteBatch::new();
                        for (key, value) in &op {
                            match value {
                                Some(value) => batch.put(key, value),
                                None => batch.delete(key),
                            };
                        }
                        db.write_batch_with(&batch, Durability::Sync).unwrap();
                    }
                    let mut out = out.lock().unwrap();
                    writeln!(out, "ack {thread} {seq}").unwrap();
                    out.flush().unwrap();
                }
            });
        }
    });
}

fn thread_state(state: &State, thread: u64) -> State {
    let prefix = format!("t{thread}-").into_bytes();
    state
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn run_cycles(test_name: &str, cycles: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut model = State::new();
    let mut next = rng(7);
    let mut acked_total = 0;
    for cycle in 0..cycles {
        let envs = vec![
            (CHILD_DIR_ENV, dir.path().display().to_string()),
            (CHILD_CYCLE_ENV, cycle.to_string()),
        ];
        let acks = common::run_child_until_killed(
            test_name,
            &envs,
            Duration::from_millis(30 + next() % 60),
        );
        acked_total += acks.len();

        let mut acked_per_thread = vec![0u64; THREADS as usize];
        for line in &acks {
            let fields = common::ack_fields(line);
            let (thread, seq) = (fields[0], fields[1]);
            assert_eq!(
                seq, acked_per_thread[thread as usize],
                "acks of a thread arrive in order"
            );
            acked_per_thread[thread as usize] += 1;
        }
        let db = Db::open(dir.path(), DbOptions::default())
            .unwrap_or_else(|e| panic!("cycle {cycle}: reopen failed: {e}"));
        let recovered: State = db
            .range::<&[u8], _>(..)
            .map(|r| r.unwrap())
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        let mut next_model = State::new();
        for thread in 0..THREADS {
            let mut acked = thread_state(&model, thread);
            for seq in 0..acked_per_thread[thread as usize] {
                apply(&mut acked, &op(cycle, thread, seq));
            }
            let mut in_flight = acked.clone();
            apply(
                &mut in_flight,
                &op(cycle, thread, acked_per_thread[thread as usize]),
            );
            let got = thread_state(&recovered, thread);
            assert!(
                got == acked || got == in_flight,
                "cycle {cycle} thread {thread}: recovered state is neither the acknowledged state nor it plus the one in-flight operation"
            );
            next_model.extend(got);
        }
        assert_eq!(
            recovered.len(),
            next_model.len(),
            "cycle {cycle}: keys that no thread wrote"
        );
        model = next_model;
        drop(db);
    }
    eprintln!("{cycles} kill cycles, {acked_total} acknowledged operations verified");
    assert!(
        acked_total > cycles as usize,
        "the children acknowledged too little to test anything"
    );
}

fn child_args() -> Option<(std::ffi::OsString, u64)> {
    let dir = std::env::var_os(CHILD_DIR_ENV)?;
    let cycle = std::env::var(CHILD_CYCLE_ENV).ok()?.parse().ok()?;
    Some((dir, cycle))
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    if let Some((dir, cycle)) = child_args() {
        child(Path::new(&dir), cycle);
        return;
    }
    run_cycles("acknowledged_writes_survive_kill_9", 100);
}

#[test]
#[ignore = "long: thousands of kill cycles; run with --ignored"]
fn acknowledged_writes_survive_kill_9_long() {
    if let Some((dir, cycle)) = child_args() {
        child(Path::new(&dir), cycle);
        return;
    }
    run_cycles("acknowledged_writes_survive_kill_9_long", 2000);
}
