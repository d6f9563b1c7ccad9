//! Shared by the simulated-file-system tests of the log: records whose kind and bytes follow
//! from their LSN, so any record read back can be checked without a model of its contents.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test; casts are on small test values"
)]

use std::sync::Arc;

use shiplog::format::epochs::{EpochHistory, EpochStart};
use shiplog::io::SimFs;
use shiplog::wal::Options;
use shiplog::{DbOptions, Durability, Lsn, RecordKind, Wal};

/// The kind of every record these tests write.
pub fn kind() -> RecordKind {
    RecordKind::new(5).unwrap()
}

/// The payload of the record at `lsn`: 100 to 149 bytes that differ from LSN to LSN.
pub fn payload(lsn: Lsn) -> Vec<u8> {
    (0..100 + lsn as usize % 50)
        .map(|i| (lsn as usize * 7 + i) as u8)
        .collect()
}

/// A log on `fs` with 4 KiB segments (about 25 records each), no prepared next segment and no
/// background sync, so the file operations of a run are deterministic.
#[allow(
    dead_code,
    reason = "not every test file opens a log on a simulated file system"
)]
pub fn sim_options(fs: &SimFs) -> Options {
    Options {
        segment_bytes: 4096,
        prepare_next_segment: false,
        flush_interval_ms: 60_000,
        fs: Arc::new(fs.clone()),
        ..Options::default()
    }
}

/// A store on `fs` over a log of [`sim_options`], with compaction only when a test asks.
#[allow(dead_code, reason = "not every test file opens a store")]
pub fn sim_db_options(fs: &SimFs) -> DbOptions {
    let mut options = DbOptions {
        wal: sim_options(fs),
        ..DbOptions::default()
    };
    options.compaction.enabled = false;
    options.compaction.bytes_per_sec = 0;
    options
}

/// An epoch history of `(epoch, start_lsn)` entries.
#[allow(dead_code, reason = "not every test file changes epochs")]
pub fn history(entries: &[(u32, u64)]) -> EpochHistory {
    EpochHistory::from_entries(
        entries
            .iter()
            .map(|&(epoch, start_lsn)| EpochStart { epoch, start_lsn })
            .collect(),
    )
    .unwrap()
}

/// Appends the next `count` records, each acknowledged durable.
#[allow(dead_code, reason = "not every test file appends this way")]
pub fn append(wal: &Wal, count: u64) {
    for _ in 0..count {
        let lsn = wal.written_lsn() + 1;
        assert_eq!(
            wal.append(kind(), &payload(lsn), Durability::Sync).unwrap(),
            lsn
        );
    }
}
