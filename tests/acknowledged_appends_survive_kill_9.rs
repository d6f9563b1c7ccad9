//! The real crash test: a child process appends with `Sync` from several threads and reports each
//! acknowledged LSN over a pipe; the parent SIGKILLs it at a random moment, reopens the log and
//! checks that every acknowledged record is present and intact.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test; casts are on small test values"
)]

mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use shiplog::wal::Options;
use shiplog::{Durability, Entry, RecordKind, Wal};

const CHILD_DIR_ENV: &str = "SHIPLOG_CRASH_CHILD_DIR";
const THREADS: u64 = 4;

fn options() -> Options {
    // Small segments, so kills also land during rotation.
    Options {
        segment_bytes: 256 * 1024,
        ..Options::default()
    }
}

/// The payload of the `seq`-th append of `thread`: recognisable and of varying length.
fn payload(thread: u64, seq: u64) -> Vec<u8> {
    let len = 16 + ((seq * 31 + thread * 7) % 300) as usize;
    let mut bytes = Vec::with_capacity(len);
    bytes.extend_from_slice(&thread.to_le_bytes());
    bytes.extend_from_slice(&seq.to_le_bytes());
    bytes.extend((16..len).map(|i| (i as u64 ^ seq ^ thread) as u8));
    bytes
}

fn child(dir: &Path) {
    let wal = Wal::open(dir, options()).expect("child opens the log");
    let out = std::sync::Mutex::new(std::io::stdout());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (wal, out) = (&wal, &out);
            scope.spawn(move || {
                let kind = RecordKind::new(1).unwrap();
                for seq in 0.. {
                    // Guard against an orphaned child: the parent kills long before this.
                    if started.elapsed() > Duration::from_secs(20) {
                        return;
                    }
                    if seq % 5 == 4 {
                        // An atomic batch of three: all or nothing after the crash.
                        let payloads: Vec<_> =
                            (0..3).map(|i| payload(thread, seq * 10 + i)).collect();
                        let entries: Vec<_> = payloads
                            .iter()
                            .map(|p| Entry { kind, payload: p })
                            .collect();
                        let range = wal.append_batch(&entries, Durability::Sync).unwrap();
                        let mut out = out.lock().unwrap();
                        for (i, lsn) in (range.first..=range.last).enumerate() {
                            writeln!(out, "ack {lsn} {thread} {}", seq * 10 + i as u64).unwrap();
                        }
                        out.flush().unwrap();
                    } else {
                        let lsn = wal
                            .append(kind, &payload(thread, seq * 10), Durability::Sync)
                            .unwrap();
                        let mut out = out.lock().unwrap();
                        writeln!(out, "ack {lsn} {thread} {}", seq * 10).unwrap();
                        out.flush().unwrap();
                    }
                }
            });
        }
    });
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        common::xorshift64(&mut self.0)
    }
}

fn run_cycles(test_name: &str, cycles: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut total_acked = 0usize;
    for cycle in 0..cycles {
        let envs = vec![(CHILD_DIR_ENV, dir.path().display().to_string())];
        let acks = common::run_child_until_killed(
            test_name,
            &envs,
            Duration::from_millis(20 + rng.next() % 60),
        );

        let wal = Wal::open(dir.path(), options())
            .unwrap_or_else(|e| panic!("cycle {cycle}: reopen failed: {e}"));
        for line in &acks {
            let fields = common::ack_fields(line);
            let (lsn, thread, seq) = (fields[0], fields[1], fields[2]);
            let record = wal
                .read(lsn)
                .unwrap()
                .unwrap_or_else(|| panic!("cycle {cycle}: acknowledged LSN {lsn} lost"));
            assert_eq!(
                &*record.payload,
                payload(thread, seq).as_slice(),
                "cycle {cycle}: LSN {lsn} damaged"
            );
        }
        // The whole log reads back valid, and never ends inside a batch.
        let mut last = None;
        for record in wal.iter_from(wal.first_lsn()).unwrap() {
            last = Some(record.unwrap_or_else(|e| panic!("cycle {cycle}: {e}")));
        }
        assert!(
            last.is_none_or(|r| !r.batch_continues),
            "cycle {cycle}: log ends inside a batch"
        );
        total_acked += acks.len();
        wal.close().unwrap();
    }
    eprintln!("{cycles} kill cycles, {total_acked} acknowledged records verified");
    assert!(
        total_acked > cycles as usize,
        "the children acknowledged too little to test anything: {total_acked}"
    );
}

#[test]
fn acknowledged_appends_survive_kill_9() {
    if let Some(dir) = std::env::var_os(CHILD_DIR_ENV) {
        child(Path::new(&dir));
        return;
    }
    run_cycles("acknowledged_appends_survive_kill_9", 100);
}

#[test]
#[ignore = "long: thousands of kill cycles; run with --ignored"]
fn acknowledged_appends_survive_kill_9_long() {
    if let Some(dir) = std::env::var_os(CHILD_DIR_ENV) {
        child(Path::new(&dir));
        return;
    }
    run_cycles("acknowledged_appends_survive_kill_9_long", 3000);
}
