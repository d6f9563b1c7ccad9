//! The key-value store against a `BTreeMap` model: random puts, deletes, batches, gets, ranges,
//! prefix scans, reopens and simulated power losses, compared after every step.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use shiplog::io::{CrashMode, SimFs};
use shiplog::{Db, DbOptions, Durability, WriteBatch};

#[derive(Debug, Clone)]
enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        durability: Durability,
    },
    Delete {
        key: Vec<u8>,
    },
    Batch {
        ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    },
    Get {
        key: Vec<u8>,
    },
    Range {
        a: Vec<u8>,
        b: Vec<u8>,
    },
    Prefix {
        prefix: Vec<u8>,
    },
    Reopen,
    Checkpoint,
    Compact,
    ProcessCrash,
    PowerLoss {
        mode: CrashMode,
    },
}

type State = BTreeMap<Vec<u8>, Vec<u8>>;

fn key() -> impl Strategy<Value = Vec<u8>> {
    // A small alphabet, so keys collide and prefixes share.
    proptest::collection::vec(
        prop_oneof![Just(b'a'), Just(b'b'), Just(0u8), Just(0xff)],
        0..4,
    )
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..300)
}

fn durability() -> impl Strategy<Value = Durability> {
    prop_oneof![
        Just(Durability::Sync),
        Just(Durability::Buffered),
        Just(Durability::None)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (key(), value(), durability()).prop_map(|(key, value, durability)| Op::Put { key, value, durability }),
        2 => key().prop_map(|key| Op::Delete { key }),
        2 => proptest::collection::vec((key(), proptest::option::of(value())), 1..5).prop_map(|ops| Op::Batch { ops }),
        4 => key().prop_map(|key| Op::Get { key }),
        1 => (key(), key()).prop_map(|(a, b)| Op::Range { a, b }),
        1 => key().prop_map(|prefix| Op::Prefix { prefix }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Checkpoint),
        2 => Just(Op::Compact),
        1 => Just(Op::ProcessCrash),
        1 => prop_oneof![
            Just(CrashMode::DropUnsynced),
            any::<u64>().prop_map(|seed| CrashMode::Scattered { seed }),
        ].prop_map(|mode| Op::PowerLoss { mode }),
    ]
}

fn options(fs: &SimFs) -> DbOptions {
    let mut options = DbOptions::default();
    options.wal.segment_bytes = 4096;
    options.wal.prepare_next_segment = false;
    options.wal.flush_interval_ms = 60_000;
    options.wal.fs = Arc::new(fs.clone());
    // Compaction runs only when the test says so, and tombstones are dropped as soon as
    // possible, so the model exercises both keeping and dropping them.
    options.compaction.enabled = false;
    options.compaction.tombstone_horizon_lsns = 3;
    options.compaction.bytes_per_sec = 0;
    options
}

fn check_all(db: &Db, model: &BTreeMap<Vec<u8>, Vec<u8>>) -> Result<(), TestCaseError> {
    prop_assert_eq!(db.len(), model.len());
    let all: Vec<(Vec<u8>, Vec<u8>)> = db
        .range::<&[u8], _>(..)
        .map(|r| {
            let (k, v) = r.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect();
    let want: Vec<(Vec<u8>, Vec<u8>)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    prop_assert_eq!(all, want);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    #[test]
    fn the_store_behaves_like_a_btreemap(ops in proptest::collection::vec(op(), 1..120)) {
        let dir = Path::new("/db");
        let mut fs = SimFs::new();
        let mut db = Db::open(dir, options(&fs)).unwrap();
        // `model` is what readers must see; `durable` is what must survive a power loss.
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut history: Vec<(u64, State)> = vec![(0, BTreeMap::new())];
        for op in ops {
            match op {
                Op::Put { key, value, durability } => {
                    let lsn = db.put_with(&key, &value, durability).unwrap();
                    model.insert(key, value);
                    history.push((lsn, model.clone()));
                }
                Op::Delete { key } => {
                    let lsn = db.delete(&key).unwrap();
                    model.remove(&key);
                    history.push((lsn, model.clone()));
                }
                Op::Batch { ops } => {
                    let mut batch = WriteBatch::new();
                    for (key, value) in &ops {
                        match value {
                            Some(value) => { batch.put(key, value); model.insert(key.clone(), value.clone()); }
                            None => { batch.delete(key); model.remove(key); }
                        }
                    }
                    let lsn = db.write_batch_with(&batch, Durability::Buffered).unwrap().unwrap();
                    history.push((lsn, model.clone()));
                }
                Op::Get { key } => {
                    let got = db.get(&key).unwrap().map(|v| v.to_vec());
                    prop_assert_eq!(got.as_ref(), model.get(&key));
                    prop_assert_eq!(db.contains(&key), model.contains_key(&key));
                }
                Op::Range { a, b } => {
                    let got: Vec<Vec<u8>> = db.range(a.clone()..b.clone()).map(|r| r.unwrap().0.to_vec()).collect();
                    let want: Vec<Vec<u8>> = if a < b { model.range(a..b).map(|(k, _)| k.clone()).collect() } else { Vec::new() };
                    prop_assert_eq!(got, want);
                }
                Op::Prefix { prefix } => {
                    let got: Vec<Vec<u8>> = db.scan_prefix(&prefix).map(|r| r.unwrap().0.to_vec()).collect();
                    let want: Vec<Vec<u8>> = model.keys().filter(|k| k.starts_with(&prefix)).cloned().collect();
                    prop_assert_eq!(got, want);
                }
                Op::Reopen => {
                    db.close().unwrap();
                    db = Db::open(dir, options(&fs)).unwrap();
                    check_all(&db, &model)?;
                }
                Op::Compact => {
                    db.compact().unwrap();
                    check_all(&db, &model)?;
                }
                Op::Checkpoint => {
                    let lsn = db.checkpoint().unwrap();
                    prop_assert_eq!(lsn, history.last().unwrap().0);
                }
                Op::ProcessCrash => {
                    // kill -9: the page cache survives, so every returned write is still there,
                    // but nothing more became durable.
                    let image = fs.process_crash();
                    drop(db);
                    fs = image;
                    db = Db::open(dir, options(&fs)).unwrap();
                    prop_assert_eq!(db.stats().last_lsn, history.last().unwrap().0);
                    check_all(&db, &model)?;
                }
                Op::PowerLoss { mode } => {
                    let durable = db.stats().durable_lsn;
                    let image = fs.crash(mode);
                    drop(db);
                    fs = image;
                    db = Db::open(dir, options(&fs)).unwrap();
                    // The store holds exactly the state after some batch at or after the durable
                    // LSN: never less than what was synced, never half a batch.
                    let recovered = db.stats().last_lsn;
                    prop_assert!(recovered >= durable, "lost synced writes: durable {} recovered {}", durable, recovered);
                    let state = history.iter().rev().find(|(lsn, _)| *lsn <= recovered).unwrap();
                    prop_assert_eq!(state.0, recovered, "recovered inside a batch");
                    model = state.1.clone();
                    history.retain(|(lsn, _)| *lsn <= recovered);
                    check_all(&db, &model)?;
                }
            }
        }
        check_all(&db, &model)?;
    }
}
