//! Reading the log for shipping: byte ranges of segment files, exactly as on disk, of records
//! that are durable here. A replica that writes them at the same offsets of a segment with the
//! same header holds a byte-identical copy (`docs/format.md`, "Wire: log shipping frames").

use std::sync::Arc;

use crate::format::{Lsn, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};

use super::error::{Result, WalError};
use super::reader::Payload;
use super::segment::Segment;
use super::{Record, Wal};

/// Where shipping stands: the next byte of the log to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShipPosition {
    /// The segment being shipped (its first LSN).
    pub segment: Lsn,
    /// The next byte of it to send (may fall inside a record larger than a chunk).
    pub offset: u64,
    /// The LSN of the next record that has not been sent whole.
    pub next_lsn: Lsn,
    /// Whether the receiver has this segment's header from this shipping session.
    pub header_sent: bool,
    /// The salt of the segment's header: compaction rewrites a segment under the same name
    /// with a new salt and other offsets, and a position into the old file is then void.
    pub salt: u32,
}

/// One range of a segment to ship.
#[derive(Debug, Clone)]
pub struct ShipChunk {
    /// The segment's header, when this chunk is the first of a segment in this shipping
    /// session (send it before the bytes; the receiver creates or checks its segment with it).
    pub header: Option<[u8; SEGMENT_HEADER_BYTES]>,
    /// The segment file's size here (sent with the header: the receiver's copy gets the same).
    pub capacity: u64,
    /// The segment (its first LSN).
    pub segment: Lsn,
    /// Offset of `bytes` in the segment file.
    pub offset: u64,
    /// The bytes, a view into the mapped segment.
    pub bytes: Payload,
    /// The last record that ends within `bytes` (0 when `bytes` is the middle of one record).
    pub last_lsn: Lsn,
    /// Where the next chunk starts.
    pub next: ShipPosition,
}

fn encoded_len(record: &Record) -> u64 {
    (RECORD_HEADER_BYTES + record.payload.len()) as u64
}

pub(super) fn ship_position_after(wal: &Wal, after: Lsn) -> Result<ShipPosition> {
    let first = wal.first_lsn();
    if after == 0 || after < first {
        if after + 1 < first {
            return Err(WalError::NotRetained {
                lsn: after + 1,
                first,
            });
        }
        let (segment, salt) = wal
            .shared
            .segments()
            .first()
            .map_or((first, 0), |s| (s.first_lsn(), s.header.salt));
        return Ok(ShipPosition {
            segment,
            offset: SEGMENT_HEADER_BYTES as u64,
            next_lsn: after + 1,
            header_sent: false,
            salt,
        });
    }
    let holder = {
        let segments = wal.shared.segments();
        let at = segments.partition_point(|s| s.first_lsn() <= after);
        at.checked_sub(1).map(|i| Arc::clone(&segments[i]))
    };
    if let Some(segment) = holder.filter(|s| s.is_compacted()) {
        // A receiver holds a compacted segment whole (it installs it only complete), so it
        // can only stand at its end; anywhere inside, it holds records this log rewrote.
        if segment.header.compacted_through != Some(after) {
            return Err(WalError::NotRetained { lsn: after, first });
        }
        return Ok(ShipPosition {
            segment: segment.first_lsn(),
            offset: segment.records_end(),
            next_lsn: after + 1,
            header_sent: true,
            salt: segment.header.salt,
        });
    }
    let record = wal
        .read(after)?
        .ok_or(WalError::NotRetained { lsn: after, first })?;
    let segment = shipped_segment(wal, record.location.segment, after)?;
    Ok(ShipPosition {
        segment: record.location.segment,
        offset: record.location.offset + encoded_len(&record),
        next_lsn: after + 1,
        header_sent: false,
        salt: segment.header.salt,
    })
}

fn shipped_segment(wal: &Wal, segment: Lsn, lsn: Lsn) -> Result<Arc<Segment>> {
    // IMPORTANT: the list's read guard is gone before `first_lsn` takes it again. Read
    // twice by one thread, it deadlocks once compaction waits to swap a segment in between
    // (std's lock lets no new reader in while a writer waits): a primary hung that way.
    let found = wal
        .shared
        .segments()
        .iter()
        .find(|s| s.first_lsn() == segment)
        .cloned();
    found.ok_or_else(|| WalError::NotRetained {
        lsn,
        first: wal.first_lsn(),
    })
}

pub(super) fn ship_chunk(
    wal: &Wal,
    position: &ShipPosition,
    max_bytes: usize,
) -> Result<Option<ShipChunk>> {
    assert!(max_bytes > 0, "a chunk holds at least one byte");
    let durable = wal.durable_lsn();
    if position.next_lsn > durable {
        return Ok(None);
    }
    let mut records = wal.read_range(position.next_lsn, durable)?;
    let Some(first) = records.next().transpose()? else {
        return Ok(None);
    };
    let gone = || WalError::NotRetained {
        lsn: position.next_lsn,
        first: wal.first_lsn(),
    };
    let segment = shipped_segment(wal, first.location.segment, position.next_lsn)?;
    let new_segment = first.location.segment != position.segment;
    let start = if new_segment {
        // The next segment must start exactly at the next LSN, or right after the range a
        // compacted segment covers. Anything else means compaction removed records the
        // receiver never got (perhaps deletes of keys it holds): it needs a snapshot.
        let continues_compacted = shipped_segment(wal, position.segment, position.next_lsn)
            .is_ok_and(|s| {
                s.header.salt == position.salt
                    && s.header
                        .compacted_through
                        .is_some_and(|through| through + 1 == segment.first_lsn())
            });
        if segment.first_lsn() != position.next_lsn && !continues_compacted {
            return Err(gone());
        }
        first.location.offset
    } else {
        position.offset
    };
    let first_end = first.location.offset + encoded_len(&first);
    if !new_segment
        && (segment.header.salt != position.salt
            || start < first.location.offset
            || start >= first_end)
    {
        // The segment was rewritten (compaction) since the position was taken.
        return Err(gone());
    }
    let header = (new_segment || !position.header_sent).then(|| segment.header.encode());
    let limit = start + max_bytes as u64;
    let (mut end, mut last_lsn, mut next_lsn) = if first_end <= limit {
        (first_end, first.lsn, first.lsn + 1)
    } else {
        (limit, 0, first.lsn)
    };
    if last_lsn != 0 {
        for record in records {
            let record = record?;
            let record_end = record.location.offset + encoded_len(&record);
            if record.location.segment != first.location.segment || record_end > limit {
                break;
            }
            end = record_end;
            last_lsn = record.lsn;
            next_lsn = record.lsn + 1;
        }
    }
    // A mapping that covers the whole chunk (a snapshot view may predate later records).
    let bytes = Payload {
        mapping: segment.view_covering(end)?,
        start: to_index(start),
        len: to_index(end - start),
    };
    Ok(Some(ShipChunk {
        header,
        capacity: segment.capacity_bytes,
        segment: first.location.segment,
        offset: start,
        bytes,
        last_lsn,
        next: ShipPosition {
            segment: first.location.segment,
            offset: end,
            next_lsn,
            header_sent: true,
            salt: segment.header.salt,
        },
    }))
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "offsets within a segment are below its mapping's length, itself a usize"
)]
fn to_index(offset: u64) -> usize {
    offset as usize
}
