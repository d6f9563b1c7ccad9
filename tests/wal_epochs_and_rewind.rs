//! Epochs and rewinds through the log's API: a new epoch is durable in the history and starts
//! a segment of its own; a rewind saves the records it cuts to a rollback file that reads back
//! as a segment, leaves exactly the prefix, and a crash at any point of it (every write,
//! sync, rename and directory sync failing in turn, then a power loss) leaves a log that opens
//! and holds the original records up to some LSN between the fork point and the old end.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test; casts are on small test values"
)]

use std::path::Path;
use std::sync::Arc;

use shiplog::format::epochs::EpochHistory;
use shiplog::format::{SEGMENT_HEADER_BYTES, SegmentHeader, decode_record};
use shiplog::io::{CrashMode, SimFs, SimOp};
use shiplog::wal::{Options, ROLLBACK_DIR, WalError};
use shiplog::{Durability, RecordKind, Wal};

mod lsn_records;

use lsn_records::{append, history, kind, payload};

fn small_segments() -> Options {
    Options {
        segment_bytes: 4096,
        prepare_next_segment: false,
        ..Options::default()
    }
}

#[test]
fn a_new_epoch_is_durable_and_starts_a_segment_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(dir.path(), small_segments()).unwrap();
        assert_eq!(wal.epoch_history(), EpochHistory::initial());
        append(&wal, 10);
        assert_eq!(wal.begin_epoch(2).unwrap(), 11);
        assert!(matches!(
            wal.begin_epoch(2),
            Err(WalError::EpochOrder { .. })
        ));
        append(&wal, 5);
        assert_eq!(wal.read(15).unwrap().unwrap().epoch, 2);
        assert_eq!(wal.read(10).unwrap().unwrap().epoch, 1);
        wal.close().unwrap();
    }
    let wal = Wal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(wal.epoch_history(), history(&[(1, 1), (2, 11)]));
    assert_eq!(wal.highest_epoch(), 2);
    let header = std::fs::read(dir.path().join(shiplog::wal::segment_file_name(11))).unwrap();
    assert_eq!(SegmentHeader::decode(&header).unwrap().epoch, 2);
    append(&wal, 1);
    assert_eq!(wal.read(16).unwrap().unwrap().epoch, 2);
}

#[test]
fn an_epoch_begun_on_an_empty_segment_replaces_it_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(dir.path(), small_segments()).unwrap();
        assert_eq!(wal.begin_epoch(3).unwrap(), 1);
        // A history adopted from a primary never goes back.
        assert!(wal.adopt_history(&EpochHistory::initial()).is_err());
        wal.close().unwrap();
    }
    let wal = Wal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(wal.highest_epoch(), 3);
    append(&wal, 3);
    assert_eq!(wal.read(1).unwrap().unwrap().epoch, 3);
    wal.adopt_history(&history(&[(1, 1), (3, 1), (4, 4)]))
        .unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(wal.highest_epoch(), 4);
}

/// The records of a rollback file, as (LSN, epoch, payload).
fn rollback_records(path: &Path) -> Vec<(u64, u32, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let header = SegmentHeader::decode(&bytes).unwrap();
    let mut at = SEGMENT_HEADER_BYTES;
    let mut out = Vec::new();
    while at < bytes.len() {
        let record = decode_record(&bytes[at..], header.salt).unwrap();
        out.push((record.lsn, record.epoch, record.payload.to_vec()));
        at += record.encoded_bytes();
    }
    out
}

#[test]
fn a_rewind_saves_what_it_cuts_and_the_log_goes_on_from_the_fork_point() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small_segments()).unwrap();
    append(&wal, 200);
    assert!(wal.segment_extents().len() > 5, "spans several segments");
    let saved = wal.save_tail(57).unwrap().unwrap();
    assert!(saved.starts_with(dir.path().join(ROLLBACK_DIR)));
    let records = rollback_records(&saved);
    assert_eq!(records.len(), 143);
    for (i, (lsn, epoch, bytes)) in records.iter().enumerate() {
        assert_eq!(*lsn, 58 + i as u64);
        assert_eq!(*epoch, 1);
        assert_eq!(*bytes, payload(*lsn));
    }
    wal.truncate_after(57).unwrap();
    assert_eq!(wal.written_lsn(), 57);
    assert_eq!(wal.durable_lsn(), 57);
    assert!(wal.read(58).unwrap().is_none());
    let new_kind = RecordKind::new(6).unwrap();
    assert_eq!(
        wal.append(new_kind, b"after", Durability::Sync).unwrap(),
        58
    );
    wal.close().unwrap();
    let wal = Wal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(wal.written_lsn(), 58);
    for lsn in 1..=57 {
        assert_eq!(*wal.read(lsn).unwrap().unwrap().payload, payload(lsn)[..]);
    }
    assert_eq!(*wal.read(58).unwrap().unwrap().payload, b"after"[..]);
    // Nothing after the end: the segment holding the fork point was cut, later ones removed.
    assert!(wal.save_tail(58).unwrap().is_none());
}

#[test]
fn a_rewind_to_a_segment_boundary_and_to_the_end_change_only_what_they_must() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small_segments()).unwrap();
    append(&wal, 120);
    let extents = wal.segment_extents();
    let boundary = extents[2].0 - 1;
    wal.truncate_after(120).unwrap();
    assert_eq!(wal.written_lsn(), 120);
    wal.truncate_after(boundary).unwrap();
    assert_eq!(wal.written_lsn(), boundary);
    assert_eq!(wal.segment_extents().len(), 2);
    assert!(matches!(
        wal.truncate_after(0),
        Err(WalError::CannotRewind { .. })
    ));
    append(&wal, 30);
    drop(wal);
    let wal = Wal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(wal.written_lsn(), boundary + 30);
    for lsn in 1..=boundary + 30 {
        assert_eq!(*wal.read(lsn).unwrap().unwrap().payload, payload(lsn)[..]);
    }
}

fn sim_options(fs: &SimFs) -> Options {
    Options {
        fs: Arc::new(fs.clone()),
        ..small_segments()
    }
}

#[test]
fn a_crash_at_any_step_of_a_rewind_leaves_a_prefix_that_opens() {
    const LAST: u64 = 150;
    const FORK: u64 = 40;
    let dir = Path::new("/log");
    let mut states = 0;
    for op in [
        SimOp::Write,
        SimOp::SyncData,
        SimOp::Create,
        SimOp::Rename,
        SimOp::SyncDir,
    ] {
        for nth in 1..40 {
            let fs = SimFs::new();
            let wal = Wal::open(dir, sim_options(&fs)).unwrap();
            append(&wal, LAST);
            fs.fail_nth(op, fs.op_count(op) + nth, libc_eio());
            let result = wal.truncate_after(FORK);
            if result.is_err() {
                // Files and the in-memory log may differ now: the log takes nothing more.
                let lsn = wal.written_lsn() + 1;
                assert!(
                    wal.append(kind(), &payload(lsn), Durability::Sync).is_err(),
                    "{op:?} #{nth}: an append after a failed rewind was taken"
                );
            }
            let mut modes = vec![CrashMode::DropUnsynced, CrashMode::Scattered { seed: nth }];
            // Directory changes not yet synced: every prefix, and every subset of up to six
            // (a file system that commits them in any order), a sample of more.
            let changes = fs.unsynced_dir_changes();
            modes.extend((1..=changes).map(|dir_changes| CrashMode::DirPrefix { dir_changes }));
            let subsets = if changes <= 6 { 1u64 << changes } else { 64 };
            modes.extend((0..subsets).map(|i| CrashMode::DirSubset {
                keep: if changes <= 6 {
                    i
                } else {
                    (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                },
            }));
            for mode in modes {
                let image = fs.crash(mode);
                let reopened = Wal::open(dir, sim_options(&image))
                    .unwrap_or_else(|e| panic!("{op:?} #{nth} failing, {mode:?}: {e}"));
                let end = reopened.written_lsn();
                assert!(
                    (FORK..=LAST).contains(&end),
                    "{op:?} #{nth}: the log ends at {end}"
                );
                if result.is_ok() {
                    assert_eq!(end, FORK, "{op:?} #{nth}: a finished rewind is durable");
                }
                for lsn in 1..=end {
                    assert_eq!(
                        *reopened.read(lsn).unwrap().unwrap().payload,
                        payload(lsn)[..],
                        "{op:?} #{nth}: LSN {lsn}"
                    );
                }
                states += 1;
            }
        }
    }
    eprintln!("rewind: {states} crash states");
    assert!(states >= 600, "{states}");
}

fn libc_eio() -> i32 {
    5
}

#[test]
fn an_empty_segment_a_promotion_started_is_dropped_before_following_a_primary() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small_segments()).unwrap();
    append(&wal, 10);
    let segments = wal.segment_extents().len();
    assert_eq!(wal.begin_epoch(2).unwrap(), 11);
    assert_eq!(
        wal.segment_extents().len(),
        segments + 1,
        "the epoch started a segment"
    );
    wal.drop_empty_tail().unwrap();
    assert_eq!(wal.segment_extents().len(), segments);
    assert_eq!(wal.epoch(), 1, "the log's epoch is its last record's again");
    // The history still knows the epoch (the new primary's history replaces it at the
    // welcome); a second call changes nothing.
    assert_eq!(wal.highest_epoch(), 2);
    wal.drop_empty_tail().unwrap();
    assert_eq!(wal.segment_extents().len(), segments);
    wal.close().unwrap();
    let wal = Wal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(wal.written_lsn(), 10);
    assert_eq!(wal.segment_extents().len(), segments);
    for lsn in 1..=10 {
        assert_eq!(*wal.read(lsn).unwrap().unwrap().payload, payload(lsn)[..]);
    }
}
