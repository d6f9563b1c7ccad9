//! The fixed 64-byte header at the start of every segment file.

use byteorder::{ByteOrder, LittleEndian as LE};

use super::{Epoch, FormatError, LSN_MAX, Lsn};

/// Bytes at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SHPLGSEG";
/// The segment format version this build writes and reads.
pub const SEGMENT_FORMAT_VERSION: u16 = 1;
/// Size of the segment header; the first record starts at this offset.
pub const SEGMENT_HEADER_BYTES: usize = 64;

const CRC_OFFSET: usize = 60;
/// Header flag: the segment was rewritten by compaction; its records have LSN gaps and it
/// covers the range `first_lsn..=compacted_through`.
pub const FLAG_COMPACTED: u16 = 1;
const _: () = assert!(CRC_OFFSET + 4 == SEGMENT_HEADER_BYTES);

/// The decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Identity of the cluster whose history this log belongs to.
    pub cluster_id: u128,
    /// LSN of the first record stored in the segment.
    pub first_lsn: Lsn,
    /// Epoch in force when the segment was created.
    pub epoch: Epoch,
    /// Random per-segment seed of every record CRC, so stale bytes never pass as records.
    pub salt: u32,
    /// For a segment written by compaction, the last LSN of the range it covers (records in
    /// the range that are not in it were superseded); `None` for a segment written by appends.
    pub compacted_through: Option<Lsn>,
}

impl SegmentHeader {
    /// Encodes the header with its checksum.
    // [magic: 8][version: 2][flags: 2][salt: 4][cluster_id: 16][first_lsn: 8][epoch: 4]
    // [compacted_through: 8][reserved: 8][crc32: 4]
    #[must_use]
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut out = [0u8; SEGMENT_HEADER_BYTES];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        LE::write_u16(&mut out[8..10], SEGMENT_FORMAT_VERSION);
        let flags = if self.compacted_through.is_some() {
            FLAG_COMPACTED
        } else {
            0
        };
        LE::write_u16(&mut out[10..12], flags);
        LE::write_u32(&mut out[12..16], self.salt);
        LE::write_u128(&mut out[16..32], self.cluster_id);
        LE::write_u64(&mut out[32..40], self.first_lsn);
        LE::write_u32(&mut out[40..44], self.epoch);
        LE::write_u64(&mut out[44..52], self.compacted_through.unwrap_or(0));
        let crc = crc32fast::hash(&out[..CRC_OFFSET]);
        LE::write_u32(&mut out[CRC_OFFSET..], crc);
        out
    }

    /// Decodes and validates a header from the first bytes of a segment file.
    ///
    /// # Errors
    /// Any deviation from the format: short input, wrong magic or version, non-zero reserved
    /// bytes, or a checksum mismatch.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let Some(bytes) = bytes.first_chunk::<SEGMENT_HEADER_BYTES>() else {
            return Err(FormatError::Truncated {
                needed: SEGMENT_HEADER_BYTES as u64,
                available: bytes.len() as u64,
            });
        };
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err(FormatError::BadMagic);
        }
        let stored = LE::read_u32(&bytes[CRC_OFFSET..]);
        let computed = crc32fast::hash(&bytes[..CRC_OFFSET]);
        if stored != computed {
            return Err(FormatError::ChecksumMismatch { stored, computed });
        }
        let version = LE::read_u16(&bytes[8..10]);
        if version != SEGMENT_FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion {
                found: version,
                supported: SEGMENT_FORMAT_VERSION,
            });
        }
        let flags = LE::read_u16(&bytes[10..12]);
        if flags & !FLAG_COMPACTED != 0 || bytes[52..CRC_OFFSET].iter().any(|&b| b != 0) {
            return Err(FormatError::ReservedNotZero);
        }
        let first_lsn = LE::read_u64(&bytes[32..40]);
        if !(1..=LSN_MAX).contains(&first_lsn) {
            return Err(FormatError::LsnOutOfRange(first_lsn));
        }
        let through = LE::read_u64(&bytes[44..52]);
        let compacted_through = if flags & FLAG_COMPACTED == 0 {
            if through != 0 {
                return Err(FormatError::ReservedNotZero);
            }
            None
        } else if (first_lsn..=LSN_MAX).contains(&through) {
            Some(through)
        } else {
            return Err(FormatError::LsnOutOfRange(through));
        };
        Ok(Self {
            salt: LE::read_u32(&bytes[12..16]),
            cluster_id: LE::read_u128(&bytes[16..32]),
            first_lsn,
            epoch: LE::read_u32(&bytes[40..44]),
            compacted_through,
        })
    }
}

#[cfg(test)]
#[expect(clippy::indexing_slicing, reason = "a panic in a test is a failure")]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_detects_every_flipped_bit() {
        let header = SegmentHeader {
            cluster_id: 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
            first_lsn: 42,
            epoch: 7,
            salt: 0xdead_beef,
            compacted_through: None,
        };
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        for bit in 0..SEGMENT_HEADER_BYTES * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                SegmentHeader::decode(&flipped).is_err(),
                "bit {bit} flip not detected"
            );
        }
    }
}
