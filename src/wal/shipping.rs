//! Reading the log for shipping: byte ranges of segment files, exactly as on disk, of records
//! that are durable here. A replica that writes them at the same offsets of a segment with the
//! same header holds a byte-identical copy (`docs/format.md`, "Wire: log shipping frames").

use std::sync::Arc;

use crate::format::{Lsn, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};

use super::error::{Result, WalError};
use super::reader::Payload;
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
}

/// One range of a segment to ship.
#[derive(Debug, Clone)]
pub struct ShipChunk {
    /// The segment's header, when this chunk is the first of a segment in this shipping
    /// session (send it before the bytes; the receiver creates or checks its segment with it).
    pub header: Option<[u8; SEGMENT_HEADER_BYTES]>,
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

impl Wal {
    /// The shipping position just after record `after` (0: from the start of the log).
    ///
    /// # Errors
    /// `NotRetained` when record `after` (or, for 0, the log's start) is no longer here:
    /// the receiver needs a snapshot. Read errors.
    pub fn ship_position_after(&self, after: Lsn) -> Result<ShipPosition> {
        let first = self.first_lsn();
        if after == 0 || after < first {
            if after + 1 < first {
                return Err(WalError::NotRetained {
                    lsn: after + 1,
                    first,
                });
            }
            let segment = self
                .shared
                .segments()
                .first()
                .map_or(first, |s| s.first_lsn());
            return Ok(ShipPosition {
                segment,
                offset: SEGMENT_HEADER_BYTES as u64,
                next_lsn: after + 1,
                header_sent: false,
            });
        }
        let record = self
            .read(after)?
            .ok_or(WalError::NotRetained { lsn: after, first })?;
        Ok(ShipPosition {
            segment: record.location.segment,
            offset: record.location.offset + encoded_len(&record),
            next_lsn: after + 1,
            header_sent: false,
        })
    }

    /// The next range to ship from `position`, at most `max_bytes` long and within one
    /// segment, of records durable here; `None` when everything durable has been shipped.
    /// A record longer than `max_bytes` comes in several chunks.
    ///
    /// # Errors
    /// `NotRetained` when the position's records are gone (retention or compaction since):
    /// the receiver needs a snapshot. Read errors (every record is checked before it ships).
    ///
    /// # Panics
    /// If `max_bytes` is 0.
    pub fn ship_chunk(
        &self,
        position: &ShipPosition,
        max_bytes: usize,
    ) -> Result<Option<ShipChunk>> {
        assert!(max_bytes > 0, "a chunk holds at least one byte");
        let durable = self.durable_lsn();
        if position.next_lsn > durable {
            return Ok(None);
        }
        let mut records = self.read_range(position.next_lsn, durable)?;
        let Some(first) = records.next().transpose()? else {
            return Ok(None);
        };
        let new_segment = first.location.segment != position.segment;
        let start = if new_segment {
            first.location.offset
        } else {
            position.offset
        };
        let header = if new_segment || !position.header_sent {
            let segments = self.shared.segments();
            let segment = segments
                .iter()
                .find(|s| s.first_lsn() == first.location.segment)
                .ok_or(WalError::NotRetained {
                    lsn: first.lsn,
                    first: self.first_lsn(),
                })?;
            Some(segment.header.encode())
        } else {
            None
        };
        let limit = start + max_bytes as u64;
        let first_end = first.location.offset + encoded_len(&first);
        debug_assert!(
            start < first_end,
            "the position is inside or before its record"
        );
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
        // The chunk is a view of the mapping the first record's payload came from, whose
        // index is the segment file offset.
        let record_index = first.payload.start - RECORD_HEADER_BYTES;
        let bytes = Payload {
            mapping: Arc::clone(&first.payload.mapping),
            start: record_index + to_index(start - first.location.offset),
            len: to_index(end - start),
        };
        debug_assert_eq!(to_index(first.location.offset), record_index);
        Ok(Some(ShipChunk {
            header,
            segment: first.location.segment,
            offset: start,
            bytes,
            last_lsn,
            next: ShipPosition {
                segment: first.location.segment,
                offset: end,
                next_lsn,
                header_sent: true,
            },
        }))
    }
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "offsets within a segment are below its mapping's length, itself a usize"
)]
fn to_index(offset: u64) -> usize {
    offset as usize
}
