//! Reassembles shipped segment bytes into whole batches for [`Wal::receive_records`]: a
//! record (or an atomic batch) may span several frames, and only whole batches are queued, so
//! a replica never makes half a batch visible or durable.

use crate::format::{Lsn, RecordKind, SEGMENT_HEADER_BYTES, SegmentHeader};
use crate::wal::{Wal, WalError};

/// A check of one record's payload by the layer above the log.
pub type RecordCheck = fn(RecordKind, &[u8]) -> Result<(), String>;

/// The replica's view of the segment being received and the bytes not yet queued.
#[derive(Debug, Default)]
pub struct Receiver {
    /// The segment being received (0: none announced yet in this session).
    segment: Lsn,
    /// Offset in the segment of `carry[0]`.
    carry_offset: u64,
    /// Received bytes that do not yet end a batch.
    carry: Vec<u8>,
    /// Most bytes `carry` may hold: the largest batch a log accepts, plus a frame.
    carry_max: usize,
    /// A compacted segment being received (its header and file size): it is held whole in
    /// `carry` and installed when the next segment's header proves it complete.
    compacted: Option<([u8; SEGMENT_HEADER_BYTES], u64)>,
    /// The layer above's check of each record's payload.
    check: Option<RecordCheck>,
}

impl Receiver {
    /// A receiver that holds at most `carry_max` bytes of an incomplete batch.
    #[must_use]
    pub fn new(carry_max: usize) -> Self {
        Self {
            carry_max,
            ..Self::default()
        }
    }

    /// A receiver that also refuses records whose payload fails `check` (a replica's engine
    /// checks that each is an operation it can apply).
    #[must_use]
    pub fn with_payload_check(carry_max: usize, check: RecordCheck) -> Self {
        Self {
            carry_max,
            check: Some(check),
            ..Self::default()
        }
    }

    fn check(&self) -> impl Fn(RecordKind, &[u8]) -> Result<(), String> + '_ {
        move |kind, payload| self.check.map_or(Ok(()), |check| check(kind, payload))
    }

    /// A segment starts or resumes: its header and file size as on the primary.
    ///
    /// # Errors
    /// A header that does not continue the log, bytes of an unfinished batch left over from the
    /// previous segment, or I/O errors.
    pub fn segment_header(
        &mut self,
        wal: &Wal,
        header: &[u8; SEGMENT_HEADER_BYTES],
        capacity: u64,
    ) -> Result<(), WalError> {
        if let Some((held, held_capacity)) = self.compacted.take() {
            wal.receive_compacted(&held, held_capacity, &self.carry, &self.check())?;
            self.carry.clear();
        } else if !self.carry.is_empty() {
            return Err(self.refuse("a new segment starts inside an unfinished batch"));
        }
        let decoded = SegmentHeader::decode(header).map_err(|source| WalError::BadHeader {
            file: "<shipped header>".into(),
            source,
        })?;
        if decoded.compacted_through.is_some() {
            self.compacted = Some((*header, capacity));
            self.segment = decoded.first_lsn;
            self.carry_offset = SEGMENT_HEADER_BYTES as u64;
            return Ok(());
        }
        wal.receive_segment(header, capacity)?;
        let (segment, offset) = wal.receive_position();
        self.segment = segment;
        self.carry_offset = offset;
        Ok(())
    }

    /// Bytes of the current segment at `offset`. Queues every batch they complete and returns
    /// the last LSN queued (0 when none): the caller then waits for it to be written.
    ///
    /// # Errors
    /// Bytes that are not the next ones of the segment, records that fail their checks, or an
    /// unfinished batch beyond the carry limit. Nothing of the failing bytes is queued.
    pub fn segment_bytes(
        &mut self,
        wal: &Wal,
        segment: Lsn,
        offset: u64,
        bytes: &[u8],
        last_lsn: Lsn,
    ) -> Result<Lsn, WalError> {
        if segment != self.segment || offset != self.carry_offset + self.carry.len() as u64 {
            return Err(WalError::Shipment {
                segment,
                offset,
                reason: format!(
                    "bytes out of order: segment {} continues at offset {}",
                    self.segment,
                    self.carry_offset + self.carry.len() as u64
                ),
            });
        }
        if self.carry.len() + bytes.len() > self.carry_max {
            return Err(self.refuse("an unfinished batch grew past the largest batch allowed"));
        }
        self.carry.extend_from_slice(bytes);
        if last_lsn == 0 || self.compacted.is_some() {
            // The middle of a record, or of a compacted segment held whole: nothing to queue.
            return Ok(0);
        }
        let (taken, last) =
            wal.receive_records(self.segment, self.carry_offset, &self.carry, &self.check())?;
        self.carry.drain(..taken);
        self.carry_offset += taken as u64;
        Ok(last)
    }

    /// Forgets the unfinished batch (the connection ended: the next session resends it).
    pub fn reset(&mut self) {
        self.segment = 0;
        self.carry.clear();
        self.compacted = None;
    }

    fn refuse(&self, reason: &str) -> WalError {
        WalError::Shipment {
            segment: self.segment,
            offset: self.carry_offset,
            reason: reason.to_owned(),
        }
    }
}
