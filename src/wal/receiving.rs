//! The replica's side of log shipping: segments created with the primary's header and size,
//! and records written verbatim at the primary's offsets, so the copy is byte-identical
//! (`docs/format.md`, "Wire: log shipping frames"). Every record is checked (its CRC under the
//! segment's salt, LSN order, epochs never decreasing) before anything is queued, and only
//! whole batches are queued, so written and durable LSNs stay on batch boundaries here too.

use std::sync::Arc;

use crate::format::{Lsn, RecordKind, SEGMENT_HEADER_BYTES, SegmentHeader, decode_record};
use crate::io::FileSystem;

use super::Wal;
use super::error::{Result, WalError};
use super::segment::Segment;
use super::writer::{PendingWrite, WriterState};
use crate::sync::MutexExt;

pub(super) fn receive_segment(
    wal: &Wal,
    header: &[u8; SEGMENT_HEADER_BYTES],
    capacity: u64,
) -> Result<()> {
    let decoded = decode_shipped_header(wal, header)?;
    let commit = &wal.shared.commit;
    let mut state = commit.lock();
    if state.active.header == decoded {
        // A resumed shipping session starts by repeating the active segment's header.
        return Ok(());
    }
    let placement = check_next_segment(wal, &state, &decoded)?;
    if decoded.compacted_through.is_some() {
        return Err(refusal(
            &decoded,
            "a compacted segment must arrive whole (`Wal::receive_compacted`)".to_owned(),
        ));
    }
    if capacity < SEGMENT_HEADER_BYTES as u64 {
        return Err(refusal(
            &decoded,
            format!("segment file of {capacity} bytes"),
        ));
    }
    let fs: &dyn FileSystem = wal.shared.options.fs.as_ref();
    let dir = &wal.shared.dir;
    // The prepared blank has this log's rotation size; a copy must have the primary's.
    let blank = (capacity == wal.shared.options.segment_bytes)
        .then(|| wal.preparer.as_ref().and_then(|p| p.take(capacity)))
        .flatten();
    // IMPORTANT: the shipped segment is durable under its final name before anything is
    // written into it (`Segment::install`); a replaced empty segment of the same name is
    // replaced by the rename, atomically.
    let segment = match blank {
        Some(blank) => Segment::install(fs, dir, blank, decoded)?,
        None => Segment::create(
            fs,
            dir,
            decoded,
            capacity,
            wal.shared.options.zero_fill_segments,
        )?,
    };
    place(
        wal,
        &mut state,
        Arc::new(segment),
        placement,
        SEGMENT_HEADER_BYTES as u64,
    );
    Ok(())
}

pub(super) fn receive_compacted(
    wal: &Wal,
    header: &[u8; SEGMENT_HEADER_BYTES],
    capacity: u64,
    records: &[u8],
    check: PayloadCheck<'_>,
) -> Result<()> {
    let decoded = decode_shipped_header(wal, header)?;
    let Some(through) = decoded.compacted_through else {
        return Err(refusal(&decoded, "not a compacted segment".to_owned()));
    };
    // IMPORTANT: everything before the compacted segment is durable before it is: the
    // durable LSN jumps over its whole range once it is installed.
    let before = wal.shared.commit.lock().next_lsn - 1;
    if before > 0 {
        wal.wait_for(before, super::Durability::Sync)?;
    }
    let commit = &wal.shared.commit;
    let mut state = commit.lock();
    let placement = check_next_segment(wal, &state, &decoded)?;
    let mut epoch = state.epoch.max(decoded.epoch);
    let mut next = decoded.first_lsn;
    let mut at = 0;
    let mut sparse = Vec::new();
    let mut count = 0u64;
    while at < records.len() {
        let offset = SEGMENT_HEADER_BYTES as u64 + at as u64;
        let bad = |reason: String| WalError::Shipment {
            segment: decoded.first_lsn,
            offset,
            reason,
        };
        let record = decode_record(&records[at..], decoded.salt).map_err(|e| bad(e.to_string()))?;
        if record.lsn < next || record.lsn > through {
            return Err(bad(format!(
                "record LSN {} outside {next}..={through}",
                record.lsn
            )));
        }
        if record.epoch < epoch {
            return Err(bad(format!(
                "record of epoch {} after epoch {epoch}",
                record.epoch
            )));
        }
        check(record.kind, record.payload)
            .map_err(|reason| bad(format!("record LSN {}: {reason}", record.lsn)))?;
        if count.is_multiple_of(super::SPARSE_INDEX_STRIDE) {
            sparse.push((record.lsn, offset));
        }
        count += 1;
        epoch = record.epoch;
        next = record.lsn + 1;
        at += record.encoded_bytes();
    }
    let end = SEGMENT_HEADER_BYTES as u64 + records.len() as u64;
    let capacity = capacity.max(end);
    let fs: &dyn FileSystem = wal.shared.options.fs.as_ref();
    let dir = &wal.shared.dir;
    let path = dir.join(super::segment_file_name(decoded.first_lsn));
    let temp = dir.join(format!("{:020}.recv.seg.tmp", decoded.first_lsn));
    let temp_ref = &temp;
    let io = |op| move |e| WalError::io(op, temp_ref, e);
    let blank = super::segment::BlankSegment::prepare(fs, temp.clone(), capacity, false)?;
    blank
        .file
        .write_all_at(records, SEGMENT_HEADER_BYTES as u64)
        .map_err(io("write"))?;
    blank
        .file
        .write_all_at(header, 0)
        .map_err(io("write header of"))?;
    // IMPORTANT: all of it durable before it gets its name, and the name before it counts.
    blank.file.sync_data().map_err(io("fdatasync"))?;
    fs.rename(&temp, &path).map_err(io("rename"))?;
    fs.sync_dir(dir)
        .map_err(|e| WalError::io("fsync directory", dir, e))?;
    let segment = Segment::from_parts(fs, path, decoded, blank.file, capacity, end, sparse)?;
    segment.set_last_lsn(through);
    place(wal, &mut state, Arc::new(segment), placement, end);
    state.next_lsn = through + 1;
    state.epoch = epoch;
    commit
        .written_lsn
        .fetch_max(through, std::sync::atomic::Ordering::AcqRel);
    commit
        .durable_lsn
        .fetch_max(through, std::sync::atomic::Ordering::AcqRel);
    commit.notify(&mut state);
    Ok(())
}

fn decode_shipped_header(wal: &Wal, header: &[u8; SEGMENT_HEADER_BYTES]) -> Result<SegmentHeader> {
    SegmentHeader::decode(header).map_err(|source| WalError::BadHeader {
        file: wal.shared.dir.join("<shipped header>"),
        source,
    })
}

/// Whether a shipped segment may come next, and how it joins the segment list.
fn check_next_segment(
    wal: &Wal,
    state: &WriterState,
    decoded: &SegmentHeader,
) -> Result<Placement> {
    state.check_open()?;
    let empty_log = state.next_lsn == 1 && wal.shared.segments().len() == 1;
    if !empty_log && decoded.cluster_id != wal.shared.cluster_id() {
        return Err(refusal(
            decoded,
            format!(
                "the primary's log is cluster {:032x}, this one is {:032x}",
                decoded.cluster_id,
                wal.shared.cluster_id()
            ),
        ));
    }
    if decoded.epoch < state.epoch {
        return Err(refusal(
            decoded,
            format!(
                "segment of epoch {} after records of epoch {}",
                decoded.epoch, state.epoch
            ),
        ));
    }
    let expected = state
        .active
        .header
        .compacted_through
        .map_or(state.next_lsn, |through| through + 1)
        .max(state.next_lsn);
    if decoded.first_lsn != expected {
        return Err(refusal(
            decoded,
            format!(
                "segment starting at LSN {} where LSN {expected} comes next",
                decoded.first_lsn
            ),
        ));
    }
    let active_empty = state.active.records_end() == SEGMENT_HEADER_BYTES as u64
        && state.active_end == SEGMENT_HEADER_BYTES as u64
        && !state.active.is_compacted();
    Ok(if empty_log {
        Placement::AdoptCluster
    } else if active_empty && state.active.first_lsn() == decoded.first_lsn {
        Placement::ReplaceActive
    } else {
        Placement::Append
    })
}

/// Makes `segment` the active one: after the others, or instead of an empty one.
fn place(
    wal: &Wal,
    state: &mut WriterState,
    segment: Arc<Segment>,
    placement: Placement,
    active_end: u64,
) {
    let decoded = segment.header;
    {
        let mut segments = wal.shared.segments_mut();
        match placement {
            Placement::AdoptCluster => {
                segments.clear();
                *wal.shared.cluster_id.locked() = decoded.cluster_id;
            }
            Placement::ReplaceActive => {
                segments.pop();
            }
            Placement::Append => {}
        }
        segments.push(Arc::clone(&segment));
    }
    state.active = segment;
    state.active_end = active_end;
    state.epoch = state.epoch.max(decoded.epoch);
    if decoded.first_lsn > state.next_lsn {
        // Past a compacted segment's gap; nothing was assigned in between.
        state.next_lsn = decoded.first_lsn;
    }
}

pub(super) fn receive_records(
    wal: &Wal,
    segment: Lsn,
    offset: u64,
    bytes: &[u8],
    check: PayloadCheck<'_>,
) -> Result<(usize, Lsn)> {
    let commit = &wal.shared.commit;
    let mut state = commit.lock();
    state.check_open()?;
    let refuse = |at: u64, reason: String| WalError::Shipment {
        segment,
        offset: at,
        reason,
    };
    if segment != state.active.first_lsn() || offset != state.active_end {
        return Err(refuse(
            offset,
            format!(
                "the log continues at segment {}, offset {}",
                state.active.first_lsn(),
                state.active_end
            ),
        ));
    }
    let (taken, last) =
        check_records(&state, offset, bytes, check).map_err(|(at, reason)| refuse(at, reason))?;
    if taken == 0 {
        return Ok((0, 0));
    }
    if offset + taken as u64 > state.active.capacity_bytes {
        return Err(refuse(
            offset,
            format!(
                "records end past the segment's {} bytes",
                state.active.capacity_bytes
            ),
        ));
    }
    queue_checked(&mut state, offset, &bytes[..taken], last);
    Ok((taken, last.lsn))
}

/// What the layer above checks in every received record before any of them is written (the
/// log itself checks framing, CRC, LSN order and epochs): a replica must not write a record it
/// could not apply, or it could not reopen.
pub type PayloadCheck<'a> = &'a dyn Fn(RecordKind, &[u8]) -> std::result::Result<(), String>;

/// How a received segment joins the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// After the others.
    Append,
    /// Instead of the log's own empty active segment of the same name.
    ReplaceActive,
    /// Instead of the only, empty segment of a log without records, taking the cluster id.
    AdoptCluster,
}

fn refusal(header: &SegmentHeader, reason: String) -> WalError {
    WalError::Shipment {
        segment: header.first_lsn,
        offset: 0,
        reason,
    }
}

/// The last record of the whole batches found.
#[derive(Debug, Clone, Copy)]
struct LastRecord {
    lsn: Lsn,
    epoch: u32,
}

/// Checks the records at the start of `bytes` against the log's state; returns the length of
/// the whole batches among them and their last record, or the offset and reason of a problem.
fn check_records(
    state: &WriterState,
    offset: u64,
    bytes: &[u8],
    check: PayloadCheck<'_>,
) -> std::result::Result<(usize, LastRecord), (u64, String)> {
    let header = &state.active.header;
    let mut next = state.next_lsn;
    let mut epoch = state.epoch;
    let mut at = 0;
    let mut batch_end = (0, LastRecord { lsn: 0, epoch });
    while at < bytes.len() {
        let record = match decode_record(&bytes[at..], header.salt) {
            Ok(record) => record,
            Err(crate::format::FormatError::Truncated { .. }) => break,
            Err(e) => return Err((offset + at as u64, e.to_string())),
        };
        let in_order = match header.compacted_through {
            // A compacted segment keeps each key's newest record: LSNs rise, with gaps.
            Some(through) => record.lsn >= next && record.lsn <= through,
            None => record.lsn == next,
        };
        if !in_order {
            return Err((
                offset + at as u64,
                format!("record LSN {} where LSN {next} comes next", record.lsn),
            ));
        }
        if record.epoch < epoch {
            return Err((
                offset + at as u64,
                format!("record of epoch {} after epoch {epoch}", record.epoch),
            ));
        }
        check(record.kind, record.payload).map_err(|reason| {
            (
                offset + at as u64,
                format!("record LSN {}: {reason}", record.lsn),
            )
        })?;
        epoch = record.epoch;
        next = record.lsn + 1;
        at += record.encoded_bytes();
        if !record.batch_continues {
            batch_end = (
                at,
                LastRecord {
                    lsn: record.lsn,
                    epoch,
                },
            );
        }
    }
    Ok(batch_end)
}

/// Queues checked records for the write role, as `enqueue` does for appended ones.
fn queue_checked(state: &mut WriterState, offset: u64, bytes: &[u8], last: LastRecord) {
    let segment = Arc::clone(&state.active);
    let mut at = 0;
    while at < bytes.len() {
        // Checked by `check_records` a moment ago, under the same lock.
        let Ok(record) = decode_record(&bytes[at..], segment.header.salt) else {
            unreachable!("records are checked before they are queued");
        };
        segment.note_offset(record.lsn, offset + at as u64);
        at += record.encoded_bytes();
    }
    let extends_last = state.pending.last().is_some_and(|w| {
        Arc::ptr_eq(&w.segment, &segment) && w.offset + w.bytes.len() as u64 == offset
    });
    if extends_last {
        let write = state
            .pending
            .last_mut()
            .unwrap_or_else(|| unreachable!("checked just above"));
        write.bytes.extend_from_slice(bytes);
        write.last_lsn = last.lsn;
    } else {
        state.pending.push(PendingWrite {
            segment: Arc::clone(&segment),
            offset,
            bytes: bytes.to_vec(),
            last_lsn: last.lsn,
        });
    }
    segment.set_last_lsn(last.lsn);
    state.active_end = offset + bytes.len() as u64;
    state.next_lsn = last.lsn + 1;
    state.epoch = last.epoch;
}
