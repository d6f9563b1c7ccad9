//! `tail` blocks until records are durable; payload handles stay readable after retention
//! removes their segment.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::time::{Duration, Instant};

use shiplog::wal::Options;
use shiplog::{Durability, RecordKind, Wal};

fn kind() -> RecordKind {
    RecordKind::new(1).unwrap()
}

#[test]
fn tail_blocks_until_a_record_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), Options::default()).unwrap();
    wal.append(kind(), b"first", Durability::Sync).unwrap();
    std::thread::scope(|scope| {
        let follower = scope.spawn(|| {
            let started = Instant::now();
            let durable = wal.tail(1, Duration::from_secs(30)).unwrap();
            (durable, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(200));
        wal.append(kind(), b"second", Durability::Sync).unwrap();
        let (durable, waited) = follower.join().unwrap();
        assert_eq!(durable, 2);
        assert!(
            waited >= Duration::from_millis(150),
            "tail returned before the append: {waited:?}"
        );
    });
    // Nothing new: tail times out and reports the durable LSN it has.
    assert_eq!(wal.tail(2, Duration::from_millis(50)).unwrap(), 2);
    let records: Vec<_> = wal.read_range(2, 2).unwrap().map(Result::unwrap).collect();
    assert_eq!(&*records[0].payload, b"second");
}

#[test]
fn payloads_outlive_the_removal_of_their_segment() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(
        dir.path(),
        Options {
            segment_bytes: 4096,
            ..Options::default()
        },
    )
    .unwrap();
    for i in 0..200u32 {
        wal.append(kind(), &i.to_le_bytes().repeat(25), Durability::None)
            .unwrap();
    }
    wal.sync().unwrap();
    let held = wal.read(1).unwrap().unwrap().payload;
    let segments_before = wal.stats().segments;
    let removed = wal.remove_before(150).unwrap();
    assert!(removed > 0);
    assert_eq!(wal.stats().segments, segments_before - removed);
    assert!(wal.first_lsn() <= 150 && wal.first_lsn() > 1);
    assert!(matches!(
        wal.read(1),
        Err(shiplog::WalError::NotRetained { .. })
    ));
    assert_eq!(&*held, 0u32.to_le_bytes().repeat(25).as_slice());
    assert!(!dir.path().join("00000000000000000001.seg").exists());
    // Retention survives reopen: the log now starts later, with no gap.
    wal.close().unwrap();
    let wal = Wal::open(
        dir.path(),
        Options {
            segment_bytes: 4096,
            ..Options::default()
        },
    )
    .unwrap();
    assert!(wal.first_lsn() <= 150 && wal.first_lsn() > 1);
    assert_eq!(wal.durable_lsn(), 200);
}
