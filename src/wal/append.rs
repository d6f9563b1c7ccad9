//! Appending: a batch's LSNs are assigned and its records encoded into the pending queue under
//! the group commit's lock (`writer.rs` then writes and syncs the queue), and the active segment
//! rotates when a batch does not fit.

use std::sync::{Arc, MutexGuard};

use crate::format::{
    RecordMeta, SEGMENT_HEADER_BYTES, SegmentHeader, encode_record, encoded_record_bytes,
};

use super::error::{Result, WalError};
use super::segment::Segment;
use super::writer::{PendingWrite, WriterState};
use super::{Entry, LsnRange, Wal, random_u32};

pub(super) fn enqueue<'w>(
    wal: &'w Wal,
    entries: &[Entry<'_>],
) -> Result<(MutexGuard<'w, WriterState>, LsnRange)> {
    let batch_bytes = check_batch(wal, entries)?;
    let commit = &wal.shared.commit;
    let mut state = commit.lock();
    state.check_open()?;
    if state.active_end + batch_bytes > state.active.capacity_bytes {
        rotate(wal, &mut state, batch_bytes)?;
    }
    let first = state.next_lsn;
    let epoch = state.epoch;
    // Read under the lock that orders LSNs, so it is always below every LSN assigned now.
    let durable_lsn = commit.durable();
    let segment = Arc::clone(&state.active);
    let offset = state.active_end;
    let extends_last = state.pending.last().is_some_and(|w| {
        Arc::ptr_eq(&w.segment, &segment) && w.offset + w.bytes.len() as u64 == offset
    });
    if !extends_last {
        state.pending.push(PendingWrite {
            segment: Arc::clone(&segment),
            offset,
            bytes: Vec::with_capacity(usize::try_from(batch_bytes).unwrap_or(0)),
            last_lsn: 0,
        });
    }
    let last_index = state.pending.len() - 1;
    let buffer = &mut state.pending[last_index];
    let mut lsn = first;
    let mut at = offset;
    for (index, entry) in entries.iter().enumerate() {
        let continues = index + 1 < entries.len();
        segment.note_offset(lsn, at);
        let meta = RecordMeta {
            lsn,
            epoch,
            kind: entry.kind,
            batch_continues: continues,
            durable_lsn,
        };
        encode_record(&mut buffer.bytes, segment.header.salt, &meta, entry.payload);
        at += encoded_record_bytes(entry.payload.len()) as u64;
        lsn += 1;
    }
    let last = lsn - 1;
    buffer.last_lsn = last;
    debug_assert_eq!(at - offset, batch_bytes);
    segment.set_last_lsn(last);
    state.active_end = at;
    state.next_lsn = lsn;
    Ok((state, LsnRange { first, last }))
}

fn check_batch(wal: &Wal, entries: &[Entry<'_>]) -> Result<u64> {
    if entries.is_empty() {
        return Err(WalError::EmptyBatch);
    }
    let max = wal.shared.options.record_payload_max_bytes;
    let mut bytes = 0u64;
    for entry in entries {
        let len = entry.payload.len() as u64;
        if len > u64::from(max) {
            return Err(WalError::RecordTooLarge {
                bytes: len,
                max: u64::from(max),
            });
        }
        bytes += encoded_record_bytes(entry.payload.len()) as u64;
    }
    if bytes > wal.shared.options.batch_bytes_max {
        return Err(WalError::BatchTooLarge {
            records: entries.len(),
            bytes,
            max: wal.shared.options.batch_bytes_max,
        });
    }
    Ok(bytes)
}

/// Starts a new segment at the next LSN, big enough for `batch_bytes`.
pub(super) fn rotate(wal: &Wal, state: &mut WriterState, batch_bytes: u64) -> Result<()> {
    let options = &wal.shared.options;
    let capacity = options
        .segment_bytes
        .max(SEGMENT_HEADER_BYTES as u64 + batch_bytes);
    let header = SegmentHeader {
        cluster_id: wal.shared.cluster_id(),
        first_lsn: state.next_lsn,
        epoch: state.epoch,
        salt: random_u32(),
        compacted_through: None,
    };
    let fs = options.fs.as_ref();
    let dir = &wal.shared.dir;
    // A failure here leaves nothing assigned: the caller gets the error, the log goes on.
    let segment = match wal.preparer.as_ref().and_then(|p| p.take(capacity)) {
        Some(blank) => Segment::install(fs, dir, blank, header)?,
        None => Segment::create(fs, dir, header, capacity, options.zero_fill_segments)?,
    };
    let segment = Arc::new(segment);
    wal.shared.segments_mut().push(Arc::clone(&segment));
    state.active = segment;
    state.active_end = SEGMENT_HEADER_BYTES as u64;
    Ok(())
}
