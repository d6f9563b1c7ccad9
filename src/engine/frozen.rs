//! The store's state frozen at one LSN, for snapshots. It is rebuilt from a pinned view of the
//! log rather than copied from the live index: copying the index would make writers wait for
//! the copy, while replaying the pinned segments costs only the snapshot's own thread. Memory
//! is one index (keys and 16-byte locations); values are read from the mapped segments as the
//! snapshot streams them.

use crate::format::kv::{KvOp, decode_kv};
use crate::format::{Epoch, Lsn, RECORD_PAYLOAD_MAX_BYTES};
use crate::wal::{Payload, PinnedLog};

use super::error::{DbError, Result};
use super::index::Index;
use super::{Store, apply};

/// Every live key and its value as of one LSN, in key order.
#[derive(Debug)]
pub struct FrozenState {
    log: PinnedLog,
    index: Index,
}

pub(super) fn freeze(store: &Store) -> Result<FrozenState> {
    let log = store.wal.seal_and_pin()?;
    let mut index = Index::default();
    let mut last_continues = false;
    for record in log.records() {
        let record = record?;
        apply(&mut index, &record)?;
        last_continues = record.batch_continues;
    }
    debug_assert!(!last_continues, "a frozen state ends inside a batch");
    Ok(FrozenState { log, index })
}

impl FrozenState {
    /// The LSN whose state this is.
    #[must_use]
    pub fn lsn(&self) -> Lsn {
        self.log.last_lsn()
    }

    /// The epoch in force at that LSN.
    #[must_use]
    pub fn epoch(&self) -> Epoch {
        self.log.epoch()
    }

    /// The cluster whose state this is.
    #[must_use]
    pub fn cluster_id(&self) -> u128 {
        self.log.cluster_id()
    }

    /// Live keys.
    #[must_use]
    pub fn key_count(&self) -> u64 {
        self.index.len() as u64
    }

    /// Bytes of the live keys and values.
    #[must_use]
    pub fn live_bytes(&self) -> u64 {
        self.index.live_bytes()
    }

    /// Every key and its value, in key order; values are views of the mapped segments.
    pub fn entries(&self) -> impl Iterator<Item = Result<(&[u8], Payload)>> + '_ {
        self.index.iter().map(|(key, location)| {
            let bad = |reason: String| DbError::BadRecord {
                lsn: location.lsn,
                reason,
            };
            let record = self.log.read_at(location.lsn, u64::from(location.offset))?;
            match decode_kv(record.kind, &record.payload, RECORD_PAYLOAD_MAX_BYTES) {
                Ok(KvOp::Put {
                    key: stored,
                    value_offset,
                    ..
                }) if stored == key => {
                    let end = record.payload.len();
                    Ok((key, record.payload.slice(value_offset..end)))
                }
                Ok(_) => Err(bad("the frozen index points at another record".to_owned())),
                Err(e) => Err(bad(e.to_string())),
            }
        })
    }
}
