//! Simulated power loss: unsynced writes are dropped or torn at a 512-byte sector, and recovery
//! keeps exactly the synced prefix (and never half a batch).

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test; casts are on small test values"
)]

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use shiplog::io::{CrashMode, SimFs};
use shiplog::wal::Options;
use shiplog::{Durability, Entry, RecordKind, Wal};

mod lsn_records;

use lsn_records::sim_options;

fn options(fs: &SimFs) -> Options {
    // No background preparer: fault counts and crash points must not depend on its timing.
    Options {
        segment_bytes: 16 * 1024,
        prepare_next_segment: false,
        fs: Arc::new(fs.clone()),
        ..Options::default()
    }
}

fn payload(lsn: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (lsn as usize * 7 + i) as u8).collect()
}

#[derive(Debug, Clone)]
struct Op {
    batch: usize,
    len: usize,
    durability: Durability,
}

fn op() -> impl Strategy<Value = Op> {
    (
        1usize..5,
        0usize..1500,
        prop_oneof![
            Just(Durability::Sync),
            Just(Durability::Buffered),
            Just(Durability::None)
        ],
    )
        .prop_map(|(batch, len, durability)| Op {
            batch,
            len,
            durability,
        })
}

fn crash_mode() -> impl Strategy<Value = CrashMode> {
    prop_oneof![
        Just(CrashMode::DropUnsynced),
        (0usize..4, 0u64..8).prop_map(|(whole_writes, torn_sectors)| CrashMode::Ordered {
            whole_writes,
            torn_sectors
        }),
        any::<u64>().prop_map(|seed| CrashMode::Scattered { seed }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn recovery_keeps_exactly_the_synced_prefix(ops in proptest::collection::vec(op(), 1..40), mode in crash_mode()) {
        let fs = SimFs::new();
        let dir = Path::new("/log");
        let kind = RecordKind::new(2).unwrap();
        let wal = Wal::open(dir, Options { flush_interval_ms: 60_000, ..options(&fs) }).unwrap();
        let mut batches = Vec::new(); // (first, last, len)
        for op in &ops {
            let payloads: Vec<Vec<u8>> = (0..op.batch).map(|i| payload(wal.written_lsn() + 1 + i as u64, op.len)).collect();
            let entries: Vec<Entry> = payloads.iter().map(|p| Entry { kind, payload: p }).collect();
            let range = wal.append_batch(&entries, op.durability).unwrap();
            batches.push((range.first, range.last, op.len));
        }
        let durable = wal.durable_lsn();
        let image = fs.crash(mode);
        drop(wal); // the image was taken first: whatever the drop syncs is not in it

        let reopened = Wal::open(dir, options(&image)).unwrap();
        let recovered = reopened.durable_lsn();
        prop_assert!(recovered >= durable, "lost synced records: durable {} recovered {}", durable, recovered);
        if mode == CrashMode::DropUnsynced {
            prop_assert_eq!(recovered, durable);
        }
        prop_assert!(batches.iter().any(|&(_, last, _)| last == recovered) || recovered == 0, "recovered to LSN {} inside a batch", recovered);
        let mut expected = batches.iter().flat_map(|&(first, last, len)| (first..=last).map(move |lsn| (lsn, len)));
        for record in reopened.iter_from(1).unwrap() {
            let record = record.unwrap();
            let (lsn, len) = expected.next().unwrap();
            prop_assert_eq!(record.lsn, lsn);
            let want = payload(lsn, len);
            prop_assert_eq!(&*record.payload, want.as_slice());
        }
        // The log accepts writes again, right after the recovered prefix.
        let next = reopened.append(kind, b"after", Durability::Sync).unwrap();
        prop_assert_eq!(next, recovered + 1);
    }
}

#[test]
fn a_failed_fdatasync_is_fatal_and_reopen_recovers() {
    let fs = SimFs::new();
    let dir = Path::new("/log");
    let kind = RecordKind::new(1).unwrap();
    let wal = Wal::open(dir, options(&fs)).unwrap();
    wal.append(kind, b"one", Durability::Sync).unwrap();
    assert!(wal.poisoned().is_none());
    let syncs = fs.op_count(shiplog::io::SimOp::SyncData);
    fs.fail_nth(shiplog::io::SimOp::SyncData, syncs + 1, 5);
    let err = wal.append(kind, b"two", Durability::Sync).unwrap_err();
    assert!(matches!(err, shiplog::WalError::Poisoned { .. }), "{err}");
    // Later writes are refused even though the next fdatasync would succeed.
    assert!(matches!(
        wal.append(kind, b"three", Durability::Sync),
        Err(shiplog::WalError::Poisoned { .. })
    ));
    assert!(matches!(
        wal.append(kind, b"four", Durability::None),
        Err(shiplog::WalError::Poisoned { .. })
    ));
    assert!(wal.sync().is_err());
    // What `INFO` reports as `aof_last_write_status:err`.
    assert!(matches!(
        wal.poisoned(),
        Some(shiplog::WalError::Poisoned {
            op: "fdatasync",
            ..
        })
    ));
    drop(wal);
    let image = fs.crash(CrashMode::DropUnsynced);
    let reopened = Wal::open(dir, options(&image)).unwrap();
    assert!(reopened.poisoned().is_none());
    assert_eq!(reopened.durable_lsn(), 1);
    assert_eq!(&*reopened.read(1).unwrap().unwrap().payload, b"one");
    assert_eq!(
        reopened
            .append(kind, b"two again", Durability::Sync)
            .unwrap(),
        2
    );
}

/// After a kill -9 the recovered tail segment holds bytes that were never synced: open must not
/// publish them as durable, and the first write into a new segment must seal the old one, or a
/// `Sync` acknowledgement given after the reopen is lost at the next power loss.
#[test]
fn a_sync_ack_after_a_kill_and_reopen_survives_power_loss() {
    let kind = RecordKind::new(1).unwrap();
    let dir = Path::new("/log");
    let fs1 = SimFs::new();
    let wal = Wal::open(dir, sim_options(&fs1)).unwrap();
    for _ in 0..31 {
        wal.append(kind, &[7u8; 100], Durability::None).unwrap(); // 125 B each, 31 fit
    }
    let fs2 = fs1.process_crash(); // kill -9: page cache survives, nothing synced
    std::mem::forget(wal);
    let wal = Wal::open(dir, sim_options(&fs2)).unwrap();
    assert_eq!(wal.durable_lsn(), 31); // claims 1..=31 durable; they are not
    // Does not fit in segment 1: rotates; acknowledged only after fdatasync.
    let lsn = wal.append(kind, &[9u8; 200], Durability::Sync).unwrap();
    assert_eq!(lsn, 32);
    let fs3 = fs2.crash(CrashMode::DropUnsynced); // power loss
    std::mem::forget(wal);
    let wal = Wal::open(dir, sim_options(&fs3)).expect("open after power loss");
    let rec = wal.read(32).unwrap().expect("acknowledged Sync record 32");
    assert_eq!(&*rec.payload, &[9u8; 200][..]);
}
