//! A full disk refuses the rotation that needs a new segment, and the log goes on once there
//! is room again, without a reopen: a failed rotation once left `<lsn>.seg.tmp` behind, and
//! every later rotation at the same LSN failed with EEXIST.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::Path;

use shiplog::io::{SimFs, SimOp};
use shiplog::{Durability, RecordKind, Wal};

mod lsn_records;

use lsn_records::sim_options;

#[test]
fn rotation_recovers_after_the_disk_was_full() {
    let kind = RecordKind::new(1).unwrap();
    let fs = SimFs::new();
    let wal = Wal::open(Path::new("/log"), sim_options(&fs)).unwrap();
    for _ in 0..32 {
        wal.append(kind, &[7u8; 100], Durability::None).unwrap();
    }
    let n = fs.op_count(SimOp::Allocate);
    fs.fail_nth(SimOp::Allocate, n + 1, 28); // ENOSPC once
    let first = wal.append(kind, &[1u8; 100], Durability::Sync);
    assert!(first.is_err(), "{first:?}");
    // The disk has room again.
    let second = wal.append(kind, &[1u8; 100], Durability::Sync);
    assert!(second.is_ok(), "log did not go on: {second:?}");
}
