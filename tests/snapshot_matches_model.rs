//! Snapshots through the library API: a snapshot taken at LSN S while writers and compaction
//! run holds exactly the model's state at S, and a restored store serves exactly that state
//! and goes on from S + 1.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shiplog::engine::{CompactionOptions, Db, DbOptions, WriteBatch};
use shiplog::snapshot::{
    create_snapshot_file, install_base, read_snapshot, restore_snapshot, verify_snapshot,
};
use shiplog::wal::{self, Durability};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// One acknowledged operation: its LSN and what it did to which keys.
type Op = (u64, Vec<(Vec<u8>, Option<Vec<u8>>)>);

fn options() -> DbOptions {
    DbOptions {
        wal: wal::Options {
            segment_bytes: 64 << 10,
            ..wal::Options::default()
        },
        durability: Durability::Buffered,
        compaction: CompactionOptions {
            check_interval_ms: 5,
            dirty_ratio_min: 0.05,
            bytes_per_sec: 0,
            tombstone_horizon_lsns: 50,
            ..CompactionOptions::default()
        },
        ..DbOptions::default()
    }
}

fn model_at(ops: &[Op], lsn: u64) -> Model {
    let mut ops: Vec<&Op> = ops.iter().filter(|(l, _)| *l <= lsn).collect();
    ops.sort_by_key(|(l, _)| *l);
    let mut model = Model::new();
    for (_, changes) in ops {
        for (key, value) in changes {
            match value {
                Some(v) => model.insert(key.clone(), v.clone()),
                None => model.remove(key),
            };
        }
    }
    model
}

fn snapshot_contents(path: &std::path::Path) -> (u64, Model) {
    let file = std::fs::File::open(path).unwrap();
    let mut reader = std::io::BufReader::new(file);
    let mut contents = Model::new();
    let info = read_snapshot(
        &mut reader,
        &mut |_, entry| {
            contents.insert(entry.key.to_vec(), entry.value.to_vec());
            Ok(())
        },
        &mut |_| {},
    )
    .unwrap();
    (info.header.lsn, contents)
}

fn writer(db: &Db, seed: u64, ops: &Mutex<Vec<Op>>, stop: &AtomicBool) {
    let mut x = seed;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    while !stop.load(Ordering::Acquire) {
        let r = next();
        let key = format!("key-{:03}", r % 300).into_bytes();
        let value_len = usize::try_from(r >> 40).unwrap() % 700;
        let value = vec![u8::try_from(r % 251).unwrap(); value_len];
        let op = match r % 10 {
            0 => (db.delete(&key).unwrap(), vec![(key, None)]),
            1 => {
                let other = format!("key-{:03}", (r >> 20) % 300).into_bytes();
                let mut batch = WriteBatch::new();
                batch.put(&key, &value);
                batch.delete(&other);
                let lsn = db.write_batch(&batch).unwrap().unwrap();
                if other == key {
                    (lsn, vec![(key, None)])
                } else {
                    (lsn, vec![(key, Some(value)), (other, None)])
                }
            }
            _ => (db.put(&key, &value).unwrap(), vec![(key, Some(value))]),
        };
        ops.lock().unwrap().push(op);
    }
}

#[test]
fn snapshots_taken_under_writes_and_compaction_hold_exactly_the_state_at_their_lsn() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db"), options()).unwrap();
    let ops = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let mut taken = Vec::new();
    std::thread::scope(|scope| {
        for seed in [0x9e37_79b9_7f4a_7c15_u64, 0x2545_f491_4f6c_dd1d] {
            let (db, ops, stop) = (&db, &ops, &stop);
            scope.spawn(move || writer(db, seed, ops, stop));
        }
        for i in 0..4 {
            std::thread::sleep(Duration::from_millis(150));
            let state = db.freeze().unwrap();
            let path = dir.path().join(format!("snap-{i}"));
            let summary = create_snapshot_file(&state, &path, 1, &mut |_| {}).unwrap();
            assert_eq!(summary.header.lsn, state.lsn());
            taken.push(path);
        }
        stop.store(true, Ordering::Release);
    });
    let ops = ops.into_inner().unwrap();
    assert!(ops.len() > 500, "the writers ran: {} operations", ops.len());
    let mut last = 0;
    for path in &taken {
        let (lsn, contents) = snapshot_contents(path);
        assert!(lsn > last, "each snapshot is later than the one before");
        last = lsn;
        let model = model_at(&ops, lsn);
        assert!(!model.is_empty());
        assert_eq!(
            contents, model,
            "snapshot at LSN {lsn} differs from the model"
        );
    }
    // The last snapshot, restored, serves its state and goes on after its LSN.
    let path = taken.last().unwrap();
    let restored_dir = dir.path().join("restored");
    let info = restore_snapshot(path, &restored_dir, &mut |_| {}).unwrap();
    let restored = Db::open(&restored_dir, options()).unwrap();
    let model = model_at(&ops, info.header.lsn);
    let served: Model = restored
        .range::<&[u8], _>(..)
        .map(|entry| {
            let (k, v) = entry.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect();
    assert_eq!(served, model);
    assert_eq!(restored.wal().cluster_id(), db.wal().cluster_id());
    let lsn = restored.put(b"after", b"restore").unwrap();
    assert_eq!(lsn, info.header.lsn + 1);
    restored.close().unwrap();
    let reopened = Db::open(&restored_dir, options()).unwrap();
    assert_eq!(reopened.len(), model.len() + 1);
    assert_eq!(&*reopened.get(b"after").unwrap().unwrap(), b"restore");
    assert!(verify_snapshot(path, &mut |_| {}).is_ok());
}

#[test]
fn an_empty_store_and_a_store_of_only_deletes_snapshot_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db"), DbOptions::default()).unwrap();
    let empty = dir.path().join("empty.snap");
    let summary = create_snapshot_file(&db.freeze().unwrap(), &empty, 1, &mut |_| {}).unwrap();
    assert_eq!((summary.header.lsn, summary.header.key_count), (0, 0));
    let restored = dir.path().join("restored-empty");
    restore_snapshot(&empty, &restored, &mut |_| {}).unwrap();
    let reopened = Db::open(&restored, DbOptions::default()).unwrap();
    assert!(reopened.is_empty());
    assert_eq!(reopened.wal().cluster_id(), db.wal().cluster_id());
    drop(reopened);

    db.put(b"a", b"1").unwrap();
    db.delete(b"a").unwrap();
    let deleted = dir.path().join("deleted.snap");
    let summary = create_snapshot_file(&db.freeze().unwrap(), &deleted, 1, &mut |_| {}).unwrap();
    assert_eq!((summary.header.lsn, summary.header.key_count), (2, 0));
    let restored = dir.path().join("restored-deleted");
    restore_snapshot(&deleted, &restored, &mut |_| {}).unwrap();
    let reopened = Db::open(&restored, DbOptions::default()).unwrap();
    assert!(reopened.is_empty());
    assert_eq!(reopened.put(b"b", b"2").unwrap(), 3);
}

#[test]
fn large_values_and_many_segments_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db"), options()).unwrap();
    let mut model = Model::new();
    for i in 0..200u32 {
        let value: Vec<u8> = (0..(i as usize * 997) % 600_000)
            .map(|j| u8::try_from((j * 31 + i as usize) % 256).unwrap())
            .collect();
        let key = format!("big-{i:04}").into_bytes();
        db.put(&key, &value).unwrap();
        model.insert(key, value);
    }
    let path = dir.path().join("big.snap");
    create_snapshot_file(&db.freeze().unwrap(), &path, 3, &mut |_| {}).unwrap();
    let (_, contents) = snapshot_contents(&path);
    assert_eq!(contents, model);
    let restored_dir = dir.path().join("restored");
    restore_snapshot(&path, &restored_dir, &mut |_| {}).unwrap();
    let restored = Db::open(&restored_dir, options()).unwrap();
    for (key, value) in &model {
        assert_eq!(&*restored.get(key).unwrap().unwrap(), value.as_slice());
    }
    drop(restored);
    // Restored into a log of small segments, the base spans many of them.
    let small_dir = dir.path().join("small");
    let small = wal::Wal::open(&small_dir, options().wal).unwrap();
    let mut file = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
    install_base(&small, &mut file, &mut |_| {}).unwrap();
    small.close().unwrap();
    let restored = Db::open(&small_dir, options()).unwrap();
    assert!(restored.stats().segments > 100, "{:?}", restored.stats());
    for (key, value) in &model {
        assert_eq!(&*restored.get(key).unwrap().unwrap(), value.as_slice());
    }
}

#[test]
fn a_restore_in_place_interrupted_at_any_point_leaves_an_empty_marked_store_never_a_partial_one() {
    let dir = tempfile::tempdir().unwrap();
    let source = Db::open(dir.path().join("source"), options()).unwrap();
    for i in 0..300u32 {
        source
            .put(format!("k{i:04}").as_bytes(), &vec![7u8; 900])
            .unwrap();
    }
    let path = dir.path().join("snap");
    create_snapshot_file(&source.freeze().unwrap(), &path, 1, &mut |_| {}).unwrap();
    let target_dir = dir.path().join("target");
    {
        let target = Db::open(&target_dir, options()).unwrap();
        target.put(b"old", b"state").unwrap();
        target.begin_restore().unwrap();
        assert!(target.restoring());
        assert!(target.get(b"old").unwrap().is_none());
        // Half of the base arrives, then the process dies.
        let bytes = std::fs::read(&path).unwrap();
        let half = &bytes[..bytes.len() / 2];
        assert!(install_base(target.wal(), &mut &half[..], &mut |_| {}).is_err());
    }
    let reopened = Db::open(&target_dir, options()).unwrap();
    assert!(
        reopened.restoring(),
        "the store is still marked as restoring"
    );
    assert!(reopened.is_empty(), "nothing of the partial base is served");
    assert!(reopened.get(b"old").unwrap().is_none());
    // A complete restore clears the mark.
    reopened.begin_restore().unwrap();
    let mut file = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
    install_base(reopened.wal(), &mut file, &mut |_| {}).unwrap();
    reopened.finish_restore().unwrap();
    assert!(!reopened.restoring());
    assert_eq!(reopened.len(), 300);
    drop(reopened);
    let again = Db::open(&target_dir, options()).unwrap();
    assert!(!again.restoring());
    assert_eq!(again.len(), 300);
}
