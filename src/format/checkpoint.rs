//! Index checkpoints: the engine's whole index at one LSN, so a restart replays only the log
//! after it.
//!
//! ```text
//! header (64 bytes):
//! [magic: 8 "SHPLGIDX"][version: 2][flags: 2][reserved: 4][cluster_id: 16][applied_lsn: 8]
//! [entry_count: 8][reserved: 12][header_crc: 4]
//! entry_count entries, in strictly increasing key order:
//! [key_len: 4][key: key_len][lsn: 8][segment: 8][offset: 4][value_bytes: 4]
//! trailer:
//! [crc32 of every byte before it: 4]
//! ```

use byteorder::{ByteOrder, LittleEndian as LE};

use super::{FormatError, LSN_MAX, Lsn};

/// Bytes at the start of a checkpoint file.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"SHPLGIDX";
/// The checkpoint format version.
pub const CHECKPOINT_VERSION: u16 = 1;
/// Size of the checkpoint header.
pub const CHECKPOINT_HEADER_BYTES: usize = 64;
/// Bytes of an entry besides its key.
pub const CHECKPOINT_ENTRY_FIXED_BYTES: usize = 4 + 8 + 8 + 4 + 4;
/// Bytes of an entry after its key: `[lsn: 8][segment: 8][offset: 4][value_bytes: 4]`.
const ENTRY_TAIL_BYTES: usize = CHECKPOINT_ENTRY_FIXED_BYTES - 4;

/// The checkpoint header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointHeader {
    /// Cluster of the log the checkpoint indexes.
    pub cluster_id: u128,
    /// The index reflects every record up to this LSN.
    pub applied_lsn: Lsn,
    /// Number of entries.
    pub entry_count: u64,
}

/// One indexed key: where its newest value lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointEntry<'a> {
    /// The key.
    pub key: &'a [u8],
    /// LSN of the put record.
    pub lsn: Lsn,
    /// First LSN of the segment holding the record.
    pub segment: Lsn,
    /// Offset of the record in the segment.
    pub offset: u32,
    /// Length of the value.
    pub value_bytes: u32,
}

impl CheckpointHeader {
    /// Encodes the header.
    #[must_use]
    pub fn encode(&self) -> [u8; CHECKPOINT_HEADER_BYTES] {
        let mut out = [0u8; CHECKPOINT_HEADER_BYTES];
        out[0..8].copy_from_slice(&CHECKPOINT_MAGIC);
        LE::write_u16(&mut out[8..10], CHECKPOINT_VERSION);
        LE::write_u128(&mut out[16..32], self.cluster_id);
        LE::write_u64(&mut out[32..40], self.applied_lsn);
        LE::write_u64(&mut out[40..48], self.entry_count);
        let crc = crc32fast::hash(&out[..60]);
        LE::write_u32(&mut out[60..64], crc);
        out
    }

    /// Decodes and checks a header.
    ///
    /// # Errors
    /// Short input, wrong magic, version, reserved bytes, LSN range or checksum.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let bytes: &[u8; CHECKPOINT_HEADER_BYTES] =
            bytes.first_chunk().ok_or(FormatError::Truncated {
                needed: CHECKPOINT_HEADER_BYTES as u64,
                available: bytes.len() as u64,
            })?;
        if bytes[0..8] != CHECKPOINT_MAGIC {
            return Err(FormatError::BadMagic);
        }
        let stored = LE::read_u32(&bytes[60..64]);
        let computed = crc32fast::hash(&bytes[..60]);
        if stored != computed {
            return Err(FormatError::ChecksumMismatch { stored, computed });
        }
        let version = LE::read_u16(&bytes[8..10]);
        if version != CHECKPOINT_VERSION {
            return Err(FormatError::UnsupportedVersion {
                found: version,
                supported: CHECKPOINT_VERSION,
            });
        }
        if bytes[10..16].iter().any(|&b| b != 0) || bytes[48..60].iter().any(|&b| b != 0) {
            return Err(FormatError::ReservedNotZero);
        }
        let applied_lsn = LE::read_u64(&bytes[32..40]);
        if applied_lsn > LSN_MAX {
            return Err(FormatError::LsnOutOfRange(applied_lsn));
        }
        Ok(Self {
            cluster_id: LE::read_u128(&bytes[16..32]),
            applied_lsn,
            entry_count: LE::read_u64(&bytes[40..48]),
        })
    }
}

/// Appends one encoded entry to `out`.
///
/// # Panics
/// When the key is longer than `u32::MAX` bytes (the engine's limits are far smaller).
pub fn encode_checkpoint_entry(out: &mut Vec<u8>, entry: &CheckpointEntry<'_>) {
    let key_len = u32::try_from(entry.key.len()).expect("key length within the engine's limit");
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(entry.key);
    out.extend_from_slice(&entry.lsn.to_le_bytes());
    out.extend_from_slice(&entry.segment.to_le_bytes());
    out.extend_from_slice(&entry.offset.to_le_bytes());
    out.extend_from_slice(&entry.value_bytes.to_le_bytes());
}

/// A whole checkpoint image, validated: header, trailer checksum, entry structure, key order.
#[derive(Debug)]
pub struct CheckpointImage<'a> {
    /// The header.
    pub header: CheckpointHeader,
    entries: &'a [u8],
    key_max_bytes: u32,
}

impl<'a> CheckpointImage<'a> {
    /// Checks the whole image. Entry bounds are checked again while iterating, so iteration
    /// never panics, but after a successful parse it also never fails.
    ///
    /// # Errors
    /// Any structural problem: bad header, trailer checksum, truncated or oversized entries, a
    /// count that does not match, keys out of order, LSNs out of range.
    pub fn parse(bytes: &'a [u8], key_max_bytes: u32) -> Result<Self, FormatError> {
        let header = CheckpointHeader::decode(bytes)?;
        let truncated = || FormatError::Truncated {
            needed: CHECKPOINT_HEADER_BYTES as u64 + 4,
            available: bytes.len() as u64,
        };
        let (covered, trailer) = bytes.split_last_chunk::<4>().ok_or_else(truncated)?;
        let body = covered
            .get(CHECKPOINT_HEADER_BYTES..)
            .ok_or_else(truncated)?;
        let stored = LE::read_u32(trailer);
        let computed = crc32fast::hash(covered);
        if stored != computed {
            return Err(FormatError::ChecksumMismatch { stored, computed });
        }
        // Each entry takes at least its fixed bytes: a count beyond that is a lie, caught
        // before anything is sized by it.
        if header.entry_count > (body.len() / CHECKPOINT_ENTRY_FIXED_BYTES) as u64 {
            return Err(FormatError::LengthTooLarge {
                len: header.entry_count,
                max: (body.len() / CHECKPOINT_ENTRY_FIXED_BYTES) as u64,
            });
        }
        let image = Self {
            header,
            entries: body,
            key_max_bytes,
        };
        let mut count = 0u64;
        let mut previous: Option<&[u8]> = None;
        let mut rest = body;
        while !rest.is_empty() {
            let (entry, after) = decode_entry(rest, key_max_bytes)?;
            if previous.is_some_and(|p| p >= entry.key) {
                return Err(FormatError::OutOfOrder);
            }
            if entry.lsn == 0
                || entry.lsn > header.applied_lsn
                || entry.segment == 0
                || entry.segment > entry.lsn
            {
                return Err(FormatError::LsnOutOfRange(entry.lsn));
            }
            previous = Some(entry.key);
            rest = after;
            count += 1;
        }
        if count != header.entry_count {
            return Err(FormatError::CountMismatch {
                declared: header.entry_count,
                found: count,
            });
        }
        Ok(image)
    }

    /// The entries, in key order.
    pub fn entries(&self) -> impl Iterator<Item = CheckpointEntry<'a>> + 'a {
        let mut rest = self.entries;
        let key_max = self.key_max_bytes;
        std::iter::from_fn(move || {
            let (entry, after) = decode_entry(rest, key_max).ok()?;
            rest = after;
            Some(entry)
        })
    }
}

/// Decodes the entry at the start of `bytes`; returns it and the bytes after it.
fn decode_entry(
    bytes: &[u8],
    key_max_bytes: u32,
) -> Result<(CheckpointEntry<'_>, &[u8]), FormatError> {
    let truncated = |needed: usize| FormatError::Truncated {
        needed: needed as u64,
        available: bytes.len() as u64,
    };
    let (key_len, after_len) = bytes.split_first_chunk::<4>().ok_or(truncated(4))?;
    let key_len = LE::read_u32(key_len);
    if key_len > key_max_bytes {
        return Err(FormatError::LengthTooLarge {
            len: u64::from(key_len),
            max: u64::from(key_max_bytes),
        });
    }
    let total = 4 + key_len as usize + ENTRY_TAIL_BYTES;
    let (key, after_key) = after_len
        .split_at_checked(key_len as usize)
        .ok_or(truncated(total))?;
    let (fixed, rest) = after_key
        .split_first_chunk::<ENTRY_TAIL_BYTES>()
        .ok_or(truncated(total))?;
    Ok((
        CheckpointEntry {
            key,
            lsn: LE::read_u64(&fixed[0..8]),
            segment: LE::read_u64(&fixed[8..16]),
            offset: LE::read_u32(&fixed[16..20]),
            value_bytes: LE::read_u32(&fixed[20..24]),
        },
        rest,
    ))
}

#[cfg(test)]
#[expect(clippy::indexing_slicing, reason = "a panic in a test is a failure")]
mod tests {
    use super::*;

    fn image(keys: &[&[u8]]) -> Vec<u8> {
        let header = CheckpointHeader {
            cluster_id: 7,
            applied_lsn: 100,
            entry_count: keys.len() as u64,
        };
        let mut out = header.encode().to_vec();
        for (i, key) in keys.iter().enumerate() {
            let lsn = 10 + i as u64;
            encode_checkpoint_entry(
                &mut out,
                &CheckpointEntry {
                    key,
                    lsn,
                    segment: 1,
                    offset: 64,
                    value_bytes: 3,
                },
            );
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    #[test]
    fn a_checkpoint_round_trips() {
        let bytes = image(&[b"a", b"b", b"zz"]);
        let parsed = CheckpointImage::parse(&bytes, 64).unwrap();
        assert_eq!(parsed.header.applied_lsn, 100);
        let keys: Vec<&[u8]> = parsed.entries().map(|e| e.key).collect();
        assert_eq!(keys, [&b"a"[..], b"b", b"zz"]);
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let bytes = image(&[b"a", b"bb"]);
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(CheckpointImage::parse(&flipped, 64).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn unordered_keys_are_rejected() {
        assert_eq!(
            CheckpointImage::parse(&image(&[b"b", b"a"]), 64).unwrap_err(),
            FormatError::OutOfOrder
        );
        assert_eq!(
            CheckpointImage::parse(&image(&[b"a", b"a"]), 64).unwrap_err(),
            FormatError::OutOfOrder
        );
    }
}
