//! A failed `fsync` on Linux may mark the file's dirty pages clean without writing them
//! (PostgreSQL's "fsyncgate"): the page cache keeps showing the bytes, a later `fsync` succeeds
//! without writing them, and only a power loss reveals the old ones. The simulated file system
//! models that (`SimFs::set_fsyncgate`). The log stops on a failed `fsync` (nothing after it is
//! acknowledged); the danger is the restart: recovery reads the never-written records from the
//! page cache, the log appends and acknowledges after them, and a later power loss opens a hole
//! under acknowledged records. Recovery therefore writes the tail segment's records again
//! before it calls them durable. Each test fails every `fdatasync` of a run in turn, including
//! those that seal a segment at a roll.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test; casts are on small test values"
)]

use std::path::Path;

use shiplog::io::{CrashMode, SimFs, SimOp};
use shiplog::{Durability, Lsn, Wal};

mod lsn_records;

use lsn_records::{kind, payload, sim_options};

const EIO: i32 = 5;
const DIR: &str = "/log";

fn append(wal: &Wal, lsn: Lsn) -> shiplog::wal::Result<Lsn> {
    wal.append(kind(), &payload(lsn), Durability::Sync)
}

fn assert_holds(wal: &Wal, through: Lsn, context: &str) {
    assert!(
        wal.written_lsn() >= through,
        "{context}: the log ends at {}, before the acknowledged {through}",
        wal.written_lsn()
    );
    for lsn in 1..=wal.written_lsn() {
        let record = wal.read(lsn).unwrap().unwrap();
        assert_eq!(*record.payload, payload(lsn)[..], "{context}: LSN {lsn}");
    }
}

/// Tries 80 appends with the `nth` `fdatasync` of the run failing; returns the last LSN made
/// durable by an acknowledged `Sync` append and whether the failure happened. With `buffered`,
/// two of every three appends are `Buffered`, so a segment can be full of unsynced records
/// when a `Sync` append rolls to the next one and its seal fails. A failure the log can return
/// without stopping (the sync of a new segment not yet named) lets later appends succeed; any
/// other stops it for good (`tests/crash_states.rs` checks which).
fn run_with_a_failure(fs: &SimFs, nth: u64, buffered: bool) -> (Lsn, bool) {
    let wal = Wal::open(Path::new(DIR), sim_options(fs)).unwrap();
    fs.set_fsyncgate(true);
    let target = fs.op_count(SimOp::SyncData) + nth;
    fs.fail_nth(SimOp::SyncData, target, EIO);
    let mut acked = 0;
    for i in 0..80 {
        let lsn = wal.written_lsn() + 1;
        let durability = if buffered && i % 3 != 2 {
            Durability::Buffered
        } else {
            Durability::Sync
        };
        if let Ok(got) = wal.append(kind(), &payload(lsn), durability) {
            assert_eq!(got, lsn);
            if durability == Durability::Sync {
                acked = lsn;
            }
        }
    }
    (acked, fs.op_count(SimOp::SyncData) >= target)
}

#[test]
fn after_a_failed_fsync_a_restart_and_a_power_loss_keep_every_acknowledged_record() {
    explore(false);
}

#[test]
fn the_same_with_buffered_appends_whose_segment_is_sealed_by_a_failing_sync() {
    explore(true);
}

fn explore(buffered: bool) {
    let mut failures = 0;
    let mut cached_after_restart = 0;
    for nth in 1..=90 {
        let fs = SimFs::new();
        let (acked, failed) = run_with_a_failure(&fs, nth, buffered);
        if !failed {
            break;
        }
        failures += 1;
        let context = format!("fdatasync #{nth} failing after LSN {acked}");

        // Restart (the page cache survives), acknowledge more, then lose the power.
        let restarted = fs.process_crash();
        let wal = Wal::open(Path::new(DIR), sim_options(&restarted)).unwrap();
        assert_holds(&wal, acked, &format!("{context}, restarted"));
        let recovered = wal.written_lsn();
        if recovered > acked {
            cached_after_restart += 1;
        }
        for lsn in recovered + 1..=recovered + 30 {
            assert_eq!(append(&wal, lsn).unwrap(), lsn);
        }
        let acked = recovered + 30;
        drop(wal);
        for mode in [CrashMode::DropUnsynced, CrashMode::Scattered { seed: nth }] {
            let image = restarted.crash(mode);
            let wal = Wal::open(Path::new(DIR), sim_options(&image))
                .unwrap_or_else(|e| panic!("{context}, restarted, power loss {mode:?}: {e}"));
            assert_holds(&wal, acked, &format!("{context}, restarted, {mode:?}"));
        }
    }
    eprintln!(
        "fsyncgate (buffered appends: {buffered}): {failures} fsync failures injected, \
         {cached_after_restart} restarts read unwritten records from the cache, {} power-loss \
         images checked",
        failures * 2
    );
    let expected = if buffered { 30 } else { 80 };
    assert!(
        failures >= expected,
        "only {failures} fsync failures were injected"
    );
    // The case that matters happened: records never written were read back from the cache.
    assert!(
        cached_after_restart >= failures / 2,
        "only {cached_after_restart} of {failures} restarts saw unwritten records"
    );
}

#[test]
fn the_simulator_hides_nothing_a_failed_fsync_dropped() {
    // The model itself: without the rewrite, the dropped bytes are lost at the power loss
    // even though a later fsync succeeded.
    use shiplog::io::FileSystem;
    let fs = SimFs::new();
    fs.set_fsyncgate(true);
    let file = fs.create(Path::new("/f")).unwrap();
    fs.sync_dir(Path::new("/")).unwrap();
    file.write_all_at(b"durable ", 0).unwrap();
    file.sync_data().unwrap();
    file.write_all_at(b"dropped ", 8).unwrap();
    fs.fail_nth(SimOp::SyncData, fs.op_count(SimOp::SyncData) + 1, EIO);
    assert!(file.sync_data().is_err());
    file.write_all_at(b"later", 16).unwrap();
    file.sync_data().unwrap();
    let mut cached = [0u8; 21];
    file.read_exact_at(&mut cached, 0).unwrap();
    assert_eq!(
        &cached, b"durable dropped later",
        "the cache still shows it"
    );
    let image = fs.crash(CrashMode::DropUnsynced);
    let file = image.open(Path::new("/f"), false).unwrap();
    let mut disk = [0u8; 21];
    file.read_exact_at(&mut disk, 0).unwrap();
    assert_eq!(&disk, b"durable \0\0\0\0\0\0\0\0later");
    // Written again, it is durable again.
    let fs = fs.process_crash();
    let file = fs.open(Path::new("/f"), true).unwrap();
    file.write_all_at(b"dropped ", 8).unwrap();
    file.sync_data().unwrap();
    let image = fs.crash(CrashMode::DropUnsynced);
    let file = image.open(Path::new("/f"), false).unwrap();
    file.read_exact_at(&mut disk, 0).unwrap();
    assert_eq!(&disk, b"durable dropped later");
}

#[test]
fn only_a_clean_close_is_marked_and_an_open_removes_the_mark_durably() {
    use shiplog::io::FileSystem;
    use shiplog::wal::CLEAN_CLOSE_FILE;
    let marked = |fs: &SimFs| {
        fs.list(Path::new(DIR))
            .unwrap()
            .iter()
            .any(|n| n == CLEAN_CLOSE_FILE)
    };
    let fs = SimFs::new();
    let wal = Wal::open(Path::new(DIR), sim_options(&fs)).unwrap();
    append(&wal, 1).unwrap();
    assert!(!marked(&fs));
    wal.close().unwrap();
    assert!(
        marked(&fs.crash(CrashMode::DropUnsynced)),
        "the mark is durable"
    );

    let wal = Wal::open(Path::new(DIR), sim_options(&fs)).unwrap();
    assert!(
        !marked(&fs.crash(CrashMode::DropUnsynced)),
        "removed durably at open"
    );
    append(&wal, 2).unwrap();
    // A log stopped by a failed fsync is not marked when it closes.
    fs.set_fsyncgate(true);
    fs.fail_nth(SimOp::SyncData, fs.op_count(SimOp::SyncData) + 1, EIO);
    assert!(append(&wal, 3).is_err());
    wal.close().unwrap();
    assert!(!marked(&fs));
}
