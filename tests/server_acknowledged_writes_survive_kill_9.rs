//! The server-level crash loop: four clients overwrite and delete keys of their own with `SET`,
//! `MSET` and `DEL`, the server is killed with SIGKILL at a random moment and restarted, and
//! every key must then hold its last acknowledged state, or the state of the one write that was
//! in flight at the kill (a multi-key write whole or not at all). The key space is bounded and
//! segments are small, and every 25th cycle runs long enough for the compaction thread to start,
//! so the log is overwritten and compacted under the kills and a cycle costs about the same at
//! cycle 10 and at cycle 10,000 (the figures print the log's size). `cargo test` runs a short
//! loop; the long one is `SHIPLOG_KILL_CYCLES=10000 cargo test --release --test
//! server_acknowledged_writes_survive_kill_9 -- --ignored --nocapture`, which prints its progress
//! every 250 cycles; `SHIPLOG_KILL_SEED=<hex>` runs another schedule, so runs can go side by side.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;
mod daemon;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use daemon::Daemon;
use redis::Commands;

const WRITERS: usize = 4;
const KEYS_PER_WRITER: usize = 2_000;

/// What a key holds: nothing, or the value written by the writer's `version`-th operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Absent,
    Version(u64),
}

fn key_of(writer: usize, slot: usize) -> String {
    format!("w{writer}-k{slot}")
}

fn value_of(writer: usize, slot: usize, version: u64) -> String {
    // Lengths vary with the version so records of every size class get overwritten.
    let pad = "x".repeat((version % 97) as usize);
    format!("w{writer}-k{slot}-v{version}-{pad}")
}

fn state_of(writer: usize, slot: usize, value: Option<&str>) -> Option<State> {
    let Some(value) = value else {
        return Some(State::Absent);
    };
    let prefix = format!("w{writer}-k{slot}-v");
    let version: u64 = value
        .strip_prefix(&prefix)?
        .split('-')
        .next()?
        .parse()
        .ok()?;
    (value == value_of(writer, slot, version)).then_some(State::Version(version))
}

/// One writer's model: the last acknowledged state of each of its keys, and the write that was
/// in flight when the server died (every change it would make).
#[derive(Clone)]
struct Writer {
    id: usize,
    acknowledged: Vec<State>,
    in_flight: Vec<(usize, State)>,
    next_version: u64,
    rng: u64,
    operations: u64,
}

impl Writer {
    fn new(id: usize, seed: u64) -> Self {
        Self {
            id,
            acknowledged: vec![State::Absent; KEYS_PER_WRITER],
            in_flight: Vec::new(),
            next_version: 1,
            rng: (seed ^ (id as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d)) | 1,
            operations: 0,
        }
    }

    fn next(&mut self) -> u64 {
        common::xorshift64_star(&mut self.rng)
    }

    /// Writes until `stop` or until the server goes away; returns the writer to its owner.
    fn run(mut self, url: String, stop: Arc<AtomicBool>) -> Self {
        let Ok(mut con) = redis::Client::open(url).unwrap().get_connection() else {
            return self;
        };
        while !stop.load(Ordering::Relaxed) {
            let roll = self.next();
            let slot = (self.next() % KEYS_PER_WRITER as u64) as usize;
            let version = self.next_version;
            self.next_version += 1;
            let key = key_of(self.id, slot);
            let result: redis::RedisResult<()> = match roll % 10 {
                0 => {
                    self.in_flight = vec![(slot, State::Absent)];
                    con.del::<_, i64>(&key).map(drop)
                }
                1 | 2 => {
                    let other = (slot + 1 + (self.next() % 7) as usize) % KEYS_PER_WRITER;
                    self.in_flight = vec![
                        (slot, State::Version(version)),
                        (other, State::Version(version)),
                    ];
                    con.mset(&[
                        (key, value_of(self.id, slot, version)),
                        (key_of(self.id, other), value_of(self.id, other, version)),
                    ])
                }
                _ => {
                    self.in_flight = vec![(slot, State::Version(version))];
                    con.set(key, value_of(self.id, slot, version))
                }
            };
            if result.is_err() {
                return self;
            }
            for (slot, state) in std::mem::take(&mut self.in_flight) {
                self.acknowledged[slot] = state;
            }
            self.operations += 1;
        }
        self
    }

    /// Reads every key back from the restarted server and checks it against the model; the
    /// write in flight at the kill is resolved to whatever the server kept.
    fn verify(&mut self, con: &mut redis::Connection, cycle: usize) -> Outcome {
        let keys: Vec<String> = (0..KEYS_PER_WRITER).map(|s| key_of(self.id, s)).collect();
        let mut found = Vec::with_capacity(KEYS_PER_WRITER);
        for chunk in keys.chunks(500) {
            let values: Vec<Option<String>> = con.mget(chunk).unwrap();
            found.extend(values);
        }
        let mut applied = 0;
        for (slot, value) in found.iter().enumerate() {
            let state = state_of(self.id, slot, value.as_deref()).unwrap_or_else(|| {
                panic!(
                    "cycle {cycle}: {} holds {value:?}, never written",
                    keys[slot]
                )
            });
            if state == self.acknowledged[slot] {
                continue;
            }
            let pending = self.in_flight.iter().find(|(s, _)| *s == slot);
            assert!(
                pending.is_some_and(|(_, s)| *s == state),
                "cycle {cycle}: {} holds {state:?}, but its last acknowledged state is {:?} \
                 and the write in flight was {:?}",
                keys[slot],
                self.acknowledged[slot],
                self.in_flight
            );
            applied += 1;
        }
        // A multi-key write is one batch: all of it or none of it.
        assert!(
            applied == 0 || applied == self.in_flight.len(),
            "cycle {cycle}: half of the batch {:?} survived the kill",
            self.in_flight
        );
        let outcome = if self.in_flight.is_empty() {
            Outcome::default()
        } else if applied > 0 || self.in_flight_is_a_no_op() {
            Outcome {
                kept: 1,
                dropped: 0,
            }
        } else {
            Outcome {
                kept: 0,
                dropped: 1,
            }
        };
        if applied > 0 {
            for (slot, state) in std::mem::take(&mut self.in_flight) {
                self.acknowledged[slot] = state;
            }
        }
        self.in_flight.clear();
        outcome
    }

    /// A delete of a key that was already absent changes nothing we can see.
    fn in_flight_is_a_no_op(&self) -> bool {
        self.in_flight
            .iter()
            .all(|(slot, state)| self.acknowledged[*slot] == *state)
    }
}

/// How the writes in flight at the kills ended.
#[derive(Default)]
struct Outcome {
    kept: u64,
    dropped: u64,
}

/// The figures of a crash loop.
struct Figures {
    acknowledged: u64,
    keys_checked: u64,
    in_flight_kept: u64,
    in_flight_dropped: u64,
    /// Bytes of segment files at the end: compaction keeps it near the live data.
    log_bytes: u64,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} writes acknowledged, {} keys checked, in flight at the kill {} kept / {} \
             dropped, log {} KiB, 0 lost",
            self.acknowledged,
            self.keys_checked,
            self.in_flight_kept,
            self.in_flight_dropped,
            self.log_bytes >> 10
        )
    }
}

/// The default seed of a run (`SHIPLOG_KILL_SEED` sets another, for runs side by side).
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// Small segments, so they seal often and compaction has work.
const DAEMON_ARGS: [&str; 4] = ["--io-threads", "2", "--segment-bytes", "1048576"];

/// Every this many cycles, one runs 1.5 s before the kill instead of 20–220 ms: long enough
/// for the compaction thread (it checks once a second) to start a pass, which the kill may
/// then interrupt.
const LONG_CYCLE_EVERY: usize = 25;

fn log_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// Runs `cycles` kill/restart cycles and returns what it checked.
fn crash_loop(cycles: usize, seed: u64, report_every: usize) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let mut writers: Vec<Writer> = (0..WRITERS).map(|id| Writer::new(id, seed)).collect();
    let mut rng = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
    let mut figures = Figures {
        acknowledged: 0,
        keys_checked: 0,
        in_flight_kept: 0,
        in_flight_dropped: 0,
        log_bytes: 0,
    };
    let started = Instant::now();
    for cycle in 0..cycles {
        let daemon = Daemon::start(dir.path(), &DAEMON_ARGS);
        {
            let mut con = daemon.client();
            for writer in &mut writers {
                let outcome = writer.verify(&mut con, cycle);
                figures.in_flight_kept += outcome.kept;
                figures.in_flight_dropped += outcome.dropped;
                figures.keys_checked += KEYS_PER_WRITER as u64;
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let running: Vec<_> = writers
            .drain(..)
            .map(|writer| {
                let (url, stop) = (daemon.url(), Arc::clone(&stop));
                std::thread::spawn(move || writer.run(url, stop))
            })
            .collect();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let run_for = if cycle % LONG_CYCLE_EVERY == LONG_CYCLE_EVERY - 1 {
            1500
        } else {
            20 + rng % 200
        };
        std::thread::sleep(Duration::from_millis(run_for));
        daemon.kill();
        stop.store(true, Ordering::Relaxed);
        writers = running.into_iter().map(|w| w.join().unwrap()).collect();
        if report_every > 0 && (cycle + 1) % report_every == 0 {
            figures.acknowledged = writers.iter().map(|w| w.operations).sum();
            figures.log_bytes = log_bytes(dir.path());
            eprintln!(
                "{} kill cycles in {:.0?}: {figures}",
                cycle + 1,
                started.elapsed()
            );
        }
    }
    // A clean restart at the end checks the last cycle's writes too.
    let daemon = Daemon::start(dir.path(), &DAEMON_ARGS);
    let mut con = daemon.client();
    for writer in &mut writers {
        let outcome = writer.verify(&mut con, cycles);
        figures.in_flight_kept += outcome.kept;
        figures.in_flight_dropped += outcome.dropped;
        figures.keys_checked += KEYS_PER_WRITER as u64;
    }
    daemon.stop();
    figures.acknowledged = writers.iter().map(|w| w.operations).sum();
    figures.log_bytes = log_bytes(dir.path());
    figures
}

#[test]
fn acknowledged_writes_survive_20_kills() {
    let figures = crash_loop(20, SEED, 0);
    assert!(
        figures.acknowledged > 1000,
        "only {} writes were acknowledged",
        figures.acknowledged
    );
    assert_eq!(
        figures.keys_checked,
        21 * (WRITERS * KEYS_PER_WRITER) as u64
    );
}

#[test]
fn the_model_refuses_an_older_value_and_half_a_batch() {
    assert_eq!(
        state_of(0, 3, Some(&value_of(0, 3, 7))),
        Some(State::Version(7))
    );
    assert_eq!(state_of(0, 3, Some(&value_of(0, 4, 7))), None);
    assert_eq!(state_of(0, 3, Some("w0-k3-v7-")), None);
    assert_eq!(state_of(0, 3, None), Some(State::Absent));

    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let mut con = daemon.client();
    let mut writer = Writer::new(0, SEED);
    writer.acknowledged[3] = State::Version(7);
    let _: () = con.set(key_of(0, 3), value_of(0, 3, 5)).unwrap();
    let older = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        writer.clone().verify(&mut con, 0);
    }));
    assert!(
        older.is_err(),
        "a value older than the acknowledged one passed"
    );

    let _: () = con.set(key_of(0, 3), value_of(0, 3, 7)).unwrap();
    let _: () = con.set(key_of(0, 5), value_of(0, 5, 8)).unwrap();
    writer.in_flight = vec![(5, State::Version(8)), (6, State::Version(8))];
    let half = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        writer.clone().verify(&mut con, 0);
    }));
    assert!(half.is_err(), "half a batch passed");

    let _: () = con.set(key_of(0, 6), value_of(0, 6, 8)).unwrap();
    let outcome = writer.verify(&mut con, 0);
    assert_eq!((outcome.kept, outcome.dropped), (1, 0));
    assert_eq!(writer.acknowledged[6], State::Version(8));
    assert!(writer.in_flight.is_empty());
    daemon.stop();
}

#[test]
#[ignore = "long: thousands of kill cycles (set SHIPLOG_KILL_CYCLES)"]
fn acknowledged_writes_survive_many_kills() {
    let cycles = std::env::var("SHIPLOG_KILL_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let seed = std::env::var("SHIPLOG_KILL_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(SEED);
    let started = Instant::now();
    let figures = crash_loop(cycles, seed, 250);
    println!(
        "{cycles} kill cycles (seed {seed:#x}) in {:.0?}: {figures}",
        started.elapsed()
    );
}
