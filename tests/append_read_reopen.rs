//! Records appended at every durability level read back intact, across segment rotation and
//! reopen.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test; casts are on small test values"
)]

use shiplog::wal::Options;
use shiplog::{Durability, Entry, RecordKind, Wal};

fn payload(lsn: u64) -> Vec<u8> {
    let len = (lsn * 37 % 300) as usize;
    (0..len).map(|i| (lsn as usize + i) as u8).collect()
}

#[test]
fn appended_records_read_back_across_rotation_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        segment_bytes: 8192,
        ..Options::default()
    };
    let kind = RecordKind::new(1).unwrap();
    {
        let wal = Wal::open(dir.path(), options.clone()).unwrap();
        for lsn in 1..=200u64 {
            let durability =
                [Durability::Sync, Durability::Buffered, Durability::None][lsn as usize % 3];
            assert_eq!(wal.append(kind, &payload(lsn), durability).unwrap(), lsn);
        }
        let batch: Vec<Vec<u8>> = (201..=210).map(payload).collect();
        let entries: Vec<Entry> = batch.iter().map(|p| Entry { kind, payload: p }).collect();
        let range = wal.append_batch(&entries, Durability::Sync).unwrap();
        assert_eq!((range.first, range.last), (201, 210));
        assert!(wal.stats().segments > 3, "small segments rotate");
        let read: Vec<_> = wal.iter_from(1).unwrap().map(Result::unwrap).collect();
        assert_eq!(read.len(), 210);
        for record in &read {
            assert_eq!(&*record.payload, payload(record.lsn).as_slice());
        }
        wal.close().unwrap();
    }
    let wal = Wal::open(dir.path(), options).unwrap();
    assert_eq!(wal.durable_lsn(), 210);
    for lsn in [1, 63, 64, 65, 128, 150, 209, 210] {
        let record = wal.read(lsn).unwrap().unwrap();
        assert_eq!(record.lsn, lsn);
        assert_eq!(&*record.payload, payload(lsn).as_slice());
        assert_eq!(record.batch_continues, (201..210).contains(&lsn));
    }
    assert_eq!(
        wal.append(kind, b"after reopen", Durability::Sync).unwrap(),
        211
    );
}
