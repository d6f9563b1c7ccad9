//! A frozen view of the log up to one LSN, for building a snapshot while writers go on: the
//! active segment is sealed at that LSN and the list of segment files holding it is pinned
//! (reference-counted mappings), so neither new appends nor compaction, which may replace and
//! delete those files meanwhile, change what the view reads.

use std::sync::Arc;

use crate::format::{Epoch, Lsn, SEGMENT_HEADER_BYTES};
use crate::io::Mapping;

use super::error::{Result, WalError};
use super::reader::{Record, WalIter};
use super::segment::Segment;
use super::{Durability, Wal, append};

/// The log's records up to [`PinnedLog::last_lsn`], exactly as they were when it was pinned.
#[derive(Debug)]
pub struct PinnedLog {
    segments: Vec<Arc<Segment>>,
    last_lsn: Lsn,
    epoch: Epoch,
    cluster_id: u128,
}

pub(super) fn seal_and_pin(wal: &Wal) -> Result<PinnedLog> {
    let (pinned, cuts) = {
        let mut state = wal.shared.commit.lock();
        state.check_open()?;
        let last_lsn = state.next_lsn - 1;
        // Read under the same lock: a rewind or reset after it fails the wait below
        // instead of waiting for records that are no longer those pinned.
        let cuts = wal.shared.commit.cuts();
        // IMPORTANT: the list is taken under the lock that orders appends, in one step with
        // `last_lsn`. A compaction installed before this point dropped only records
        // superseded by records up to `last_lsn`; one installed later replaces files that
        // this list still holds open, so it cannot change what the view reads.
        let segments: Vec<Arc<Segment>> = wal
            .shared
            .segments()
            .iter()
            .filter(|s| s.first_lsn() <= last_lsn)
            .cloned()
            .collect();
        if state.active_end > SEGMENT_HEADER_BYTES as u64 && !state.active.is_compacted() {
            append::rotate(wal, &mut state, 0)?;
        }
        let pinned = PinnedLog {
            segments,
            last_lsn,
            epoch: state.epoch,
            cluster_id: wal.shared.cluster_id(),
        };
        (pinned, cuts)
    };
    if pinned.last_lsn > 0 {
        wal.wait_for_uncut(pinned.last_lsn, Durability::Sync, cuts)?;
    }
    Ok(pinned)
}

impl PinnedLog {
    /// The last LSN in the view.
    #[must_use]
    pub fn last_lsn(&self) -> Lsn {
        self.last_lsn
    }

    /// The epoch in force at [`PinnedLog::last_lsn`].
    #[must_use]
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The cluster the log belongs to.
    #[must_use]
    pub fn cluster_id(&self) -> u128 {
        self.cluster_id
    }

    /// Every record in the view, in LSN order (a compacted range has gaps).
    #[must_use]
    pub fn records(&self) -> PinnedRecords<'_> {
        PinnedRecords {
            log: self,
            segment: 0,
            position: None,
        }
    }

    /// Reads record `lsn` at `offset` of the segment that holds it in this view.
    ///
    /// # Errors
    /// `NotRetained` when the view does not hold `lsn`; `Corrupt` when the bytes there are not
    /// record `lsn`.
    pub fn read_at(&self, lsn: Lsn, offset: u64) -> Result<Record> {
        let at = self.segments.partition_point(|s| s.first_lsn() <= lsn);
        let Some(segment) = at.checked_sub(1).map(|i| &self.segments[i]) else {
            return Err(WalError::NotRetained {
                lsn,
                first: self.segments.first().map_or(1, |s| s.first_lsn()),
            });
        };
        let mut mapping = segment.view_covering(offset)?;
        WalIter::decode(segment, &mut mapping, offset, lsn, false).map(|(record, _)| record)
    }
}

/// Iterator over a [`PinnedLog`]'s records.
pub struct PinnedRecords<'a> {
    log: &'a PinnedLog,
    segment: usize,
    /// Mapping, offset and expected LSN of the next record in `segment`.
    position: Option<(Arc<dyn Mapping>, u64, Lsn)>,
}

impl std::fmt::Debug for PinnedRecords<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedRecords")
            .field("segment", &self.segment)
            .finish_non_exhaustive()
    }
}

impl Iterator for PinnedRecords<'_> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let segment = self.log.segments.get(self.segment)?;
            let (mapping, offset, lsn) = match self.position.take() {
                Some(position) => position,
                None => match segment.view_covering(segment.records_end()) {
                    Ok(mapping) => (mapping, SEGMENT_HEADER_BYTES as u64, segment.first_lsn()),
                    Err(e) => {
                        self.segment = usize::MAX;
                        return Some(Err(e));
                    }
                },
            };
            // A sealed segment ends at its records; the last one may hold records past the
            // view (appended since), which are not part of it.
            let end_of_segment = offset >= segment.records_end()
                || lsn > self.log.last_lsn
                || segment.is_compacted() && lsn > segment.last_lsn();
            if end_of_segment {
                self.segment += 1;
                continue;
            }
            let mut mapping = mapping;
            let compacted = segment.is_compacted();
            return match WalIter::decode(segment, &mut mapping, offset, lsn, compacted) {
                Ok((record, _)) if record.lsn > self.log.last_lsn => {
                    self.segment += 1;
                    continue;
                }
                Ok((record, len)) => {
                    self.position = Some((mapping, offset + len, record.lsn + 1));
                    Some(Ok(record))
                }
                Err(e) => {
                    self.segment = usize::MAX;
                    Some(Err(e))
                }
            };
        }
    }
}
