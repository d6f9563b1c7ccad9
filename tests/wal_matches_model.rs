//! Random appends, batches, reads, reopens and retention against an in-memory model of the log.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test; casts are on small test values"
)]

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use shiplog::io::SimFs;
use shiplog::wal::Options;
use shiplog::{Durability, Entry, RecordKind, Wal, WalError};

#[derive(Debug, Clone)]
enum Op {
    Append { kind: u8, len: usize },
    Batch { count: usize, len: usize },
    Read { pick: usize },
    IterFrom { pick: usize },
    Reopen,
    RemoveBefore { pick: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..=127, 0usize..900).prop_map(|(kind, len)| Op::Append { kind, len }),
        3 => (1usize..6, 0usize..400).prop_map(|(count, len)| Op::Batch { count, len }),
        3 => any::<usize>().prop_map(|pick| Op::Read { pick }),
        1 => any::<usize>().prop_map(|pick| Op::IterFrom { pick }),
        1 => Just(Op::Reopen),
        1 => any::<usize>().prop_map(|pick| Op::RemoveBefore { pick }),
    ]
}

fn payload(lsn: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (lsn as usize ^ i) as u8).collect()
}

struct Model {
    /// (lsn, kind, payload, batch_continues); `first` is the first retained LSN.
    records: Vec<(u64, u8, Vec<u8>, bool)>,
    first: u64,
}

impl Model {
    fn last(&self) -> u64 {
        self.records.last().map_or(self.first - 1, |r| r.0)
    }
    fn get(&self, lsn: u64) -> Option<&(u64, u8, Vec<u8>, bool)> {
        self.records.iter().find(|r| r.0 == lsn)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 120, ..ProptestConfig::default() })]

    #[test]
    fn the_log_behaves_like_its_model(ops in proptest::collection::vec(op(), 1..80)) {
        let fs = SimFs::new();
        let dir = Path::new("/model");
        let options = Options { segment_bytes: 4096, fs: Arc::new(fs), ..Options::default() };
        let mut wal = Wal::open(dir, options.clone()).unwrap();
        let mut model = Model { records: Vec::new(), first: 1 };
        for op in ops {
            match op {
                Op::Append { kind, len } => {
                    let lsn = model.last() + 1;
                    let bytes = payload(lsn, len);
                    prop_assert_eq!(wal.append(RecordKind::new(kind).unwrap(), &bytes, Durability::None).unwrap(), lsn);
                    model.records.push((lsn, kind, bytes, false));
                }
                Op::Batch { count, len } => {
                    let first = model.last() + 1;
                    let payloads: Vec<_> = (0..count as u64).map(|i| payload(first + i, len)).collect();
                    let kind = RecordKind::new(9).unwrap();
                    let entries: Vec<_> = payloads.iter().map(|p| Entry { kind, payload: p }).collect();
                    let range = wal.append_batch(&entries, Durability::Sync).unwrap();
                    prop_assert_eq!((range.first, range.last), (first, first + count as u64 - 1));
                    for (i, p) in payloads.into_iter().enumerate() {
                        model.records.push((first + i as u64, 9, p, i + 1 < count));
                    }
                }
                Op::Read { pick } => {
                    let span = model.last() + 2;
                    let lsn = pick as u64 % span;
                    match (wal.read(lsn), model.get(lsn)) {
                        (Ok(Some(record)), Some(want)) => {
                            prop_assert_eq!((record.lsn, record.kind.get(), &*record.payload, record.batch_continues), (want.0, want.1, want.2.as_slice(), want.3));
                        }
                        (Ok(None), None) if lsn > model.last() => {}
                        (Err(WalError::NotRetained { .. }), None) if lsn < model.first => {}
                        (got, want) => prop_assert!(false, "LSN {}: got {:?}, model {:?}", lsn, got.map(|r| r.map(|r| r.lsn)), want.map(|w| w.0)),
                    }
                }
                Op::IterFrom { pick } => {
                    let retained = model.last() + 1 - model.first;
                    let from = model.first + pick as u64 % (retained + 1);
                    let got: Vec<u64> = wal.iter_from(from).unwrap().map(|r| r.unwrap().lsn).collect();
                    let want: Vec<u64> = model.records.iter().map(|r| r.0).filter(|&l| l >= from).collect();
                    prop_assert_eq!(got, want);
                }
                Op::Reopen => {
                    wal.close().unwrap();
                    wal = Wal::open(dir, options.clone()).unwrap();
                    prop_assert_eq!(wal.durable_lsn(), model.last());
                }
                Op::RemoveBefore { pick } => {
                    let lsn = model.first + pick as u64 % (model.last() + 2 - model.first);
                    wal.remove_before(lsn).unwrap();
                    let first = wal.first_lsn();
                    prop_assert!(first <= lsn.max(model.first), "removed LSNs at or above {}", lsn);
                    prop_assert!(first >= model.first);
                    model.records.retain(|r| r.0 >= first);
                    model.first = first;
                }
            }
        }
    }
}
