//! Self-delimiting log records.
//!
//! ```text
//! [crc32: 4][len: 4][lsn: 8][epoch: 4][kind: 1][durable_lag: 4][payload: len]
//! ```
//! The CRC covers every byte after itself (header fields and payload) and is seeded with the
//! segment's salt. `durable_lag` is how far the log's durable LSN trailed this record's LSN when
//! it was encoded: recovery uses it to tell a torn, never-synced tail from damage to records that
//! were already durable.

use byteorder::{ByteOrder, LittleEndian as LE};

use super::{Epoch, FormatError, LSN_MAX, Lsn};

/// Bytes of a record before its payload.
pub const RECORD_HEADER_BYTES: usize = 25;
const _: () = assert!(RECORD_HEADER_BYTES == 4 + 4 + 8 + 4 + 1 + 4);

/// Largest payload the format allows; lengths are checked against it before any use.
pub const RECORD_PAYLOAD_MAX_BYTES: u32 = 1 << 30;

/// Flag in the kind byte: another record of the same atomic batch follows.
pub const BATCH_CONTINUES: u8 = 0x80;
/// Smallest valid kind value (0 is reserved so that zeroed bytes never decode).
pub const KIND_MIN: u8 = 1;
/// Largest valid kind value (the top bit is the batch flag).
pub const KIND_MAX: u8 = 0x7f;

/// What a record means to the layer above the log: a value in `KIND_MIN..=KIND_MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordKind(u8);

impl RecordKind {
    /// A kind from its raw value, or `None` when outside `KIND_MIN..=KIND_MAX`.
    #[must_use]
    pub const fn new(value: u8) -> Option<Self> {
        if value >= KIND_MIN && value <= KIND_MAX {
            Some(Self(value))
        } else {
            None
        }
    }

    /// The raw value.
    #[must_use]
    pub const fn get(self) -> u8 {
        self.0
    }
}

/// Everything in a record header but its length and checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    /// Sequence number of the record.
    pub lsn: Lsn,
    /// Epoch the record was written in.
    pub epoch: Epoch,
    /// Kind, without the batch flag.
    pub kind: RecordKind,
    /// Whether more records of the same atomic batch follow.
    pub batch_continues: bool,
    /// The log's durable LSN when the record was encoded (at most `lsn - 1`).
    pub durable_lsn: Lsn,
}

/// A record decoded in place: the payload borrows the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedRecord<'a> {
    /// Sequence number of the record.
    pub lsn: Lsn,
    /// Epoch the record was written in.
    pub epoch: Epoch,
    /// Kind, without the batch flag.
    pub kind: RecordKind,
    /// Whether more records of the same atomic batch follow.
    pub batch_continues: bool,
    /// The log's durable LSN when the record was encoded, as far as the record can tell
    /// (lags beyond `u32::MAX` LSNs are stored saturated, so this may be lower than it was).
    pub durable_lsn: Lsn,
    /// The payload bytes.
    pub payload: &'a [u8],
}

impl DecodedRecord<'_> {
    /// The header fields.
    #[must_use]
    pub fn meta(&self) -> RecordMeta {
        RecordMeta {
            lsn: self.lsn,
            epoch: self.epoch,
            kind: self.kind,
            batch_continues: self.batch_continues,
            durable_lsn: self.durable_lsn,
        }
    }

    /// Total encoded size: header plus payload.
    #[must_use]
    pub fn encoded_bytes(&self) -> usize {
        RECORD_HEADER_BYTES + self.payload.len()
    }
}

/// Size of a record with a payload of `payload_bytes`.
#[must_use]
pub const fn encoded_record_bytes(payload_bytes: usize) -> usize {
    RECORD_HEADER_BYTES + payload_bytes
}

/// Appends one encoded record to `out`.
///
/// # Panics
/// When the payload exceeds `RECORD_PAYLOAD_MAX_BYTES` or `meta.durable_lsn` is not below
/// `meta.lsn`; callers check both first.
pub fn encode_record(out: &mut Vec<u8>, salt: u32, meta: &RecordMeta, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("payload length checked by the caller");
    assert!(
        len <= RECORD_PAYLOAD_MAX_BYTES,
        "payload length checked by the caller"
    );
    assert!(
        meta.durable_lsn < meta.lsn,
        "a record cannot be durable before it is written"
    );
    assert!((1..=LSN_MAX).contains(&meta.lsn), "LSN out of range");
    let lag = u32::try_from(meta.lsn - meta.durable_lsn).unwrap_or(u32::MAX);
    let start = out.len();
    let mut header = [0u8; RECORD_HEADER_BYTES];
    LE::write_u32(&mut header[4..8], len);
    LE::write_u64(&mut header[8..16], meta.lsn);
    LE::write_u32(&mut header[16..20], meta.epoch);
    header[20] = meta.kind.get()
        | if meta.batch_continues {
            BATCH_CONTINUES
        } else {
            0
        };
    LE::write_u32(&mut header[21..25], lag);
    let mut crc = crc32fast::Hasher::new_with_initial(salt);
    crc.update(&header[4..]);
    crc.update(payload);
    LE::write_u32(&mut header[0..4], crc.finalize());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    debug_assert_eq!(out.len() - start, encoded_record_bytes(payload.len()));
}

/// Decodes the record at the start of `bytes`, verifying length bound and checksum.
///
/// # Errors
/// A truncated record, an oversized length, a checksum mismatch or an invalid kind.
pub fn decode_record(bytes: &[u8], salt: u32) -> Result<DecodedRecord<'_>, FormatError> {
    let header = bytes
        .first_chunk::<RECORD_HEADER_BYTES>()
        .ok_or(FormatError::Truncated {
            needed: RECORD_HEADER_BYTES as u64,
            available: bytes.len() as u64,
        })?;
    let len = LE::read_u32(&header[4..8]);
    if len > RECORD_PAYLOAD_MAX_BYTES {
        return Err(FormatError::LengthTooLarge {
            len: u64::from(len),
            max: u64::from(RECORD_PAYLOAD_MAX_BYTES),
        });
    }
    let total = RECORD_HEADER_BYTES as u64 + u64::from(len);
    let payload = usize::try_from(total)
        .ok()
        .and_then(|total| bytes.get(RECORD_HEADER_BYTES..total))
        .ok_or(FormatError::Truncated {
            needed: total,
            available: bytes.len() as u64,
        })?;
    let stored = LE::read_u32(&header[0..4]);
    let mut crc = crc32fast::Hasher::new_with_initial(salt);
    crc.update(&header[4..]);
    crc.update(payload);
    let computed = crc.finalize();
    if stored != computed {
        return Err(FormatError::ChecksumMismatch { stored, computed });
    }
    let kind_byte = header[20];
    let kind =
        RecordKind::new(kind_byte & !BATCH_CONTINUES).ok_or(FormatError::BadKind(kind_byte))?;
    let lsn = LE::read_u64(&header[8..16]);
    if !(1..=LSN_MAX).contains(&lsn) {
        return Err(FormatError::LsnOutOfRange(lsn));
    }
    let lag = LE::read_u32(&header[21..25]);
    if lag == 0 || u64::from(lag) > lsn {
        return Err(FormatError::BadDurableLag { lsn, lag });
    }
    Ok(DecodedRecord {
        lsn,
        epoch: LE::read_u32(&header[16..20]),
        kind,
        batch_continues: kind_byte & BATCH_CONTINUES != 0,
        durable_lsn: lsn - u64::from(lag),
        payload,
    })
}

#[cfg(test)]
#[expect(clippy::indexing_slicing, reason = "a panic in a test is a failure")]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta(lsn: Lsn) -> RecordMeta {
        RecordMeta {
            lsn,
            epoch: 1,
            kind: RecordKind::new(3).unwrap(),
            batch_continues: false,
            durable_lsn: lsn - 1,
        }
    }

    proptest! {
        #[test]
        fn records_round_trip(
            salt: u32, lsn in 1u64..=LSN_MAX, lag in 1u64..1_000_000, epoch: u32, kind in KIND_MIN..=KIND_MAX,
            cont: bool, payload in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let kind = RecordKind::new(kind).unwrap();
            let durable_lsn = lsn.saturating_sub(lag);
            let meta = RecordMeta { lsn, epoch, kind, batch_continues: cont, durable_lsn };
            let mut out = Vec::new();
            encode_record(&mut out, salt, &meta, &payload);
            let rec = decode_record(&out, salt).unwrap();
            prop_assert_eq!(rec, DecodedRecord { lsn, epoch, kind, batch_continues: cont, durable_lsn, payload: &payload });
            prop_assert_eq!(rec.meta(), meta);
            prop_assert_eq!(rec.encoded_bytes(), out.len());
        }

        #[test]
        fn any_single_flipped_bit_is_detected(
            salt: u32, lsn in 1u64..=LSN_MAX, payload in proptest::collection::vec(any::<u8>(), 0..256),
            bit_seed: usize,
        ) {
            let mut out = Vec::new();
            encode_record(&mut out, salt, &meta(lsn), &payload);
            let bit = bit_seed % (out.len() * 8);
            out[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_record(&out, salt).is_err());
        }

        #[test]
        fn a_different_salt_never_validates(salt: u32, other: u32, payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assume!(salt != other);
            let mut out = Vec::new();
            encode_record(&mut out, salt, &meta(9), &payload);
            prop_assert!(decode_record(&out, other).is_err());
        }
    }

    #[test]
    fn oversized_length_is_rejected_before_reading_the_payload() {
        let mut bytes = [0u8; RECORD_HEADER_BYTES];
        LE::write_u32(&mut bytes[4..8], RECORD_PAYLOAD_MAX_BYTES + 1);
        assert!(matches!(
            decode_record(&bytes, 0),
            Err(FormatError::LengthTooLarge { .. })
        ));
    }

    #[test]
    fn zeroed_bytes_never_decode() {
        for salt in [0, 1, 0xffff_ffff, 0x1234_5678] {
            assert!(decode_record(&[0u8; 64], salt).is_err());
        }
    }
}
