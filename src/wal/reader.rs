//! Reading the log by LSN. Payloads are slices of the segment mappings, kept alive by
//! reference counting, so a reader never copies and retention never pulls bytes from under it.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use crate::format::{Epoch, Lsn, RecordKind, decode_record};
use crate::io::Mapping;

use super::Shared;
use super::error::{Result, WalError};
use super::segment::Segment;
use crate::sync::RwLockExt;

/// A record payload: a zero-copy view into a mapped segment.
#[derive(Clone)]
pub struct Payload {
    pub(super) mapping: Arc<dyn Mapping>,
    /// Index in the mapping, which is the offset in the segment file.
    pub(super) start: usize,
    pub(super) len: usize,
}

impl Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.mapping.bytes()[self.start..self.start + self.len]
    }
}

impl Payload {
    /// A view of `range` within this payload, sharing the same mapping.
    ///
    /// # Panics
    /// When `range` is not within the payload.
    #[must_use]
    pub fn slice(&self, range: std::ops::Range<usize>) -> Self {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "slice within the payload"
        );
        Self {
            mapping: Arc::clone(&self.mapping),
            start: self.start + range.start,
            len: range.len(),
        }
    }
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payload")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// One record read from the log.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its LSN.
    pub lsn: Lsn,
    /// The epoch it was written in.
    pub epoch: Epoch,
    /// Its kind.
    pub kind: RecordKind,
    /// Whether more records of its atomic batch follow.
    pub batch_continues: bool,
    /// Its payload.
    pub payload: Payload,
    /// Where it is stored.
    pub location: RecordLocation,
}

/// Where a record is stored: the segment (named by its first LSN) and the byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordLocation {
    /// First LSN of the segment holding the record.
    pub segment: Lsn,
    /// Offset of the record's header in that segment.
    pub offset: u64,
}

/// Iterator over records `from..=to`.
pub struct WalIter {
    shared: Arc<Shared>,
    next_lsn: Lsn,
    to: Lsn,
    position: Option<(Arc<Segment>, Arc<dyn Mapping>, u64)>,
}

impl fmt::Debug for WalIter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalIter")
            .field("next_lsn", &self.next_lsn)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

impl WalIter {
    pub(crate) fn new(shared: Arc<Shared>, from: Lsn, to: Lsn) -> Self {
        Self {
            shared,
            next_lsn: from,
            to,
            position: None,
        }
    }

    /// Extends the iteration to `to` (capped at the written LSN), keeping the read position:
    /// a follower of the log calls this instead of seeking again.
    pub fn extend_to(&mut self, to: Lsn) {
        self.to = self.to.max(to.min(self.shared.commit.written()));
    }

    /// The LSN the next call to `next` would return.
    #[must_use]
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// Reads the record at a known location (as handed out in [`Record::location`]).
    pub(crate) fn read_at(shared: &Shared, lsn: Lsn, offset: u64) -> Result<Record> {
        let segment = {
            let segments = shared.segments();
            let at = segments.partition_point(|s| s.first_lsn() <= lsn);
            let Some(index) = at.checked_sub(1) else {
                let first = segments.first().map_or(1, |s| s.first_lsn());
                return Err(WalError::NotRetained { lsn, first });
            };
            Arc::clone(&segments[index])
        };
        let mut mapping = segment.view_covering(offset)?;
        match Self::decode(&segment, &mut mapping, offset, lsn, false) {
            Ok((record, _)) => Ok(record),
            // The offset may predate a compaction whose caller has not moved it yet: the
            // replaced segment still holds the record there.
            Err(e) => Self::read_retired(shared, lsn, offset).unwrap_or(Err(e)),
        }
    }

    fn read_retired(shared: &Shared, lsn: Lsn, offset: u64) -> Option<Result<Record>> {
        let retired = shared.retired.read_locked();
        let segment = retired
            .iter()
            .find(|s| s.first_lsn() <= lsn && lsn <= s.last_lsn())?;
        let mut mapping = match segment.view_covering(offset) {
            Ok(mapping) => mapping,
            Err(e) => return Some(Err(e)),
        };
        Some(Self::decode(segment, &mut mapping, offset, lsn, false).map(|(record, _)| record))
    }

    /// Finds the segment holding `lsn` and the offset of that record in it.
    fn seek(&self, lsn: Lsn) -> Result<(Arc<Segment>, Arc<dyn Mapping>, u64)> {
        let segment = {
            let segments = self.shared.segments();
            let at = segments.partition_point(|s| s.first_lsn() <= lsn);
            let first = segments.first().map_or(1, |s| s.first_lsn());
            let Some(index) = at.checked_sub(1) else {
                return Err(WalError::NotRetained { lsn, first });
            };
            Arc::clone(&segments[index])
        };
        let (mut at_lsn, mut offset) = segment.seek_hint(lsn);
        let mut mapping = segment.view_covering(0)?;
        if segment.is_compacted() {
            // Records have gaps: hop until the first record at or after `lsn`, or the end.
            while offset < segment.records_end() {
                let (record, len) = Self::decode(&segment, &mut mapping, offset, at_lsn, true)?;
                if record.lsn >= lsn {
                    break;
                }
                offset += len;
                at_lsn = record.lsn + 1;
            }
            return Ok((segment, mapping, offset));
        }
        while at_lsn < lsn {
            let record = Self::decode(&segment, &mut mapping, offset, at_lsn, false)?;
            offset += record.1;
            at_lsn += 1;
        }
        Ok((segment, mapping, offset))
    }

    /// Decodes the record expected at `offset` — LSN `lsn`, or with `at_least` (compacted
    /// segments) the first LSN not below it — remapping if the view predates it.
    pub(super) fn decode(
        segment: &Segment,
        mapping: &mut Arc<dyn Mapping>,
        offset: u64,
        lsn: Lsn,
        at_least: bool,
    ) -> Result<(Record, u64)> {
        let corrupt = |reason: String| WalError::Corrupt {
            file: segment.path.clone(),
            offset,
            lsn,
            reason,
        };
        let start = usize::try_from(offset).map_err(|_| corrupt("offset beyond memory".into()))?;
        let mut attempt = 0;
        loop {
            let bytes = mapping.bytes().get(start..).unwrap_or(&[]);
            match decode_record(bytes, segment.header.salt) {
                Ok(rec) if rec.lsn == lsn || (at_least && rec.lsn > lsn) => {
                    let len = rec.encoded_bytes() as u64;
                    let payload_start = start + (rec.encoded_bytes() - rec.payload.len());
                    let record = Record {
                        lsn: rec.lsn,
                        epoch: rec.epoch,
                        kind: rec.kind,
                        batch_continues: rec.batch_continues,
                        payload: Payload {
                            mapping: Arc::clone(mapping),
                            start: payload_start,
                            len: rec.payload.len(),
                        },
                        location: RecordLocation {
                            segment: segment.first_lsn(),
                            offset,
                        },
                    };
                    return Ok((record, len));
                }
                // A snapshot view (simulated files) may predate the write: refresh once.
                _ if attempt == 0 => {
                    *mapping = segment.view_covering(u64::MAX)?;
                    attempt += 1;
                }
                Ok(rec) => {
                    return Err(corrupt(format!(
                        "found LSN {} where LSN {lsn} belongs",
                        rec.lsn
                    )));
                }
                Err(e) => return Err(corrupt(e.to_string())),
            }
        }
    }
}

impl Iterator for WalIter {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.next_lsn > self.to {
                return None;
            }
            let lsn = self.next_lsn;
            let position = match self.position.take() {
                Some(p) if p.0.last_lsn() >= lsn => p,
                _ => match self.seek(lsn) {
                    Ok(p) => p,
                    Err(e) => return Some(Err(self.stop(e))),
                },
            };
            let (segment, mut mapping, offset) = position;
            let compacted = segment.is_compacted();
            if compacted && offset >= segment.records_end() {
                // The rest of this compacted range was superseded: continue after it.
                self.next_lsn = segment.last_lsn() + 1;
                continue;
            }
            return match Self::decode(&segment, &mut mapping, offset, lsn, compacted) {
                Ok((record, _)) if record.lsn > self.to => {
                    self.next_lsn = self.to.saturating_add(1);
                    None
                }
                Ok((record, len)) => {
                    self.next_lsn = record.lsn + 1;
                    self.position = Some((segment, mapping, offset + len));
                    Some(Ok(record))
                }
                Err(e) => Some(Err(self.stop(e))),
            };
        }
    }
}

impl WalIter {
    /// Ends the iteration after an error.
    fn stop(&mut self, error: WalError) -> WalError {
        self.next_lsn = self.to.saturating_add(1);
        error
    }
}
