//! Snapshot files: the whole key-value state at one LSN, for bootstrapping replicas and for
//! backups (`docs/format.md`, "Snapshot file"). Pure code: the header, the entries of the
//! (decompressed) body and the trailer; the zstd framing and all I/O live elsewhere. Nothing in
//! a snapshot names a file. Fuzzed as `snapshot`.
//!
//! ```text
//! header (64 bytes):
//! [magic "SHPLSNAP": 8][version: u16][flags: u16 = 0][epoch: u32][cluster_id: u128][lsn: u64]
//! [key_count: u64][uncompressed_bytes: u64][reserved: u32 = 0][header_crc: u32]
//! body: zstd frames whose decompressed bytes are key_count entries, keys strictly increasing:
//! [key_len: u32][value_len: u32][key][value]
//! trailer (24 bytes):
//! [magic "SHPLSEND": 8][body_bytes: u64][crc32 of header and body: u32][reserved: u32 = 0]
//! ```

use byteorder::{ByteOrder, LittleEndian as LE};

use super::{Epoch, FormatError, LSN_MAX, Lsn};

/// Bytes at the start of a snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"SHPLSNAP";
/// Bytes at the start of a snapshot's trailer.
pub const SNAPSHOT_TRAILER_MAGIC: [u8; 8] = *b"SHPLSEND";
/// The snapshot format version.
pub const SNAPSHOT_VERSION: u16 = 1;
/// Size of the header.
pub const SNAPSHOT_HEADER_BYTES: usize = 64;
/// Size of the trailer.
pub const SNAPSHOT_TRAILER_BYTES: usize = 24;
/// Bytes of an entry besides its key and value.
pub const SNAPSHOT_ENTRY_FIXED_BYTES: usize = 8;
/// Largest key an entry may hold (the engine's key limit).
pub const SNAPSHOT_KEY_MAX_BYTES: u32 = 64 << 10;
/// Largest value an entry may hold (the engine's value limit).
pub const SNAPSHOT_VALUE_MAX_BYTES: u32 = 512 << 20;
/// Largest decompressed body a header may declare: what a restore may be asked to write.
pub const SNAPSHOT_UNCOMPRESSED_MAX_BYTES: u64 = 1 << 40;

/// The snapshot header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// The cluster whose state this is.
    pub cluster_id: u128,
    /// The state is exactly that after every record up to this LSN (0: an empty store).
    pub lsn: Lsn,
    /// The epoch of that record.
    pub epoch: Epoch,
    /// Entries in the body.
    pub key_count: u64,
    /// Bytes of the decompressed body.
    pub uncompressed_bytes: u64,
}

/// One key and its value, borrowed from the decompressed body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotEntry<'a> {
    /// The key.
    pub key: &'a [u8],
    /// The value.
    pub value: &'a [u8],
}

/// The snapshot trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotTrailer {
    /// Bytes of the (compressed) body between the header and the trailer.
    pub body_bytes: u64,
    /// CRC32 of the header and the body.
    pub crc: u32,
}

impl SnapshotHeader {
    /// Encodes the header with its checksum.
    #[must_use]
    pub fn encode(&self) -> [u8; SNAPSHOT_HEADER_BYTES] {
        let mut out = [0u8; SNAPSHOT_HEADER_BYTES];
        out[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
        LE::write_u16(&mut out[8..10], SNAPSHOT_VERSION);
        LE::write_u32(&mut out[12..16], self.epoch);
        LE::write_u128(&mut out[16..32], self.cluster_id);
        LE::write_u64(&mut out[32..40], self.lsn);
        LE::write_u64(&mut out[40..48], self.key_count);
        LE::write_u64(&mut out[48..56], self.uncompressed_bytes);
        let crc = crc32fast::hash(&out[..60]);
        LE::write_u32(&mut out[60..64], crc);
        out
    }

    /// Decodes and checks a header, including that its declared sizes are possible and
    /// within [`SNAPSHOT_UNCOMPRESSED_MAX_BYTES`] (a restore trusts them for nothing more).
    ///
    /// # Errors
    /// Short input, wrong magic or version, non-zero reserved bytes, a checksum mismatch, an
    /// LSN out of range, or declared sizes that are impossible or too large.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let Some(bytes) = bytes.first_chunk::<SNAPSHOT_HEADER_BYTES>() else {
            return Err(FormatError::Truncated {
                needed: SNAPSHOT_HEADER_BYTES as u64,
                available: bytes.len() as u64,
            });
        };
        if bytes[0..8] != SNAPSHOT_MAGIC {
            return Err(FormatError::BadMagic);
        }
        let stored = LE::read_u32(&bytes[60..64]);
        let computed = crc32fast::hash(&bytes[..60]);
        if stored != computed {
            return Err(FormatError::ChecksumMismatch { stored, computed });
        }
        let version = LE::read_u16(&bytes[8..10]);
        if version != SNAPSHOT_VERSION {
            return Err(FormatError::UnsupportedVersion {
                found: version,
                supported: SNAPSHOT_VERSION,
            });
        }
        if bytes[10..12] != [0, 0] || bytes[56..60] != [0; 4] {
            return Err(FormatError::ReservedNotZero);
        }
        let lsn = LE::read_u64(&bytes[32..40]);
        if lsn > LSN_MAX {
            return Err(FormatError::LsnOutOfRange(lsn));
        }
        let key_count = LE::read_u64(&bytes[40..48]);
        let uncompressed_bytes = LE::read_u64(&bytes[48..56]);
        if uncompressed_bytes > SNAPSHOT_UNCOMPRESSED_MAX_BYTES {
            return Err(FormatError::LengthTooLarge {
                len: uncompressed_bytes,
                max: SNAPSHOT_UNCOMPRESSED_MAX_BYTES,
            });
        }
        // Every live key was put by a record at or before the snapshot's LSN.
        if key_count > lsn {
            return Err(FormatError::CountMismatch {
                declared: key_count,
                found: lsn,
            });
        }
        // Every entry takes at least its fixed bytes: a count the size cannot hold is a lie.
        if key_count > uncompressed_bytes / SNAPSHOT_ENTRY_FIXED_BYTES as u64 {
            return Err(FormatError::CountMismatch {
                declared: key_count,
                found: uncompressed_bytes / SNAPSHOT_ENTRY_FIXED_BYTES as u64,
            });
        }
        Ok(Self {
            cluster_id: LE::read_u128(&bytes[16..32]),
            lsn,
            epoch: LE::read_u32(&bytes[12..16]),
            key_count,
            uncompressed_bytes,
        })
    }
}

/// Appends one entry to a decompressed body.
///
/// # Panics
/// When the key or value exceeds the snapshot limits (the engine's own limits are lower or
/// equal, so a caller bug).
pub fn encode_entry(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    encode_entry_head(out, key, value.len());
    out.extend_from_slice(value);
}

/// Appends an entry's fixed bytes and key; its `value_len` bytes of value must follow.
///
/// # Panics
/// When the key or value exceeds the snapshot limits (a caller bug, as for [`encode_entry`]).
pub fn encode_entry_head(out: &mut Vec<u8>, key: &[u8], value_len: usize) {
    let key_len = u32::try_from(key.len())
        .ok()
        .filter(|&l| l <= SNAPSHOT_KEY_MAX_BYTES);
    let value_len = u32::try_from(value_len)
        .ok()
        .filter(|&l| l <= SNAPSHOT_VALUE_MAX_BYTES);
    let (Some(key_len), Some(value_len)) = (key_len, value_len) else {
        panic!("snapshot entry beyond the key or value limit");
    };
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(&value_len.to_le_bytes());
    out.extend_from_slice(key);
}

/// Decodes the entry at the start of `bytes`: `Ok(None)` when more bytes are needed (the
/// lengths are already checked against the limits then, so waiting for them is safe), else
/// the entry and the bytes it took.
///
/// # Errors
/// A key or value length beyond the limits.
pub fn decode_entry(bytes: &[u8]) -> Result<Option<(SnapshotEntry<'_>, usize)>, FormatError> {
    let Some((fixed, after_fixed)) = bytes.split_first_chunk::<SNAPSHOT_ENTRY_FIXED_BYTES>() else {
        return Ok(None);
    };
    let key_len = LE::read_u32(&fixed[0..4]);
    let value_len = LE::read_u32(&fixed[4..8]);
    if key_len > SNAPSHOT_KEY_MAX_BYTES {
        return Err(FormatError::LengthTooLarge {
            len: u64::from(key_len),
            max: u64::from(SNAPSHOT_KEY_MAX_BYTES),
        });
    }
    if value_len > SNAPSHOT_VALUE_MAX_BYTES {
        return Err(FormatError::LengthTooLarge {
            len: u64::from(value_len),
            max: u64::from(SNAPSHOT_VALUE_MAX_BYTES),
        });
    }
    let Some((key, after_key)) = after_fixed.split_at_checked(key_len as usize) else {
        return Ok(None);
    };
    let Some(value) = after_key.get(..value_len as usize) else {
        return Ok(None);
    };
    let end = SNAPSHOT_ENTRY_FIXED_BYTES + key.len() + value.len();
    Ok(Some((SnapshotEntry { key, value }, end)))
}

/// Checks a body's entries as they are decoded: keys strictly increasing, no more entries
/// or bytes than the header declared, and exactly as many at the end.
#[derive(Debug)]
pub struct EntryCheck {
    declared_count: u64,
    declared_bytes: u64,
    count: u64,
    bytes: u64,
    previous: Option<Vec<u8>>,
}

impl EntryCheck {
    /// A check against `header`'s declarations.
    #[must_use]
    pub fn new(header: &SnapshotHeader) -> Self {
        Self {
            declared_count: header.key_count,
            declared_bytes: header.uncompressed_bytes,
            count: 0,
            bytes: 0,
            previous: None,
        }
    }

    /// Accepts the next entry, `len` bytes long.
    ///
    /// # Errors
    /// A key not above the previous one, or more entries or bytes than declared.
    pub fn next(&mut self, entry: &SnapshotEntry<'_>, len: usize) -> Result<(), FormatError> {
        if self.previous.as_deref().is_some_and(|p| p >= entry.key) {
            return Err(FormatError::OutOfOrder);
        }
        self.count += 1;
        self.bytes += len as u64;
        if self.count > self.declared_count {
            return Err(FormatError::CountMismatch {
                declared: self.declared_count,
                found: self.count,
            });
        }
        if self.bytes > self.declared_bytes {
            return Err(FormatError::LengthTooLarge {
                len: self.bytes,
                max: self.declared_bytes,
            });
        }
        let previous = self.previous.get_or_insert_with(Vec::new);
        previous.clear();
        previous.extend_from_slice(entry.key);
        Ok(())
    }

    /// At the end of the body: everything declared was there.
    ///
    /// # Errors
    /// Fewer entries or bytes than declared.
    pub fn finish(&self) -> Result<(), FormatError> {
        if self.count != self.declared_count {
            return Err(FormatError::CountMismatch {
                declared: self.declared_count,
                found: self.count,
            });
        }
        if self.bytes != self.declared_bytes {
            return Err(FormatError::Truncated {
                needed: self.declared_bytes,
                available: self.bytes,
            });
        }
        Ok(())
    }
}

impl SnapshotTrailer {
    /// Encodes the trailer.
    #[must_use]
    pub fn encode(&self) -> [u8; SNAPSHOT_TRAILER_BYTES] {
        let mut out = [0u8; SNAPSHOT_TRAILER_BYTES];
        out[0..8].copy_from_slice(&SNAPSHOT_TRAILER_MAGIC);
        LE::write_u64(&mut out[8..16], self.body_bytes);
        LE::write_u32(&mut out[16..20], self.crc);
        out
    }

    /// Decodes a trailer (its CRC is checked by the reader against the bytes before it).
    ///
    /// # Errors
    /// Short input, wrong magic, non-zero reserved bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let Some(bytes) = bytes.first_chunk::<SNAPSHOT_TRAILER_BYTES>() else {
            return Err(FormatError::Truncated {
                needed: SNAPSHOT_TRAILER_BYTES as u64,
                available: bytes.len() as u64,
            });
        };
        if bytes[0..8] != SNAPSHOT_TRAILER_MAGIC {
            return Err(FormatError::BadMagic);
        }
        if bytes[20..24] != [0; 4] {
            return Err(FormatError::ReservedNotZero);
        }
        Ok(Self {
            body_bytes: LE::read_u64(&bytes[8..16]),
            crc: LE::read_u32(&bytes[16..20]),
        })
    }
}

#[cfg(test)]
#[expect(clippy::indexing_slicing, reason = "a panic in a test is a failure")]
mod tests {
    use super::*;

    fn header(key_count: u64, uncompressed_bytes: u64) -> SnapshotHeader {
        SnapshotHeader {
            cluster_id: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
            lsn: 42,
            epoch: 3,
            key_count,
            uncompressed_bytes,
        }
    }

    #[test]
    fn header_and_trailer_round_trip_and_every_bit_flip_of_the_header_is_caught() {
        let h = header(2, 30);
        let bytes = h.encode();
        assert_eq!(SnapshotHeader::decode(&bytes), Ok(h));
        for bit in 0..SNAPSHOT_HEADER_BYTES * 8 {
            let mut damaged = bytes;
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(SnapshotHeader::decode(&damaged).is_err(), "bit {bit}");
        }
        let t = SnapshotTrailer {
            body_bytes: 99,
            crc: 7,
        };
        assert_eq!(SnapshotTrailer::decode(&t.encode()), Ok(t));
        assert_eq!(
            SnapshotTrailer::decode(&[0; 23]),
            Err(FormatError::Truncated {
                needed: 24,
                available: 23
            })
        );
    }

    #[test]
    fn lying_sizes_are_refused_before_anything_is_trusted() {
        let too_big = header(1, SNAPSHOT_UNCOMPRESSED_MAX_BYTES + 1).encode();
        assert!(matches!(
            SnapshotHeader::decode(&too_big),
            Err(FormatError::LengthTooLarge { .. })
        ));
        let too_many = header(11, 80).encode();
        assert!(matches!(
            SnapshotHeader::decode(&too_many),
            Err(FormatError::CountMismatch { .. })
        ));
        // An entry declaring a huge value is refused from its first 8 bytes.
        let mut entry = Vec::new();
        entry.extend_from_slice(&1u32.to_le_bytes());
        entry.extend_from_slice(&(SNAPSHOT_VALUE_MAX_BYTES + 1).to_le_bytes());
        assert!(matches!(
            decode_entry(&entry),
            Err(FormatError::LengthTooLarge { .. })
        ));
    }

    #[test]
    fn entries_decode_in_order_and_the_check_holds_the_header_to_its_word() {
        let mut body = Vec::new();
        encode_entry(&mut body, b"a", b"1");
        encode_entry(&mut body, b"b", b"");
        let h = header(2, body.len() as u64);
        let mut check = EntryCheck::new(&h);
        let mut rest = &body[..];
        let mut keys = Vec::new();
        while let Some((entry, used)) = decode_entry(rest).unwrap() {
            check.next(&entry, used).unwrap();
            keys.push(entry.key.to_vec());
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
        check.finish().unwrap();
        assert_eq!(keys, [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(
            decode_entry(&body[..body.len() - 1]).unwrap().map(|e| e.1),
            Some(10)
        );

        // Out of order, more than declared, fewer than declared.
        let mut check = EntryCheck::new(&h);
        let b = SnapshotEntry {
            key: b"b",
            value: b"",
        };
        let a = SnapshotEntry {
            key: b"a",
            value: b"",
        };
        check.next(&b, 10).unwrap();
        assert_eq!(check.next(&a, 10), Err(FormatError::OutOfOrder));
        let mut check = EntryCheck::new(&header(1, 100));
        check.next(&a, 10).unwrap();
        assert!(check.next(&b, 10).is_err());
        assert!(EntryCheck::new(&header(1, 100)).finish().is_err());
    }
}
