//! Validating scan of a whole segment image, and classification of what follows its last valid
//! record. Pure functions over bytes: recovery, `shiplog verify` and the fuzzers share them.

use byteorder::{ByteOrder, LittleEndian as LE};

use super::record::decode_record;
use super::{Epoch, FormatError, Lsn, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, SegmentHeader};

/// Why a scan stopped before the end of the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanStop {
    /// The bytes at the stop offset are not a valid record.
    Record(FormatError),
    /// A valid record carries an LSN other than the next one.
    LsnOutOfSequence { expected: Lsn, found: Lsn },
    /// A valid record carries an epoch lower than the record before it.
    EpochRegressed { previous: Epoch, found: Epoch },
}

impl std::fmt::Display for ScanStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Record(e) => write!(f, "{e}"),
            Self::LsnOutOfSequence { expected, found } => {
                write!(f, "LSN gap: expected LSN {expected}, found {found}")
            }
            Self::EpochRegressed { previous, found } => {
                write!(f, "epoch went backwards from {previous} to {found}")
            }
        }
    }
}

/// How the run of valid records ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    /// The bytes ended exactly after a valid record (or right after the header).
    EndOfBytes,
    /// Bytes at `offset` are not the next valid record; `expected_lsn` is the LSN that was due.
    Stopped {
        offset: u64,
        expected_lsn: Lsn,
        reason: ScanStop,
    },
}

/// What a scan of one segment image found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    /// The segment's header.
    pub header: SegmentHeader,
    /// Offset just past the last valid record.
    pub valid_end: u64,
    /// Offset just past the last complete batch: where a recovered log resumes writing.
    pub batch_end: u64,
    /// LSN of the last record of the last complete batch, if any.
    pub last_lsn: Option<Lsn>,
    /// Epoch of that record.
    pub last_epoch: Option<Epoch>,
    /// Records in complete batches.
    pub record_count: u64,
    /// Bytes of records in complete batches (headers included).
    pub record_bytes: u64,
    /// `(lsn, offset)` of every `stride`-th record of complete batches, for seeking.
    pub sparse_index: Vec<(Lsn, u64)>,
    /// How the valid run ended.
    pub end: ScanEnd,
}

impl SegmentScan {
    /// Whether records of an unfinished batch sit between `batch_end` and `valid_end`.
    #[must_use]
    pub fn has_incomplete_batch(&self) -> bool {
        self.batch_end != self.valid_end
    }
}

/// Scans a whole segment image: header, then records in LSN order from the header's first LSN.
///
/// `sparse_stride` sets how often a record's offset is kept for seeking (at least 1).
///
/// # Errors
/// Only when the header itself is invalid; record problems end the scan and are described in
/// [`SegmentScan::end`].
pub fn scan_records(bytes: &[u8], sparse_stride: u64) -> Result<SegmentScan, FormatError> {
    let header = SegmentHeader::decode(bytes)?;
    let stride = sparse_stride.max(1);
    let mut scan = SegmentScan {
        header,
        valid_end: SEGMENT_HEADER_BYTES as u64,
        batch_end: SEGMENT_HEADER_BYTES as u64,
        last_lsn: None,
        last_epoch: None,
        record_count: 0,
        record_bytes: 0,
        sparse_index: Vec::new(),
        end: ScanEnd::EndOfBytes,
    };
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut expected_lsn = header.first_lsn;
    let mut previous_epoch = header.epoch;
    let mut batch_records = 0u64;
    let mut batch_sparse: Vec<(Lsn, u64)> = Vec::new();
    while let Some(rest) = bytes.get(offset..).filter(|rest| !rest.is_empty()) {
        let stop = |reason| ScanEnd::Stopped {
            offset: offset as u64,
            expected_lsn,
            reason,
        };
        let record = match decode_record(rest, header.salt) {
            Ok(record) => record,
            Err(e) => {
                scan.end = stop(ScanStop::Record(e));
                break;
            }
        };
        // A compacted segment holds a subset of its range, in order, without batches.
        let in_sequence = match header.compacted_through {
            None => record.lsn == expected_lsn,
            Some(through) => {
                (expected_lsn..=through).contains(&record.lsn) && !record.batch_continues
            }
        };
        if !in_sequence {
            scan.end = stop(ScanStop::LsnOutOfSequence {
                expected: expected_lsn,
                found: record.lsn,
            });
            break;
        }
        if record.epoch < previous_epoch {
            scan.end = stop(ScanStop::EpochRegressed {
                previous: previous_epoch,
                found: record.epoch,
            });
            break;
        }
        // Every `stride`-th record by count (equal to every `stride`-th LSN unless compacted).
        if (scan.record_count + batch_records).is_multiple_of(stride) {
            batch_sparse.push((record.lsn, offset as u64));
        }
        offset += record.encoded_bytes();
        batch_records += 1;
        scan.valid_end = offset as u64;
        previous_epoch = record.epoch;
        expected_lsn = record.lsn.saturating_add(1);
        if !record.batch_continues {
            scan.record_bytes += scan.valid_end - scan.batch_end;
            scan.batch_end = scan.valid_end;
            scan.last_lsn = Some(record.lsn);
            scan.last_epoch = Some(record.epoch);
            scan.record_count += batch_records;
            scan.sparse_index.append(&mut batch_sparse);
            batch_records = 0;
        }
    }
    Ok(scan)
}

/// What lies after the last valid record of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailState {
    /// Only zero bytes: the log simply ends there.
    Zeros,
    /// Non-zero bytes holding no record written after the bad bytes were known durable: a
    /// torn, never-synced tail, safe to cut. `dirty_end` is the offset just past the last
    /// non-zero byte; `unsynced_records` counts valid records found in the torn bytes (writes
    /// that reached the disk out of order).
    Torn {
        dirty_end: u64,
        unsynced_records: u64,
    },
    /// A valid record written when the log already held the damaged LSN as durable: the damage
    /// hit synced data. This is corruption, not a tear.
    ValidRecordFollows { offset: u64, lsn: Lsn },
}

/// Classifies `bytes[from..]`, the bytes after the last valid record whose LSN was `last_lsn`.
///
/// A later valid record (decoding with `salt` at any offset at or after `from`, with an LSN
/// above `last_lsn`) proves corruption only if its writer already knew LSN `last_lsn + 1` as
/// durable; otherwise it is an unsynced write that reached the disk before an earlier one.
#[must_use]
pub fn classify_tail(bytes: &[u8], from: u64, salt: u32, last_lsn: Lsn) -> TailState {
    let Ok(from) = usize::try_from(from) else {
        return TailState::Zeros;
    };
    let Some(rest) = bytes.get(from..) else {
        return TailState::Zeros;
    };
    let Some(last_nonzero) = rest.iter().rposition(|&b| b != 0) else {
        return TailState::Zeros;
    };
    let dirty_end = from + last_nonzero + 1;
    // A record needs at least a header, so no valid record can hold more than this many LSNs.
    let lsn_window = (bytes.len() / RECORD_HEADER_BYTES) as u64 + 1;
    let mut unsynced_records = 0;
    for offset in from..dirty_end {
        let Some(rest) = bytes.get(offset..) else {
            break;
        };
        let Some(header) = rest.first_chunk::<RECORD_HEADER_BYTES>() else {
            break;
        };
        let lsn = LE::read_u64(&header[8..16]);
        if lsn <= last_lsn || lsn - last_lsn > lsn_window {
            continue;
        }
        if let Ok(record) = decode_record(rest, salt) {
            if record.durable_lsn > last_lsn {
                return TailState::ValidRecordFollows {
                    offset: offset as u64,
                    lsn,
                };
            }
            unsynced_records += 1;
        }
    }
    TailState::Torn {
        dirty_end: dirty_end as u64,
        unsynced_records,
    }
}
